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

#: ``rhosr predict``'s default --max-voxels: tiles bound the activations, and the float32
#: input and output arrays take ~4.5 bytes per fine point (2.3 GB here).
PREDICT_MAX_VOXELS = 500_000_000


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


# ---------------------------------------------------------------- predict


def add_predict(sub) -> None:
    from rhosr.cli.common import STRUCTURE_HELP, Formatter, add_structure_options
    from rhosr.cli.physics import add_refine_options

    p = sub.add_parser(
        "predict", formatter_class=Formatter,
        help="predict the valence density of structures with a trained network",
        description="Build the published box, the SAD density on the coarse mesh, and run the "
                    "network: the valence density on the fine mesh (x2 per axis), normalised to "
                    "the valence electron count minus the charge. Boxes whose arrays exceed "
                    "--max-memory run in periodic tiles at origins aligned to the network's "
                    "stride, each with a halo of its receptive field: the same result as the "
                    "whole box (the bundled multi-scale network runs on the box padded to a "
                    "multiple of its stride, 4 coarse points, by periodic continuation).",
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
    p.add_argument("--html", action="store_true",
                   help="also write <id>.html beside the output: the 3D page of `rhosr view` "
                        "(density, rho - SAD and, with --reference, rho - rho_ref)")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="DFT density to compare with: a density file or store record (one input), "
                        "or a label store (the record of each input's id); adds the NMAE to the "
                        "summary and the reference and difference rows to --png")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="memory budget of the prediction (input, output and network activations), "
                        "GB; boxes that need more run in tiles, so the peak stays near GB plus "
                        "the ~0.4 GB of Python, torch and the model, as long as GB covers the "
                        "input and output arrays themselves (~4.5 bytes per fine point) "
                        "(default: 6 GB or half the free memory of the device, whichever is less)")
    p.add_argument("--refine", action="store_true",
                   help="write the density refined by Kohn-Sham iterations from the prediction "
                        "(PySCF at the labels' level of theory, Pulay mixing of densities, one SCF "
                        "cycle's cost or less per step; closed shells) until --tol or --max-steps")
    add_refine_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_structure_options(p, max_voxels=PREDICT_MAX_VOXELS)


def _refine(dens, mol, args):
    """The prediction refined towards the SCF (rhosr.dft.refine; imports PySCF)."""
    from rhosr.cli.physics import loose_precision, refine_budget
    from rhosr.dft.refine import refine, refined_density

    if mol.spin:
        raise InputError(f"{mol.id}: --refine needs a closed shell (spin 2S={mol.spin})")
    tol, steps = refine_budget(args)
    res = refine(dens.symbols, dens.positions, dens.grid, dens.values, charge=dens.charge,
                 smearing=args.smearing, tol=tol, max_steps=steps, mixing=args.mixing,
                 loose=loose_precision(args))
    return refined_density(dens, res)


