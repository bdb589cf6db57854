"""Molecules and the readers that make them.

A structure argument is one of

- a path to any file ASE can read (xyz, extxyz, pdb, sdf/mol, cif, ...); a
  multi-frame file gives one molecule per frame;
- ``smiles:<SMILES>``: a 3D geometry from RDKit (ETKDG + MMFF, fixed seed,
  explicit hydrogens);
- ``qm9:<index>`` or ``qm9:<first>-<last>``: original QM9 geometries
  (dsgdb9nsd numbering) read offline from the ``qm9pack`` package.

Every molecule carries a stable id: the file stem (``stem_fN`` for frame N of
a multi-frame file; an extended-xyz frame's own ``id=...`` wins), ``qm9_000001``, or
``smiles_<10 hex digits>``.

Problems with the input raise :class:`InputError`, whose message is one line
meant for the user; the command line turns it into exit status 2.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rhosr.core import elements
from rhosr.core.grid import box_mesh, UPSAMPLE
from rhosr.core.units import ANGSTROM_TO_BOHR

#: Two atoms closer than this (Å) are taken for an input error.
MIN_DISTANCE_ANGSTROM = 0.5
#: Default cap on the number of fine-mesh points of one box.
DEFAULT_MAX_VOXELS = 64_000_000

QM9_SIZE = 133_885


class InputError(ValueError):
    """A problem with user input; ``str(err)`` is a one-line message."""


@dataclass(frozen=True)
class Molecule:
    """Atoms of one molecule, in atomic units.

    Attributes
    ----------
    id : str
        Stable identifier (file stem, ``qm9_000001``, ``smiles_<hash>``).
    symbols : tuple of str
        Element symbols, standard capitalisation.
    positions : (natm, 3) float array
        Cartesian positions, bohr.
    charge : int
        Net charge, e.
    spin : int
        2S, the number of unpaired electrons.
    source : str
        Where it came from (path, ``qm9:1``, ``smiles:C``).
    """

    id: str
    symbols: tuple
    positions: np.ndarray = field(repr=False)
    charge: int = 0
    spin: int = 0
    source: str = ""

    @property
    def natm(self) -> int:
        return len(self.symbols)

    @property
    def nelectron(self) -> int:
        """Valence electrons (GTH-PBE) of the molecule with its charge."""
        return valence_electrons(self.symbols) - int(self.charge)

    def with_charge_spin(self, charge: int | None = None, spin: int | None = None) -> "Molecule":
        """A copy with a new charge and/or spin; ``spin=None`` picks the lowest."""
        charge = self.charge if charge is None else int(charge)
        if spin is None:
            spin = default_spin(self.symbols, charge)
        return replace(self, charge=charge, spin=int(spin))


def valence_electrons(symbols: Sequence[str]) -> int:
    """Sum of GTH-PBE valence charges of the neutral atoms."""
    return int(sum(elements.valence_charge(s) for s in symbols))


def default_spin(symbols: Sequence[str], charge: int = 0) -> int:
    """Lowest 2S consistent with the parity of the electron count."""
    return (valence_electrons(symbols) - int(charge)) % 2


# --------------------------------------------------------------------------
# validation


def validate(mol: Molecule, max_voxels: int | None = DEFAULT_MAX_VOXELS) -> Molecule:
    """Check a molecule; return it unchanged or raise :class:`InputError`."""
    where = mol.id
    if mol.natm == 0:
        raise InputError(f"{where}: no atoms")
    _check_elements(mol)
    pos = np.asarray(mol.positions, dtype=float)
    if pos.shape != (mol.natm, 3):
        raise InputError(f"{where}: positions have shape {pos.shape}, expected ({mol.natm}, 3)")
    if not np.all(np.isfinite(pos)):
        raise InputError(f"{where}: a coordinate is NaN or infinite")
    if mol.natm > 1:
        dmin, (i, j) = _closest_pair(pos)
        dmin_ang = dmin / ANGSTROM_TO_BOHR
        if dmin_ang < MIN_DISTANCE_ANGSTROM:
            raise InputError(
                f"{where}: atoms {i + 1} ({mol.symbols[i]}) and {j + 1} ({mol.symbols[j]}) are "
                f"{dmin_ang:.3f} Å apart (minimum {MIN_DISTANCE_ANGSTROM} Å)"
            )
    nel = valence_electrons(mol.symbols) - mol.charge
    if nel <= 0:
        raise InputError(f"{where}: charge {mol.charge:+d} leaves {nel} valence electrons")
    if mol.spin < 0 or mol.spin > nel or (nel - mol.spin) % 2:
        raise InputError(
            f"{where}: spin 2S={mol.spin} is inconsistent with {nel} valence electrons "
            f"(charge {mol.charge:+d}); 2S must have the parity of the electron count"
        )
    if max_voxels:
        n_coarse, _ = box_mesh(pos)
        voxels = int(np.prod(n_coarse * UPSAMPLE))
        if voxels > max_voxels:
            mesh = "x".join(str(int(n)) for n in n_coarse * UPSAMPLE)
            raise InputError(
                f"{where}: fine mesh {mesh} = {voxels:,} points exceeds --max-voxels {max_voxels:,}"
            )
    return mol


def _check_elements(mol: Molecule) -> None:
    for s in mol.symbols:
        reason = elements.unsupported_reason(s)
        if reason:
            supported = "-".join(elements.supported_elements()[::len(elements.supported_elements()) - 1])
            raise InputError(f"{mol.id}: {reason} (supported: {supported})")


def _closest_pair(pos: np.ndarray) -> tuple[float, tuple[int, int]]:
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)
    d, idx = tree.query(pos, k=2)
    i = int(np.argmin(d[:, 1]))
    return float(d[i, 1]), tuple(sorted((i, int(idx[i, 1]))))


# --------------------------------------------------------------------------
# readers


def load_molecules(
    spec: str,
    charge: int | None = None,
    spin: int | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
    on_missing=None,
) -> list[Molecule]:
    """All molecules named by one structure argument, validated.

    Parameters
    ----------
    spec : str
        File path, ``smiles:...``, ``qm9:N`` or ``qm9:A-B``.
    charge, spin : int or None
        Override the charge (default 0, or the file's) and 2S (default: the
        lowest consistent with the electron count).
    max_voxels : int or None
        Refuse boxes whose fine mesh has more points.
    on_missing : callable or None
        For QM9 ranges: called with each index that qm9pack lacks; when None
        a missing index in a range is skipped silently, and a single missing
        index is an error.
    """
    spec = str(spec)
    if spec.startswith("smiles:"):
        mols = [from_smiles(spec[len("smiles:"):])]
    elif spec.startswith("qm9:"):
        mols = list(from_qm9(spec[len("qm9:"):], on_missing=on_missing))
    else:
        mols = from_file(spec)
    out = []
    for mol in mols:
        _check_elements(mol)
        q = mol.charge if charge is None else int(charge)
        if spin is not None:
            s = int(spin)
        elif charge is None and mol.spin:
            s = mol.spin  # e.g. radicals written in a SMILES string
        else:
            s = default_spin(mol.symbols, q)
        out.append(validate(replace(mol, charge=q, spin=s), max_voxels))
    return out


def load_molecule(spec: str, **kwargs) -> Molecule:
    """The single molecule named by ``spec`` (first frame of a multi-frame file)."""
    mols = load_molecules(spec, **kwargs)
    return mols[0]


def from_atoms(atoms, mol_id: str, source: str = "", charge: int = 0, spin: int = 0) -> Molecule:
    """A Molecule from an ``ase.Atoms`` object (positions in Å)."""
    symbols = []
    for s in atoms.get_chemical_symbols():
        try:
            symbols.append(elements.standard_symbol(s))
        except ValueError as err:
            raise InputError(f"{mol_id}: {err}") from None
    pos_ang = np.asarray(atoms.get_positions(), dtype=float)
    if atoms.pbc.any() and atoms.cell.rank == 3 and len(atoms) > 1 and np.all(np.isfinite(pos_ang)):
        # a molecule in a periodic file may be cut by the cell boundary: make it
        # whole by the minimum image about the first atom
        from ase.geometry import find_mic

        vec, _ = find_mic(pos_ang - pos_ang[0], atoms.cell, atoms.pbc)
        pos_ang = pos_ang[0] + vec
    pos = pos_ang * ANGSTROM_TO_BOHR
    return Molecule(mol_id, tuple(symbols), pos, int(charge), int(spin), source)


def from_file(path: str) -> list[Molecule]:
    """Every frame of a structure file that ASE can read."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file (give a structure file, smiles:<SMILES> or qm9:<index>)")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a structure file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    import warnings

    import ase.io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = ase.io.read(str(p), index=":")
    except Exception as err:  # ASE raises many types for malformed files
        msg = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, KeyError) and len(msg) < 12:
            msg = f"unknown element symbol {msg}"
        raise InputError(f"{path}: cannot read structure ({msg[:200]})") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames or all(len(a) == 0 for a in frames):
        raise InputError(f"{path}: no atoms in file")
    stem = _safe_id(p.stem)
    mols, ids = [], set()
    for k, atoms in enumerate(frames):
        mol_id = stem if len(frames) == 1 else f"{stem}_f{k}"
        if str(atoms.info.get("id", "")).strip():
            mol_id = _safe_id(str(atoms.info["id"]).strip())
            if mol_id in ids:
                raise InputError(f"{path}: frame {k}: id {mol_id} appears twice")
        ids.add(mol_id)
        charge = int(round(float(atoms.info.get("charge", 0) or 0)))
        mols.append(from_atoms(atoms, mol_id, str(p), charge=charge))
    return mols


