"""The ``rhosr view`` subcommand: one self-contained HTML page of densities in 3D.

Registered in :data:`rhosr.cli.main.COMMANDS` as ``"view": (add_view, run_view)``; the
libraries are imported inside :func:`run_view` so that ``rhosr --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from rhosr.errors import InputError

#: Inputs with these endings are density files; everything else is a structure.
DENSITY_ENDINGS = (".cube", ".cub", ".npy", ".h5", ".hdf5")


def add_view(sub) -> None:
    from rhosr.cli.common import STRUCTURE_HELP, Formatter, add_structure_options

    p = sub.add_parser(
        "view", formatter_class=Formatter,
        help="one self-contained HTML page: atoms and isosurfaces of the density, the deformation "
             "density and the error, turning under the mouse (offline)",
        description="Write one HTML file that opens in any browser without a network or a server "
                    "(3Dmol.js inlined): the atoms as balls and sticks and isosurfaces of the "
                    "density (slider for the isovalue), of the deformation density rho - SAD "
                    "(gain and loss) and, with --reference, of rho - rho_ref with the NMAE in the "
                    "title; buttons switch between them, and several inputs share one page with a "
                    "selector. Structures are predicted with the model; density files are shown "
                    "as they are. The fields travel on the coarse mesh (every second point of the "
                    "fine mesh) as float16: 0.6-0.75 MB for a QM9 molecule, 2.6 MB for a 206-atom "
                    "protein pocket.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT|DENSITY",
                   help=STRUCTURE_HELP + "; or a density file (cube, npy + json, h5; a store "
                        "record) written by rhosr")
    p.add_argument("-o", "--output", default=None, metavar="FILE.html",
                   help="the page (default: <id>.html for one molecule, view.html for several)")
    p.add_argument("--reference", default=None, metavar="REF",
                   help="DFT density to compare with: a density file or store record (one input), "
                        "or a label store or bank (the record of each input's id); adds the "
                        "surfaces of rho - rho_ref and the NMAE")
    p.add_argument("--isovalue", type=float, default=0.05, metavar="E_PER_BOHR3",
                   help="isovalue of the density surface when the page opens")
    p.add_argument("--mesh", choices=("coarse", "fine"), default="coarse",
                   help="mesh of the fields in the page: coarse (every second point, 8x smaller "
                        "page) or fine")
    p.add_argument("--model", default="default", help="'default' (bundled) or a model file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA if available")
    add_structure_options(p)


def _inputs(args) -> list[tuple]:
    """(id, title, what: the name in messages, density or None, molecule or None) of every
    input, in order."""
    from rhosr.cli.common import density_id, read_density_arg
    from rhosr.core.sources import load_molecules

    items = []
    for spec in args.inputs:
        if str(spec).lower().endswith(DENSITY_ENDINGS):
            dens = read_density_arg(spec)
            items.append((density_id(spec, dens), density_id(spec, dens), spec, dens, None))
        else:
            for mol in load_molecules(spec, charge=args.charge, spin=args.spin,
                                      max_voxels=args.max_voxels):
                items.append((mol.id, _title(mol), _title(mol), None, mol))
    if not items:
        raise InputError(f"{' '.join(args.inputs)}: selects no molecule; nothing to show")
    return items


def _title(mol) -> str:
    """How a molecule is named in the page: its id (the SMILES for smiles:), its charge."""
    title = mol.source if str(mol.source).startswith("smiles:") else mol.id
    return title + (f" (charge {mol.charge:+d})" if mol.charge else "")


def run_view(args) -> int:
    from rhosr.cli.common import reference_reader
    from rhosr.viz.view import (
        check_fits,
        check_isovalue,
        check_writable,
        view_entry,
        view_page,
        write_page,
    )

    items = _inputs(args)
    ids = [i[0] for i in items]
    path = Path(args.output) if args.output else Path(f"{ids[0]}.html" if len(ids) == 1 else "view.html")
    check_writable(path)
    check_isovalue(args.isovalue)
    if args.reference is not None and len(items) > 1 and not Path(args.reference).is_dir():
        raise InputError(f"--reference {args.reference}: a single file compares one input; give a "
                         f"label store to compare {len(items)}")
    reference_of = reference_reader(args.reference, ids)
    for *_, what, dens, _ in items:
        if dens is not None:
            check_fits(dens, what)
    net = None
    if any(mol is not None for *_, mol in items):
        from rhosr.inference.predict import predict_molecule, resolve_device, resolve_model

        device = resolve_device(args.device)
        net, name = resolve_model(args.model, device)
    entries = []
    for mol_id, title, what, dens, mol in items:
        line = f"{what}: "
        if mol is not None:
            dens = predict_molecule(mol, net, model_name=name, device=device)
            line += f"predicted ({dens.meta['seconds']:.2f} s), "
        entry = view_entry(dens, reference_of(mol_id), title=title, mesh=args.mesh, what=what)
        entries.append(entry)
        line += f"{len(dens.symbols)} atoms, mesh {'x'.join(map(str, entry['grid']['size']))} in the page"
        if entry["nmae_percent"] is not None:
            line += f", NMAE {entry['nmae_percent']:.3f} % vs reference"
        print(line)
    page = view_page(entries, isovalue=args.isovalue)
    write_page(path, page)
    print(f"-> {path} ({path.stat().st_size / 1e6:.2f} MB, {len(entries)} molecule"
          f"{'s' if len(entries) > 1 else ''})")
    return 0
