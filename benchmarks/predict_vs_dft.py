"""Wall time of ``rhosr predict`` against the PySCF SCF it replaces, in one run.

For each molecule (default: 5 QM9 test-split molecules, ``qm9:test/5``):

* predict: SAD on both meshes + network + normalisation + writing the cube
  file, through the Python API with the model already loaded (what a loop over
  many molecules pays), and once through the ``rhosr predict`` command
  (interpreter start, imports and model loading included);
* DFT: the reference Kohn–Sham calculation at the published level of theory
  (:func:`rhosr.dft.scf.run_dft`: SCF plus the density on the fine mesh).

Both run on the same machine with the same number of threads, one after the
other, and the script prints the ratio DFT / predict per molecule and overall.
"write s" is the part of "predict s" spent writing the cube file.  Several
``--model`` values are timed one after the other against the same DFT runs.
Each model first predicts the first molecule once untimed (warm-up); the API
time is the fastest of ``--repeat`` predictions (default 3), the CLI and DFT
times are single runs.

    PYTHONPATH=src python benchmarks/predict_vs_dft.py [--model default|PATH...] [--specs qm9:test/5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.density import nmae  # noqa: E402
from rhosr.core.grid import box_for  # noqa: E402
from rhosr.core.sources import load_molecules  # noqa: E402
from rhosr.dft.scf import run_dft  # noqa: E402
from rhosr.inference.predict import predict_molecule, resolve_model  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="+", default=["qm9:test/5"], help="structures")
    ap.add_argument("--model", nargs="+", default=["default"],
                    help="default and/or model files; several are timed side by side against "
                         "the same DFT runs")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and PySCF")
    ap.add_argument("--repeat", type=int, default=3,
                    help="API predictions per molecule and model; the fastest is reported")
    args = ap.parse_args(argv)
    import torch

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    mols = [m for spec in args.specs for m in load_molecules(spec)]
    nets = [(spec, resolve_model(spec, torch.device("cpu"))[0],
             spec if spec == "default" else "/".join(Path(spec).parts[-2:]))
            for spec in args.model]
    print(f"{len(mols)} molecules, model(s) {', '.join(n for _, _, n in nets)}, {threads} threads, "
          f"torch {torch.__version__}")
    w = max(12, *(len(n) for _, _, n in nets))  # model column: whole names
    print(f"{'molecule':<12} {'model':<{w}} {'atoms':>5} {'fine mesh':>14} {'predict s':>10} "
          f"{'write s':>8} {'CLI s':>7} {'DFT s':>8} {'SCF cyc':>7} {'NMAE %':>7} "
          f"{'DFT/predict':>11} {'DFT/CLI':>8}")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    tot = [[0.0, 0.0, 0.0] for _ in nets]  # per model: predict, write, CLI
    tot_d = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for _, net, name in nets:  # untimed warm-up: first-call allocations and thread start
            predict_molecule(mols[0], net, model_name=name)
        for mol in mols:
            rows = []
            for k, (spec, net, name) in enumerate(nets):
                t_pred = t_write = float("inf")
                for _ in range(max(1, args.repeat)):
                    t0 = time.perf_counter()
                    dens = predict_molecule(mol, net, model_name=name)
                    t1 = time.perf_counter()
                    dens.write(Path(tmp) / f"{mol.id}.{k}.cube")
                    t2 = time.perf_counter()
                    if t2 - t0 < t_pred:
                        t_pred, t_write = t2 - t0, t2 - t1
                cmd = [sys.executable, "-m", "rhosr", "predict",
                       mol.source if mol.source else mol.id, "--model", str(spec),
                       "-o", str(Path(tmp) / f"{mol.id}.{k}.cli.cube")]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                t_cli = time.perf_counter() - t0
                rows.append((k, name, dens, t_pred, t_write, t_cli))

            _, fine, pos = box_for(mol.positions)
            t0 = time.perf_counter()
            res = run_dft(mol.symbols, pos, fine, charge=mol.charge, spin=mol.spin, threads=threads)
            t_dft = time.perf_counter() - t0
            tot_d += t_dft
            for k, name, dens, t_pred, t_write, t_cli in rows:
                err = 100.0 * nmae(dens.values, res.density)
                for i, t in enumerate((t_pred, t_write, t_cli)):
                    tot[k][i] += t
                print(f"{mol.id:<12} {name:<{w}} {len(mol.symbols):>5} "
                      f"{'x'.join(map(str, fine.mesh)):>14} {t_pred:>10.3f} {t_write:>8.3f} "
                      f"{t_cli:>7.2f} {t_dft:>8.2f} {res.iterations:>7} {err:>7.3f} "
                      f"{t_dft / t_pred:>11.0f} {t_dft / t_cli:>8.1f}", flush=True)
    for (_, _, name), (t_pred, t_write, t_cli) in zip(nets, tot):
        print(f"{'total':<12} {name:<{w}} {'':>5} {'':>14} {t_pred:>10.3f} {t_write:>8.3f} "
              f"{t_cli:>7.2f} {tot_d:>8.2f} {'':>7} {'':>7} {tot_d / t_pred:>11.0f} "
              f"{tot_d / t_cli:>8.1f}")


if __name__ == "__main__":
    main()