def run_predict(args) -> int:
    from rhosr.cli.common import density_info, output_paths, reference_reader, sidecar
    from rhosr.core.sources import load_molecules
    from rhosr.inference.predict import predict_molecule, resolve_device, resolve_model, unseen_warning

    if args.max_memory is not None and not args.max_memory > 0:
        raise InputError(f"--max-memory must be > 0, got {args.max_memory}")
    mols = [m for spec in args.inputs for m in load_molecules(
        spec, charge=args.charge, spin=args.spin, max_voxels=args.max_voxels)]
    if args.reference is not None and len(mols) > 1 and not Path(args.reference).is_dir():
        raise InputError(f"--reference {args.reference}: a single file compares one input; give a "
                         f"label store to compare {len(mols)}")
    reference_of = reference_reader(args.reference, [m.id for m in mols])
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
                                    symmetrize=args.symmetrize, max_memory_gb=args.max_memory,
                                    progress=not args.no_progress)
            if args.refine:
                dens = _refine(dens, mol, args)
            reference = reference_of(mol.id)
            if reference is not None:
                dens.meta["reference_nmae_percent"] = 100 * _nmae(dens, reference, mol.id)
            dens.write(path, args.format)
            meta = dens.meta
            if args.format == "npy":
                extra = {k: meta[k] for k in ("model", "device", "symmetrized", "tile", "spread_percent",
                                              "reference_nmae_percent", "refined",
                                              "refine_converged", "refine_steps", "refine_residual",
                                              "energy_hartree")
                         if k in meta}
                sidecar(path, density_info(mol, dens.grid, dens.positions, meta["electrons"],
                                             meta["seconds"], kind="refined" if args.refine
                                             else "predicted", **extra))
            line = (f"{mol.id}: {mol.natm} atoms, fine mesh {'x'.join(map(str, dens.grid.mesh))}, "
                    f"{meta['electrons']:.4f} electrons, {meta['seconds']:.2f} s")
            if meta.get("tile") is not None:
                tile = meta["tile"] if isinstance(meta["tile"], list) else [meta["tile"]] * 3
                line += f", tiles of {'x'.join(map(str, tile))} coarse points"
            if "spread_percent" in meta:
                line += f", symmetry spread {meta['spread_percent']:.3f} %"
            if args.refine:
                state = ("converged" if meta["refine_converged"] else
                         "NOT converged, best iterate returned")
                line += (f", refined: {meta['refine_steps']} step(s), residual "
                         f"{100 * meta['refine_residual']:.3f} %, {state} ({meta['refine_seconds']:.2f} s "
                         f"per molecule, E {meta['energy_hartree']:.6f} Ha)")
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
            if args.html:
                from rhosr.viz.view import view_entry, view_page, write_page

                page = write_page(path.with_name(_stem(path) + ".html"),
                                  view_page([view_entry(dens, reference, title=mol.id)]))
                line += f", {page.name}"
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
                   help="PNG (one file) or directory (several); default <name>.png beside each file "
                        "(<name>.deformation.png with --deformation)")
    p.add_argument("--deformation", action="store_true",
                   help="instead of slices: the deformation density (density - SAD) in a plane "
                        "through the molecule, contour lines, atoms and bonds; with --reference "
                        "also reference - SAD and density - reference")
    p.add_argument("--atoms", nargs=3, type=int, default=None, metavar=("I", "J", "K"),
                   help="with --deformation: the plane through these three atoms, counted from 1 "
                        "as in the structure file (default: the best-fitting molecular plane)")


def _nmae(density, reference, what: str) -> float:
    from rhosr.viz.plot import check_reference

    check_reference(density, reference, what)
    return density.nmae(reference)


def run_plot(args) -> int:
    from rhosr.cli.common import density_id, output_paths, read_density_arg, reference_reader
    from rhosr.viz.plot import plot_density

    if args.atoms is not None and not args.deformation:
        raise InputError("--atoms chooses the plane of --deformation; add --deformation")
    densities = [read_density_arg(f) for f in args.files]
    ids = [density_id(f, d) for f, d in zip(args.files, densities)]
    reference_of = reference_reader(args.reference, ids)
    if args.deformation:  # every plane and fit checked before anything is written
        from rhosr.viz.deformation import plane_of
        from rhosr.viz.view import check_fits

        for f, dens in zip(args.files, densities):
            check_fits(dens, f)
            plane_of(dens.positions, None if args.atoms is None else [i - 1 for i in args.atoms])
    ext = "deformation.png" if args.deformation else "png"
    if args.output is None:
        paths = [Path(f).with_name(f"{_stem(Path(f))}.{ext}") for f in args.files]
    else:
        paths = output_paths([_stem(Path(f)) for f in args.files], args.output, ext)
    for f, dens, path, mol_id in zip(args.files, densities, paths, ids):
        reference = reference_of(mol_id)
        line = f"{f} -> {path}"
        if reference is not None:
            line += f" (NMAE {100 * _nmae(dens, reference, f):.3f} %)"
        if args.deformation:
            from rhosr.viz.deformation import plot_deformation

            atoms = None if args.atoms is None else [i - 1 for i in args.atoms]
            plot_deformation(dens, path, atoms=atoms, reference=reference, title=_stem(Path(f)))
        else:
            plot_density(dens, path, reference=reference, title=_stem(Path(f)))
        print(line)
    return 0
