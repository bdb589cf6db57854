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

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from rhosr.core import elements
from rhosr.core.grid import UPSAMPLE, box_mesh
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.errors import InputError

#: Two atoms closer than this (Å) are taken for an input error.
MIN_DISTANCE_ANGSTROM = 0.5
#: Default cap on the number of fine-mesh points of one box.
DEFAULT_MAX_VOXELS = 64_000_000


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
    check_elements(mol)
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


def check_elements(mol: Molecule) -> None:
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
