"""The ``rhosr predict`` and ``rhosr plot`` subcommands.

Registered in :data:`rhosr.cli.main.COMMANDS` as ``"predict": (add_predict,
run_predict)`` and ``"plot": (add_plot, run_plot)``; ``python -m
rhosr.cli.predict predict ...`` runs them without the main command.
The helpers of :mod:`rhosr.cli.main` are imported inside the functions so that
either module may be imported first.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rhosr.errors import InputError


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


# ---------------------------------------------------------------- predict


def add_predict(sub) -> None:
    from rhosr.cli.common import STRUCTURE_HELP, Formatter, add_structure_options
    from rhosr.cli.physics import add_step_options

    p = sub.add_parser(
        "predict", formatter_class=Formatter,
        help="predict the valence density of structures with a trained network",
        description="Build the published box, the SAD density on the coarse mesh, and run the "
                    "network: the valence density on the fine mesh (x2 per axis), normalised to "
                    "the valence electron count minus the charge. Boxes larger than the memory "
                    "budget run in periodic tiles with a halo of the receptive field (identical "
                    "result for local models).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=STRUCTURE_HELP)
    p.add_argument("-o", "--output", help="output file (one molecule) or directory (several); "
                                          "default <id>.<format> in the current directory")
    p.add_argument("--format", choices=("cube", "npy", "h5"), default="cube",
                   help="output format (npy also writes <id>.json with cell, mesh, atoms, ...)")
    p.add_argument("--model", default="default", help="'default' (bundled) or a model file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA if available")
    p.add_argument("--symmetrize", action="store_true",
                   help="average over the 48 cube symmetries (48x slower); reports the spread")
    p.add_argument("--png", action="store_true", help="also write <id>.png (slices) beside the output")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="DFT density to compare with: a density file or store record (one input), "
                        "or a label store (the record of each input's id); adds the NMAE to the "
                        "summary and the reference and difference rows to --png")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="activation memory budget; larger boxes run in tiles "
                        "(default: half the free memory of the device)")
    p.add_argument("--refine", action="store_true",
                   help="write the density after Kohn-Sham steps on the prediction (PySCF, the "
                        "labels' level of theory; closed shells; about one SCF cycle per step)")
    add_step_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_structure_options(p)


def _refine(dens, mol, steps, mixing):
    """The prediction after Kohn–Sham steps (rhosr.dft.physics; imports PySCF)."""
    from rhosr.dft.physics import refined, step_density

    if mol.spin:
        raise InputError(f"{mol.id}: --refine needs a closed shell (spin 2S={mol.spin})")
    return refined(dens, step_density(dens, steps=steps, mixing=mixing))


def run_predict(args) -> int:
    from rhosr.cli.common import density_info, output_paths, sidecar
    from rhosr.core.sources import load_molecules
    from rhosr.inference.predict import predict_molecule, resolve_device, resolve_model, unseen_warning

    if args.max_memory is not None and not args.max_memory > 0:
        raise InputError(f"--max-memory must be > 0, got {args.max_memory}")
    mols = [m for spec in args.inputs for m in load_molecules(
        spec, charge=args.charge, spin=args.spin, max_voxels=args.max_voxels)]
    if args.reference is not None and len(mols) > 1 and not Path(args.reference).is_dir():
        raise InputError(f"--reference {args.reference}: a single file compares one input; give a "
                         f"label store to compare {len(mols)}")
    reference_of = _reference_reader(args.reference, [m.id for m in mols])
    device = resolve_device(args.device)
    net, name = resolve_model(args.model, device)
    paths = output_paths([m.id for m in mols], args.output, args.format)
    bar = None
    if len(mols) > 1 and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(mols), unit="mol", file=sys.stderr, dynamic_ncols=True)
    say = bar.write if bar is not None else print
    try:
        for mol, path in zip(mols, paths):
            dens = predict_molecule(mol, net, model_name=name, device=device,
                                    symmetrize=args.symmetrize, max_memory_gb=args.max_memory)
            if args.refine:
                dens = _refine(dens, mol, args.steps, args.mixing)
            reference = reference_of(mol.id)
            if reference is not None:
                dens.meta["reference_nmae_percent"] = 100 * _nmae(dens, reference, mol.id)
            dens.write(path, args.format)
            meta = dens.meta
            if args.format == "npy":
                extra = {k: meta[k] for k in ("model", "device", "symmetrized", "tile", "spread_percent",
                                              "reference_nmae_percent", "refined",
                                              "energy_harris_hartree", "energy_ks_hartree")
                         if k in meta}
                sidecar(path, density_info(mol, dens.grid, dens.positions, meta["electrons"],
                                             meta["seconds"], kind="refined" if args.refine
                                             else "predicted", **extra))
            line = (f"{mol.id}: {mol.natm} atoms, fine mesh {'x'.join(map(str, dens.grid.mesh))}, "
                    f"{meta['electrons']:.4f} electrons, {meta['seconds']:.2f} s")
            if "spread_percent" in meta:
                line += f", symmetry spread {meta['spread_percent']:.3f} %"
            if args.refine:
                line += (f", refined by {args.steps} Kohn-Sham step(s), mixing {args.mixing:g} "
                         f"({meta['refine_seconds']:.2f} s, E_Harris "
                         f"{meta['energy_harris_hartree']:.6f} Ha)")
            if reference is not None:
                line += f", NMAE {meta['reference_nmae_percent']:.3f} % vs reference"
            if meta.get("unseen"):
                line += "; " + unseen_warning(meta["unseen"])
            if args.png:
                from rhosr.viz.plot import plot_density

                png = plot_density(dens, path.with_name(_stem(path) + ".png"), reference=reference)
                line += f" -> {path}, {png.name}"
            else:
                line += f" -> {path}"
            say(line)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return 0


# ---------------------------------------------------------------- plot


def add_plot(sub) -> None:
    from rhosr.cli.common import Formatter

    p = sub.add_parser(
        "plot", formatter_class=Formatter,
        help="PNG of density slices (and the difference to a reference)",
        description="Three orthogonal slices through the centre of the atoms, square-root colour "
                    "scale in e/bohr^3; with --reference also the reference and the difference.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="density file (cube, npy + json, h5)")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="reference on the same mesh: a density file or store record, or a label "
                        "store (the record named by each FILE's id)")
    p.add_argument("-o", "--output", default=None,
                   help="PNG (one file) or directory (several); default <name>.png beside each file")


def _read(path: str):
    from rhosr.core.density import read_density

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        return read_density(path)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read a density ({' '.join(str(exc).split())})") from None


def _id(path: str, density) -> str:
    """The molecule id of a density file: its metadata, else the file name."""
    return str(density.meta.get("id") or _stem(Path(path)))


def _reference_reader(spec: str | None, ids: list[str]):
    """Check ``--reference`` against the molecule ids before any work; return a function
    id -> reference Density (None without a reference), which reads a store's record only
    when asked, so that many inputs do not hold all their references at once."""
    if spec is None:
        return lambda mol_id: None
    if not Path(spec).is_dir():
        ref = _read(spec)
        return lambda mol_id: ref
    from rhosr.core.density import record_density
    from rhosr.errors import StoreError
    from rhosr.labels.bank import open_labels

    try:
        store = open_labels(spec)
    except StoreError as exc:
        raise InputError(f"--reference: {exc}") from None

    def read(mol_id: str, density: bool = True):
        if mol_id not in store:
            raise InputError(f"--reference {spec}: no record of {mol_id} in this store")
        try:
            return store.read(mol_id, density)
        except (ValueError, OSError) as exc:
            raise InputError(f"--reference {spec}: {' '.join(str(exc).split())}") from None

    for mol_id in ids:  # every record there and readable (without its density) before any work
        read(mol_id, density=False)
    return lambda mol_id: record_density(read(mol_id))


def _nmae(density, reference, what: str) -> float:
    from rhosr.viz.plot import check_reference

    check_reference(density, reference, what)
    return density.nmae(reference)


def run_plot(args) -> int:
    from rhosr.cli.common import output_paths
    from rhosr.viz.plot import plot_density

    densities = [_read(f) for f in args.files]
    ids = [_id(f, d) for f, d in zip(args.files, densities)]
    reference_of = _reference_reader(args.reference, ids)
    if args.output is None:
        paths = [Path(f).with_name(_stem(Path(f)) + ".png") for f in args.files]
    else:
        paths = output_paths([_stem(Path(f)) for f in args.files], args.output, "png")
    for f, dens, path, mol_id in zip(args.files, densities, paths, ids):
        reference = reference_of(mol_id)
        line = f"{f} -> {path}"
        if reference is not None:
            line += f" (NMAE {100 * _nmae(dens, reference, f):.3f} %)"
        plot_density(dens, path, reference=reference, title=_stem(Path(f)))
        print(line)
    return 0
