"""The ``rhosr`` command: thin argument parsing over the library.

Every subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)``.
User errors (bad input, unreadable files) print one line on stderr and exit
with status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rhosr._version import __version__
from rhosr.cli.common import (  # noqa: F401 -- re-exported for older imports
    STRUCTURE_HELP,
    Formatter,
    add_structure_options,
    density_info,
    model_file,
    output_paths,
    sidecar,
)
from rhosr.errors import InputError

# ---------------------------------------------------------------- sad


def _add_sad(sub) -> None:
    p = sub.add_parser(
        "sad", formatter_class=Formatter,
        help="superposition of atomic densities (the network's input) on the published mesh",
        description="Write the SAD density of a structure: neutral GTH-PBE atoms in gth-szv, "
                    "summed over atoms and periodic images and normalised to the valence "
                    "electron count minus the charge, on the published box.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=STRUCTURE_HELP)
    p.add_argument("-o", "--output", help="output file (one molecule) or directory (several)")
    p.add_argument("--mesh", choices=("coarse", "fine"), default="coarse",
                   help="coarse: network input mesh (step ~0.314 bohr); fine: label mesh (x2)")
    p.add_argument("--format", choices=("npy", "cube", "h5"), default="cube", help="output format")
    p.add_argument("--variant", choices=("paper", "worsened"), default="paper",
                   help="'worsened' doubles every gth-szv exponent (the published harder input)")
    add_structure_options(p)


def _run_sad(args) -> int:
    from rhosr.core.density import Density
    from rhosr.core.grid import box_for
    from rhosr.core.sad import sad_density
    from rhosr.core.sources import load_molecules

    mols = [m for spec in args.inputs for m in load_molecules(
        spec, charge=args.charge, spin=args.spin, max_voxels=args.max_voxels)]
    paths = output_paths([m.id for m in mols], args.output, f"sad.{args.format}")
    for mol, path in zip(mols, paths):
        t0 = time.perf_counter()
        coarse, fine, pos = box_for(mol.positions)
        grid = coarse if args.mesh == "coarse" else fine
        rho = sad_density(mol.symbols, pos, grid, charge=mol.charge, variant=args.variant)
        seconds = time.perf_counter() - t0
        dens = Density(rho, grid, mol.symbols, pos, mol.charge,
                       {"comment": f"rhosr SAD ({args.variant}) density of {mol.id}, e/bohr^3, "
                                   f"periodic mesh, spacing L/n"})
        dens.write(path, args.format)
        if args.format == "npy":
            sidecar(path, density_info(mol, grid, pos, dens.electrons(), seconds,
                                         kind=f"sad-{args.variant}"))
        print(f"{mol.id}: {mol.natm} atoms, {args.mesh} mesh {'x'.join(map(str, grid.mesh))}, "
              f"{dens.electrons():.4f} electrons, {seconds * 1000:.0f} ms -> {path}")
    return 0


# ---------------------------------------------------------------- generate


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", formatter_class=Formatter,
        help="reference DFT labels (PySCF, published level of theory) into a store",
        description="Run periodic PBE/GTH/gth-tzv2p Kohn-Sham DFT for every molecule and store "
                    "its occupied orbitals (an orbital record; the density on the fine mesh is "
                    "evaluated from them when read). Re-running the same command skips finished "
                    "molecules; a killed run loses only the molecules in flight. Add the "
                    "finished records to the bank with `rhosr bank add`.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help=STRUCTURE_HELP)
    p.add_argument("--out", required=True, help="store directory (created if needed)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per core, at most 8; "
                        "on 2 cores 2 workers label 18%% faster than 1 worker with 2 threads)")
    p.add_argument("--threads", type=int, default=None,
                   help="PySCF threads per worker (default: cores / workers)")
    p.add_argument("--scheduler", default=None,
                   help="address of a running dask.distributed scheduler (e.g. tcp://host:8786)")
    p.add_argument("--smearing", type=float, default=None, help="Fermi smearing width, Hartree")
    p.add_argument("--limit", type=int, default=None,
                   help="label at most this many new molecules in this run")
    p.add_argument("--retry-failed", action="store_true", help="try molecules that failed before again")
    p.add_argument("--max-cycle", type=int, default=100, help="SCF iteration limit")
    p.add_argument("--guess", choices=("minao", "rhosr"), default=None,
                   help="SCF start: 'rhosr' (the bundled model's prediction refined by Kohn-Sham "
                        "steps until PySCF accepts it after one cycle; the same labels to the SCF "
                        "tolerance in less wall time; closed shells, local workers) or PySCF's "
                        "'minao' (default: rhosr, minao with --scheduler)")
    p.add_argument("--skip-in", nargs="+", default=[], metavar="BANK",
                   help="skip the molecules these banks (or stores) already hold: never relabel "
                        "(a folder that is not a bank yet skips nothing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every refinement step (stderr) and PySCF's SCF log (stdout) of "
                        "every molecule: for large molecules, whose labels take an hour")
    add_structure_options(p)


def generate_guess(args) -> str:
    """The SCF start of ``rhosr generate``: --guess, else 'rhosr' (measured faster per label,
    docs/benchmarks.md "Refinement to convergence"), or 'minao' with --scheduler (the
    predictor runs with local workers only)."""
    return args.guess or ("minao" if args.scheduler else "rhosr")


def _run_generate(args) -> int:
    from rhosr.dft.generate import generate
    from rhosr.labels.bank import is_bank, open_labels
    from rhosr.labels.store import META_NAME

    skip = set()
    for path in args.skip_in:
        if not Path(path).is_dir():
            raise InputError(f"--skip-in {path}: no such bank or store")
        if is_bank(path) or (Path(path) / META_NAME).is_file():
            skip.update(open_labels(path).ids())
        # else a folder where a bank is yet to start (its datasheet, structures): nothing to skip
    guess = generate_guess(args)
    if guess == "rhosr":
        from rhosr.inference.predict import density_predictor

        guess = density_predictor()
    summary = generate(
        args.sources, args.out, workers=args.workers, scheduler=args.scheduler,
        charge=args.charge, spin=args.spin, smearing=args.smearing, limit=args.limit,
        max_voxels=args.max_voxels, retry_failed=args.retry_failed, threads=args.threads,
        max_cycle=args.max_cycle, progress=not args.no_progress, skip=skip, guess=guess,
        verbose=args.verbose,
    )
    for line in summary.lines():
        print(line)
    return 0


# ---------------------------------------------------------------- export


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", formatter_class=Formatter,
        help="write store records as density files",
        description="Per record: <id>.dft.<ext> (DFT density, fine mesh), <id>.sad.<ext> "
                    "(SAD density, coarse mesh) and <id>.json (energy, charge, spin, meshes, "
                    "cell, convergence, timing).",
    )
    p.add_argument("store", metavar="STORE")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=("npy", "cube", "h5"), default="npy", help="density format")
    p.add_argument("--ids", nargs="+", default=None, help="only these record ids")


def _run_export(args) -> int:
    from rhosr.core.density import Density
    from rhosr.core.sad import sad_density
    from rhosr.labels.bank import open_labels

    store = open_labels(args.store)
    ids = args.ids if args.ids else store.ids()
    unknown = [i for i in ids if i not in store]
    if unknown:
        raise InputError(f"{args.store}: no record {unknown[0]!r}" +
                         (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for mol_id in ids:
        rec = store.read(mol_id)
        fine = rec.grid
        coarse = fine.coarsen()
        Density(rec.rho_dft, fine, rec.symbols, rec.positions, rec.charge).write(
            out / f"{mol_id}.dft.{args.format}", args.format)
        sad = sad_density(rec.symbols, rec.positions, coarse, charge=rec.charge)
        Density(sad, coarse, rec.symbols, rec.positions, rec.charge).write(
            out / f"{mol_id}.sad.{args.format}", args.format)
        info = {
            "id": mol_id, "source": rec.source, "energy_hartree": rec.energy,
            "charge": rec.charge, "spin": rec.spin,
            "fine_mesh": list(fine.mesh), "coarse_mesh": list(coarse.mesh),
            "cell_bohr": list(fine.cell), "converged": rec.converged,
            "scf_iterations": rec.scf_iterations, "seconds": rec.seconds,
            "atoms": [[s, *map(float, x)] for s, x in zip(rec.symbols, rec.positions)],
            "level_of_theory": rec.level_of_theory, "rhosr_version": rec.rhosr_version,
        }
        (out / f"{mol_id}.json").write_text(json.dumps(info, indent=1))
    print(f"exported {len(ids)} records to {out}")
    return 0


# ---------------------------------------------------------------- info


def _add_info(sub) -> None:
    p = sub.add_parser("info", formatter_class=Formatter,
                       help="summarise a store, a bank or a model file",
                       description="Print a summary table of a store or a bank (a directory: "
                                   "records, splits, elements, level of theory) or of a model "
                                   "file ('default' is the bundled one: preset, parameters, "
                                   "training data, best validation NMAE).")
    p.add_argument("path", metavar="STORE|BANK|MODEL_FILE")


def _run_info(args) -> int:
    from rhosr.errors import StoreError
    from rhosr.labels.bank import open_labels

    path = Path(args.path)
    if str(args.path) == "default" or path.is_file():
        for line in model_summary(model_file(args.path, "info")):
            print(line)
        return 0
    if not path.is_dir():
        raise StoreError(f"{path}: neither a rhosr store, a bank nor a model file")
    store = open_labels(path)
    for line in store_summary(store):
        print(line)
    return 0


def model_summary(path) -> list[str]:
    """Summary lines of a model file: preset, parameters, training data, best val NMAE."""
    from rhosr.nn.modelfile import read_model_file, seen_of
    from rhosr.nn.nets import build, count_parameters

    try:
        record = read_model_file(path)
        n_params = count_parameters(build(record["config"]), trainable_only=False)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    extra, versions = record["extra"], record["versions"]
    data = extra.get("training_data") or {}
    best = extra.get("best_val_nmae_percent")
    cfg = record["config"]
    rows = [
        ("model file", str(path)),
        ("preset", str(extra.get("preset") or "custom")),
        ("architecture", f"{cfg.get('arch')}, C={cfg.get('channels')}, N={cfg.get('blocks')}, "
                         f"K1={cfg.get('kernel_in')}, K2={cfg.get('kernel')}, norm={cfg.get('norm')}"),
        ("parameters", f"{n_params:,}"),
    ]
    if data:
        rng = data.get("id_range") or ["?", "?"]
        rows.append(("training data", f"{data.get('molecules')} molecules ({rng[0]} .. {rng[-1]}), "
                                      f"{data.get('val_molecules')} validation"))
    seen = seen_of(extra)
    if seen is not None:
        rows.append(("seen", f"elements {' '.join(seen['elements'])}; charges "
                             + " ".join(f"{c:+d}" if c else "0" for c in seen["charges"])))
    if "steps" in extra:
        rows.append(("training", f"{extra['steps']} steps, {float(extra.get('seconds', 0)) / 3600:.2f} h, "
                                 f"world size {extra.get('world_size', 1)}"))
    rows.append(("best validation NMAE", "-" if best is None else f"{best:.3f} %"))
    if extra.get("init"):
        rows.append(("fine-tuned from", str(extra["init"])))
    if versions:
        rows.append(("written by", f"rhosr {versions.get('rhosr', '?')}, torch {versions.get('torch', '?')}"))
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]


def store_summary(store) -> list[str]:
    import numpy as np

    from rhosr.core.splits import split_of_id

    ids = store.ids()
    failures = store.failures()
    recs = [store.read(i, density=False) for i in ids]
    lot = store.meta.get("level_of_theory", {})
    kind = "bank" if hasattr(store, "manifests") else "store"
    rows = [(kind, str(store.path)), ("records", str(len(ids))), ("failed", str(len(failures)))]
    if lot:
        desc = ", ".join(f"{k}={lot[k]}" for k in ("xc", "basis", "pseudo", "ke_cutoff_hartree", "conv_tol",
                                                     "smearing")
                         if k in lot)
        rows.append(("level of theory", desc))
    if recs:
        natm = np.array([len(r.symbols) for r in recs])
        pts = np.array([int(np.prod(r.fine_mesh)) for r in recs])
        secs = np.array([r.seconds for r in recs])
        iters = np.array([r.scf_iterations for r in recs])
        counts: dict[str, int] = {}
        for r in recs:
            for s in set(r.symbols):
                counts[s] = counts.get(s, 0) + 1
        splits: dict[str, int] = {}
        for r in recs:
            key = split_of_id(r.id) or "other"
            splits[key] = splits.get(key, 0) + 1
        charged = sum(1 for r in recs if r.charge)
        open_shell = sum(1 for r in recs if r.spin)
        rows += [
            ("atoms", f"{natm.min()}-{natm.max()} (mean {natm.mean():.1f})"),
            ("fine mesh points", f"{pts.min():,}-{pts.max():,} (mean {pts.mean():,.0f})"),
            ("elements (records)", " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))),
            ("splits", " ".join(f"{k}:{v}" for k, v in sorted(splits.items()))),
            ("charged / open-shell", f"{charged} / {open_shell}"),
            ("seconds per molecule", f"mean {secs.mean():.1f}, max {secs.max():.1f}"),
            ("SCF iterations", f"mean {iters.mean():.1f}, max {iters.max()}"),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for mol_id, info in list(failures.items())[:20]:
        lines.append(f"{'failed ' + mol_id:<{width}}  {info.get('reason', '')}")
    if len(failures) > 20:
        lines.append(f"... and {len(failures) - 20} more failures")
    return lines


# ---------------------------------------------------------------- main


from rhosr.cli.bank import add_bank, run_bank  # noqa: E402
from rhosr.cli.physics import add_energy, add_scf, run_energy, run_scf  # noqa: E402
from rhosr.cli.predict import add_plot, add_predict, run_plot, run_predict  # noqa: E402
from rhosr.cli.train import add_evaluate, add_train, run_evaluate, run_train  # noqa: E402
from rhosr.cli.view import add_view, run_view  # noqa: E402

COMMANDS = {
    "predict": (add_predict, run_predict),
    "plot": (add_plot, run_plot),
    "view": (add_view, run_view),
    "sad": (_add_sad, _run_sad),
    "generate": (_add_generate, _run_generate),
    "export": (_add_export, _run_export),
    "info": (_add_info, _run_info),
    "train": (add_train, run_train),
    "evaluate": (add_evaluate, run_evaluate),
    "bank": (add_bank, run_bank),
    "energy": (add_energy, run_energy),
    "scf": (add_scf, run_scf),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rhosr", formatter_class=Formatter,
        description="Electron densities at DFT quality from a molecular structure: a 3D "
                    "super-resolution network turns a superposition of atomic densities on a "
                    "coarse mesh into the Kohn-Sham density on a mesh twice as fine.",
    )
    parser.add_argument("--version", action="version", version=f"rhosr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error)."""
    from rhosr.errors import StoreError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (InputError, StoreError) as err:
        print(f"rhosr {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rhosr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`rhosr info ... | head`): stop quietly
        _silence_stdout()
        return 141  # what a shell reports for SIGPIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the final flush does not fail again."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass


def _one_line(err) -> str:
    return " ".join(str(err).split())