def _safe_id(text: str) -> str:
    return "".join(c if (c.isalnum() or c in "-_.") else "_" for c in text) or "molecule"


# ---- SMILES


def smiles_id(smiles: str) -> str:
    return "smiles_" + hashlib.sha1(smiles.encode()).hexdigest()[:10]


def from_smiles(smiles: str, seed: int = 42) -> Molecule:
    """3D geometry of a SMILES string: RDKit ETKDG embedding, MMFF relaxation."""
    smiles = smiles.strip()
    if not smiles:
        raise InputError("smiles: empty SMILES string")
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(f"smiles:{smiles}: invalid SMILES")
    charge = int(Chem.GetFormalCharge(mol))
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise InputError(f"smiles:{smiles}: RDKit could not embed a 3D geometry")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    else:
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    conf = mol.GetConformer()
    pos = np.array(conf.GetPositions(), dtype=float) * ANGSTROM_TO_BOHR
    symbols = tuple(a.GetSymbol() for a in mol.GetAtoms())
    nrad = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    return Molecule(smiles_id(smiles), symbols, pos, charge, int(nrad), f"smiles:{smiles}")


# ---- QM9


def qm9_id(index: int) -> str:
    return f"qm9_{int(index):06d}"


def qm9_index_of(mol_id: str) -> int | None:
    """QM9 index of a molecule id (``qm9_000123`` -> 123), None for other ids."""
    if mol_id.startswith("qm9_") and mol_id[4:].isdigit():
        return int(mol_id[4:])
    return None


