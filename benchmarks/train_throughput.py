"""Training throughput per model preset on a QM9-sized whole box.

For each preset, run the real training loop (:func:`rhosr.training.run.train`, batch
1, whole periodic box, augmentation on) for a few steps on one molecule whose
target is its own SAD (a stand-in: the cost does not depend on the values),
and print molecules/s and fine voxels/s measured in this run.  The first step
(SAD computation, allocator warm-up) is left out when there are two or more.

    PYTHONPATH=src python benchmarks/train_throughput.py
    PYTHONPATH=src python benchmarks/train_throughput.py --presets tiny sr --steps 5
    PYTHONPATH=src python benchmarks/train_throughput.py --device cuda --steps 20
    PYTHONPATH=src python benchmarks/train_throughput.py --presets sr-narrow --steps 8 \
        --variants plain pytorch-pad bf16

``--variants``: ``plain`` (the code as it is), ``pytorch-pad`` (PyTorch's own circular
padding instead of :func:`rhosr.nn.layers.circular_pad`, whose backward is faster),
``bf16`` (``precision="bf16"``).  The variants of a preset run in one process, in turn,
``--repeat`` times each (the fastest of the repeats is printed), so their ratios compare.

The default molecule, qm9:2009 (15 atoms), has a fine mesh of 106 x 96 x 98
(~1.0 M points), typical of QM9.  ``paper`` is slow on a CPU (minutes per
step): it runs ``--paper-steps`` steps (default 1).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import rhosr.nn.layers as model_module
from rhosr.core.grid import Grid, box_for
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.labels.store import Record, Store
from rhosr.nn.device import resolve_device
from rhosr.nn.nets import build, count_parameters
from rhosr.training.run import train

PRESETS = ("tiny", "sr", "sr-narrow", "sr-wide", "sr-deep", "unet", "sr-elements", "sr-fine",
           "paper")
VARIANTS = ("plain", "pytorch-pad", "bf16")


def _pytorch_pad(x, pads):
    return torch.nn.functional.pad(x, tuple(int(p) for p in pads), mode="circular")


def make_store(path: Path, spec: str, coarse_mesh=None) -> tuple[Store, Grid]:
    mol = load_molecule(spec)
    _, fine, pos = box_for(mol.positions)
    if coarse_mesh:
        fine = Grid(fine.cell, tuple(2 * int(n) for n in coarse_mesh))
    rho = sad_density(mol.symbols, pos, fine, charge=mol.charge).astype(np.float32)
    st = Store(path, "a")
    st.write(Record("bench", mol.symbols, pos, np.asarray(fine.cell), fine.mesh, mol.charge,
                    mol.spin, spec, rho))
    return st, fine


def measure(store, grid: Grid, preset: str, steps: int, device: str, workdir: Path,
            variant: str = "plain") -> dict:
    run = workdir / f"run-{preset}-{variant}"
    fast_pad = model_module.circular_pad
    if variant == "pytorch-pad":
        model_module.circular_pad = _pytorch_pad
    t0 = time.perf_counter()
    try:
        train(store, run, preset=preset, steps=steps, batch=1, val_fraction=0.0,
              val_every=10**9, device=device, progress=False, workers=0,
              precision="bf16" if variant == "bf16" else "auto")
    finally:
        model_module.circular_pad = fast_pad
    wall = time.perf_counter() - t0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    secs = [float(r["seconds"]) for r in rows]
    if len(secs) >= 2:
        n, dt = len(secs) - 1, secs[-1] - secs[0]
    else:
        n, dt = 1, secs[0]
    return {
        "preset": preset, "variant": variant, "parameters": count_parameters(build(preset)),
        "steps": len(rows),
        "molecules_per_s": n / dt, "voxels_per_s": n * grid.size / dt,
        "seconds_per_step": dt / n, "wall_s": wall,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--steps", type=int, default=3, help="steps per preset (first one not timed)")
    ap.add_argument("--paper-steps", type=int, default=1, help="steps for the paper preset")
    ap.add_argument("--molecule", default="qm9:2009", help="structure (rhosr.load_molecule spec)")
    ap.add_argument("--coarse-mesh", type=int, nargs=3, default=None,
                    help="override the coarse mesh (same cell), e.g. for a quick check")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--variants", nargs="+", default=["plain"], choices=VARIANTS)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each variant, in turn")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store, grid = make_store(tmp / "store", args.molecule, args.coarse_mesh)
        print(f"# {args.molecule}: fine mesh {'x'.join(map(str, grid.mesh))} "
              f"({grid.size:,} points), device {device}, torch threads {torch.get_num_threads()}, "
              f"batch 1, whole box")
        print(f"{'preset':<11} {'variant':<11} {'params':>10} {'steps':>5} {'s/step':>9} "
              f"{'molecules/s':>12} {'fine voxels/s':>14}")
        for preset in args.presets:
            steps = args.paper_steps if preset == "paper" else args.steps
            best = {}
            for k in range(args.repeat):
                for variant in args.variants:
                    r = measure(store, grid, preset, steps, str(device), tmp / str(k), variant)
                    old = best.get(variant)
                    if old is None or r["seconds_per_step"] < old["seconds_per_step"]:
                        best[variant] = r
            for r in best.values():
                print(f"{r['preset']:<11} {r['variant']:<11} {r['parameters']:>10,} {r['steps']:>5} "
                      f"{r['seconds_per_step']:>9.3f} {r['molecules_per_s']:>12.4f} "
                      f"{r['voxels_per_s']:>14.3e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
