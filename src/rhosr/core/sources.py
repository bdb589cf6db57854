"""Structures in: files (ASE), smiles: (RDKit), qm9: (qm9pack) -> Molecule."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from rhosr.core.molecule import (
    DEFAULT_MAX_VOXELS,
    Molecule,
    check_elements,
    default_spin,
    from_atoms,
    validate,
)
from rhosr.core.qm9 import from_qm9
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.errors import InputError


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
        check_elements(mol)
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
        if "charge" not in atoms.info and "residuenames" in atoms.arrays:
            charge = residue_charge_of(atoms.arrays["residuenames"], atoms.arrays["atomtypes"],
                                       atoms.arrays["residuenumbers"])
        mols.append(from_atoms(atoms, mol_id, str(p), charge=charge))
    return mols


#: Net charge of amino-acid side chains at neutral pH (PDB and CHARMM/AMBER residue names).
RESIDUE_CHARGES = {"ARG": 1, "LYS": 1, "HIP": 1, "HSP": 1, "ASP": -1, "GLU": -1}
#: Atom names that mark a charged terminus: a third hydrogen on the N-terminal nitrogen
#: (NH3+), a second carboxylate oxygen at the C terminus (COO-).
N_TERMINAL_H3 = {"H3", "HT3", "3H"}
C_TERMINAL_O2 = {"OXT", "OT2", "O2"}


def residue_charge_of(residue_names, atom_names, residue_numbers) -> int:
    """Net charge of a protein from its residues: +1 for ARG, LYS and protonated HIS
    (HIP/HSP), -1 for ASP and GLU, +1 per NH3+ and -1 per COO- terminus (recognised by
    their atom names); other residues and ligands count as neutral."""
    seen = set()
    charge = 0
    for res, name, num in zip(residue_names, atom_names, residue_numbers):
        res, name = str(res).strip().upper(), str(name).strip().upper()
        if (res, num) not in seen:
            seen.add((res, num))
            charge += RESIDUE_CHARGES.get(res, 0)
        charge += (name in N_TERMINAL_H3) - (name in C_TERMINAL_O2)
    return charge


def _safe_id(text: str) -> str:
    return "".join(c if (c.isalnum() or c in "-_.") else "_" for c in text) or "molecule"


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


def write_molecule_set(rows, out, columns, frame_keys) -> None:
    """A molecule set as the data folders keep it: ``OUT/molecules.csv`` (``columns`` of each
    row) and ``OUT/structures.xyz`` (extended xyz in Å that :func:`from_file` reads back; per
    frame the row's ``frame_keys``, then its quoted ``smiles``).  Each row holds its
    :class:`Molecule` under ``"molecule"``."""
    import csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "molecules.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] for c in columns])
    lines = []
    for r in rows:
        mol = r["molecule"]
        info = " ".join(f"{k}={r[k]}" for k in frame_keys)
        lines.append(str(mol.natm))
        lines.append(f'Properties=species:S:1:pos:R:3 {info} smiles="{r["smiles"]}" pbc="F F F"')
        for s, p in zip(mol.symbols, np.asarray(mol.positions) / ANGSTROM_TO_BOHR):
            lines.append(f"{s:<2} {p[0]:14.8f} {p[1]:14.8f} {p[2]:14.8f}")
    (out / "structures.xyz").write_text("\n".join(lines) + "\n")