def parse_qm9_spec(text: str) -> list[int]:
    """'5' -> [5]; '1-500' -> [1..500]; '1,4,9-12' -> list."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InputError(f"qm9:{text}: expected qm9:<index> or qm9:<first>-<last>") from None
    bad = [i for i in out if not 1 <= i <= QM9_SIZE]
    if bad:
        raise InputError(f"qm9:{text}: index {bad[0]} outside 1-{QM9_SIZE}")
    return out


def _qm9_data_dir() -> Path:
    # qm9pack's own import needs pkg_resources; read its CSV files directly
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("qm9: the qm9pack package is not installed (pip install qm9pack)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def qm9_symbols(text: str) -> tuple:
    """qm9pack's ``Elements`` column (a Python list literal) -> tuple of symbols."""
    import json

    return tuple(json.loads(text.replace("'", '"')))


def qm9_columns(*names: str, parts=None) -> Iterator[tuple]:
    """The named columns (as strings) of every row of qm9pack's CSV files
    (or of the files ``parts``), in file order."""
    csv.field_size_limit(1 << 30)
    for part in sorted(_qm9_data_dir().glob("qm9_part*.csv")) if parts is None else parts:
        with open(part, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            cols = [header.index(n) for n in names]
            for row in reader:
                yield tuple(row[c] for c in cols)


def qm9_geometries(indices: Sequence[int]) -> dict[int, tuple[tuple, np.ndarray]]:
    """{index: (symbols, positions in Å)} for the indices that qm9pack holds."""
    import json

    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    found: dict[int, tuple[tuple, np.ndarray]] = {}
    parts = sorted(_qm9_data_dir().glob("qm9_part*.csv"))
    if not parts:
        raise InputError("qm9: qm9pack's data files were not found")
    firsts = [int(next(qm9_columns("Index", parts=[part]))[0]) for part in parts]
    order = np.argsort(firsts)
    parts = [parts[i] for i in order]
    firsts = [firsts[i] for i in order]
    hi = max(wanted)
    for k, part in enumerate(parts):
        last = firsts[k + 1] - 1 if k + 1 < len(parts) else QM9_SIZE
        if not any(firsts[k] <= i <= last for i in wanted):
            continue
        for index, element_text, xyz in qm9_columns("Index", "Elements", "XYZ_Ang", parts=[part]):
            idx = int(index)
            if idx in wanted:
                found[idx] = (qm9_symbols(element_text), np.array(json.loads(xyz), dtype=float))
            if idx >= hi or idx >= last:
                break
    return found


@lru_cache(maxsize=1)
def qm9_indices() -> frozenset:
    """Every QM9 index that qm9pack holds."""
    return frozenset(int(i) for (i,) in qm9_columns("Index"))


def qm9_sample(split: str, count: int, seed: int = 0) -> list[int]:
    """``count`` QM9 indices of one split, in a fixed random order.

    The order is a seeded permutation of the split's indices, with the
    indices that qm9pack lacks left out; a larger ``count`` extends the same
    list, so a store grown with ``qm9:train/500`` and later ``qm9:train/1000``
    keeps its first 500 molecules.
    """
    if split not in QM9_SPLIT:
        raise InputError(f"qm9:{split}/{count}: split must be one of {', '.join(QM9_SPLIT)}")
    lo, hi = QM9_SPLIT[split]
    order = lo + np.random.default_rng(seed).permutation(hi - lo + 1)
    present = qm9_indices()
    picked = [int(i) for i in order if int(i) in present][:count]
    if len(picked) < count:
        raise InputError(f"qm9:{split}/{count}: the {split} split has only {len(picked)} molecules")
    return picked


def _parse_qm9_sample(text: str) -> list[int] | None:
    """'train/500' or 'test/60@1' -> indices; None when ``text`` is not a sample."""
    if "/" not in text:
        return None
    split, _, rest = text.partition("/")
    count, _, seed = rest.partition("@")
    try:
        count_i, seed_i = int(count), int(seed or 0)
    except ValueError:
        raise InputError(f"qm9:{text}: expected qm9:<split>/<count>[@seed]") from None
    if count_i < 1:
        raise InputError(f"qm9:{text}: count must be positive")
    return qm9_sample(split.strip(), count_i, seed_i)


def from_qm9(text: str, on_missing=None) -> Iterator[Molecule]:
    indices = _parse_qm9_sample(text)
    if indices is None:
        indices = parse_qm9_spec(text)
    geoms = qm9_geometries(indices)
    missing = [i for i in indices if i not in geoms]
    if missing and len(indices) == 1:
        raise InputError(f"qm9:{indices[0]}: this index is not in qm9pack "
                         f"(it lacks ~3,000 of the {QM9_SIZE:,})")
    for i in indices:
        if i not in geoms:
            if on_missing is not None:
                on_missing(i)
            continue
        symbols, pos_ang = geoms[i]
        yield Molecule(qm9_id(i), symbols, pos_ang * ANGSTROM_TO_BOHR, 0, 0, f"qm9:{i}")


# --------------------------------------------------------------------------
# the standard QM9 split

#: Standard split of QM9 indices (inclusive ranges). Nothing trains on
#: validation or test molecules.
QM9_SPLIT = {
    "train": (1, 110_000),
    "val": (110_001, 120_000),
    "test": (120_001, QM9_SIZE),
}


def qm9_split(index: int) -> str:
    """'train', 'val' or 'test' for a QM9 index."""
    for name, (lo, hi) in QM9_SPLIT.items():
        if lo <= int(index) <= hi:
            return name
    raise ValueError(f"QM9 index {index} outside 1-{QM9_SIZE}")


#: Ids that carry their split: ``<set>-<train|val|test>-<number>`` (e.g. ``S-test-003``, the
#: beyond-QM9 set of ``scripts/exotic_set.py``).
_SPLIT_ID = re.compile(r"^[A-Za-z0-9]+-(train|val|test)-[0-9]+$")


def group_of_id(mol_id: str) -> str | None:
    """'qm9' for QM9 ids, ``<set>`` for ids that name their split (``S`` of ``S-test-003``),
    None for other ids."""
    if qm9_index_of(mol_id) is not None:
        return "qm9"
    return str(mol_id).split("-", 1)[0] if _SPLIT_ID.match(str(mol_id)) else None


def split_of_id(mol_id: str) -> str | None:
    """Split of a QM9 molecule id (``qm9_000123``) or of an id that names its split
    (``<set>-<train|val|test>-<number>``); None for other ids."""
    index = qm9_index_of(mol_id)
    if index is not None:
        return qm9_split(index)
    named = _SPLIT_ID.match(str(mol_id))
    return None if named is None else named.group(1)
