"""Helpers shared by the ``rhosr`` subcommand modules (formatter, structure
options, output paths, sidecars, density files and references).  It imports no subcommand module, so
``cli.py`` and the ``cli_*`` modules depend on it and never on each other."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rhosr.core.molecule import DEFAULT_MAX_VOXELS

STRUCTURE_HELP = (
    "structure: a file ASE reads (xyz, extxyz, pdb, sdf, cif, ...; every frame), "
    "smiles:<SMILES>, qm9:<index>, qm9:<first>-<last>, or qm9:<split>/<count> "
    "(seeded random sample of the train, val or test split)"
)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults in --help, except empty ones (None, False)."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def add_structure_options(p: argparse.ArgumentParser, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    p.add_argument("--charge", type=int, default=None,
                   help="net charge of every molecule (default: 0, or the file's)")
    p.add_argument("--spin", type=int, default=None,
                   help="2S, unpaired electrons (default: lowest consistent with the electron count)")
    p.add_argument("--max-voxels", type=int, default=max_voxels,
                   help="refuse boxes whose fine mesh has more points than this")


def output_paths(ids, out, ext: str, default_dir: str = ".") -> list[Path]:
    """One input: OUT is the file; several: OUT is a directory of <id>.<ext>."""
    if len(ids) == 1 and out is not None and not Path(out).is_dir():
        return [Path(out)]
    folder = Path(out if out is not None else default_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return [folder / f"{i}.{ext}" for i in ids]


def sidecar(path: Path, info: dict) -> Path:
    """Write ``info`` as JSON beside a density file: a.sad.npy -> a.json."""
    side = path.with_name(path.name.split(".")[0] + ".json")
    side.write_text(json.dumps(info, indent=1))
    return side


def density_info(mol, grid, positions, electrons, seconds, **extra) -> dict:
    """The JSON written beside a bare .npy density (positions in bohr, in the box)."""
    return {
        "id": mol.id, "cell_bohr": list(grid.cell), "mesh": list(grid.mesh),
        "atoms": [[s, *map(float, x)] for s, x in zip(mol.symbols, positions)],
        "charge": mol.charge, "spin": mol.spin, "electrons": electrons, "seconds": seconds, **extra,
    }


def model_file(arg: str, option: str) -> str:
    """A model option's value as a file path: 'default' is the bundled model."""
    from rhosr.errors import InputError

    if str(arg) == "default":
        from rhosr.inference.predict import default_model_path

        return str(default_model_path())
    if not Path(arg).is_file():
        raise InputError(f"{option} {arg}: no such file (or 'default', the bundled model)")
    return str(arg)


def read_density_arg(path: str):
    """The density file named on the command line; InputError when it is missing or unreadable."""
    from rhosr.core.density import read_density
    from rhosr.errors import InputError

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        return read_density(path)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read a density ({' '.join(str(exc).split())})") from None


def density_id(path: str, density) -> str:
    """The molecule id of a density file: its metadata, else the file name."""
    return str(density.meta.get("id") or Path(path).name.split(".")[0])


def reference_reader(spec: str | None, ids: list[str]):
    """Check ``--reference`` against the molecule ids before any work; return a function
    id -> reference Density (None without a reference), which reads a store's record only
    when asked, so that many inputs do not hold all their references at once."""
    from rhosr.errors import InputError

    if spec is None:
        return lambda mol_id: None
    if not Path(spec).is_dir():
        ref = read_density_arg(spec)
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
