"""Build the beyond-QM9 molecule set: QM9-sized molecules with S, Cl, P, Si or B, and ions.

    python scripts/exotic_set.py --out data/exotic            # the committed set
    python scripts/exotic_set.py --per-group 3 --out DIR      # a small one (tests)

Each molecule is a one-site substitution of a molecule of QM9's training pool
(index <= 110 000; never the validation or test splits), re-embedded in 3D by
RDKit (ETKDG v3 with a fixed seed, then MMFF94, or UFF where MMFF has no
parameters -- boron):

======  ==========================================================================
group   substitution (at a site drawn with the parent's index as seed, among the best kind)
======  ==========================================================================
S       an O becomes S (alcohol -> thiol, ether -> thioether, carbonyl -> thione, furan -> thiophene)
Cl      an F becomes Cl, else a hydroxyl O (O-H with one heavy neighbour) becomes Cl
P       a non-aromatic N becomes P (amine -> phosphine, imine -> phosphaalkene, nitrile -> phosphaalkyne)
Si      an sp3 C with four single bonds becomes Si
B       an amine N with single bonds only becomes B (aminoborane analogues, R2BH, RBH2)
anion   the first O-H, else N-H, loses its proton (alkoxides, carboxylates, enolates, amides)
cation  the first N without multiple bonds, else any N but a nitrile's, gains a proton
======  ==========================================================================

Parents are visited in a seeded random order, each serving one group (the one
with the fewest molecules so far that it can make); a product is kept when RDKit
sanitises it, it is new (canonical SMILES), its formula is none of ASE's
``g2`` molecules (the project's out-of-distribution test), and it embeds.
Per group the first ``--test`` products are held out for evaluation (role
``test``), the next ``--val`` are for model selection (``val``), the rest
(``--per-group`` in all) train.  Ids are ``<group>-<role>-<NNN>``, which
:func:`rhosr.core.splits.split_of_id` reads as the split.

Writes ``OUT/molecules.csv`` (id, group, role, charge, smiles, parent) and
``OUT/structures.xyz`` (extended xyz, one frame per molecule with ``id``,
``charge``, ``group`` and ``smiles`` in its comment line; positions in Å), which
``rhosr generate OUT/structures.xyz`` labels.  The output depends only on the
arguments and the RDKit version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.core.molecule import Molecule, validate
from rhosr.core.qm9 import QM9_SPLIT, qm9_columns
from rhosr.core.sources import from_smiles, write_molecule_set
from rhosr.errors import InputError

GROUPS = ("S", "Cl", "P", "Si", "B", "anion", "cation")
SEED = 2024


def _single_bonds_only(atom) -> bool:
    return all(b.GetBondTypeAsDouble() == 1.0 for b in atom.GetBonds())


def _sites(mol, group: str, rng=None) -> list[tuple[int, int, int]]:
    """Candidate (atom index, new atomic number, new formal charge), best first; with
    ``rng``, the sites of equal preference in a random order."""
    first, second = [], []
    for a in mol.GetAtoms():
        sym, i, h, deg = a.GetSymbol(), a.GetIdx(), a.GetTotalNumHs(), a.GetDegree()
        if a.GetFormalCharge() != 0:
            continue
        if group == "S" and sym == "O":
            first.append((i, 16, 0))
        elif group == "Cl" and sym == "F":
            first.append((i, 17, 0))
        elif group == "Cl" and sym == "O" and h == 1 and deg == 1:
            second.append((i, 17, 0))
        elif group == "P" and sym == "N" and not a.GetIsAromatic():
            first.append((i, 15, 0))
        elif group == "Si" and sym == "C" and not a.GetIsAromatic() and _single_bonds_only(a):
            first.append((i, 14, 0))
        elif group == "B" and sym == "N" and not a.GetIsAromatic() and _single_bonds_only(a):
            first.append((i, 5, 0))
        elif group == "anion" and h > 0 and sym in ("O", "N"):
            (first if sym == "O" else second).append((i, a.GetAtomicNum(), -1))
        elif group == "cation" and sym == "N":
            triple = any(b.GetBondTypeAsDouble() == 3.0 for b in a.GetBonds())
            if not triple:
                plain = _single_bonds_only(a) and not a.GetIsAromatic()
                (first if plain else second).append((i, 7, +1))
    if rng is not None:
        first = [first[k] for k in rng.permutation(len(first))]
        second = [second[k] for k in rng.permutation(len(second))]
    return first + second


def substitute(smiles: str, group: str, seed: int | None = None) -> str | None:
    """The group's one-site substitution of a molecule (canonical SMILES), or None.

    The first eligible site of the best kind, or with ``seed`` one drawn at random."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    rng = None if seed is None else np.random.default_rng(seed)
    for idx, z, charge in _sites(mol, group, rng):
        rw = Chem.RWMol(mol)
        atom = rw.GetAtomWithIdx(idx)
        atom.SetAtomicNum(z)
        atom.SetFormalCharge(charge)
        atom.SetNoImplicit(False)
        if atom.GetIsAromatic() and charge:
            # aromatic N: set its hydrogens explicitly (pyridinium [nH+], pyrrolide [n-])
            atom.SetNumExplicitHs(max(atom.GetTotalNumHs() + charge, 0))
            atom.SetNoImplicit(True)
        else:
            atom.SetNumExplicitHs(0)
        try:
            Chem.SanitizeMol(rw)
        except Exception:  # RDKit raises several types for impossible valences
            continue
        out = Chem.MolToSmiles(rw)
        if Chem.MolFromSmiles(out) is not None:
            return out
    return None


def g2_formulas() -> frozenset:
    """Hill formulas of ASE's g2 molecules (kept out of every training set)."""
    from ase.collections import g2

    return frozenset(atoms.get_chemical_formula(mode="hill") for atoms in g2)


def _formula(smiles: str) -> str:
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    return CalcMolFormula(Chem.MolFromSmiles(smiles))  # Hill order; ions end in + or -


def parents(seed: int = SEED):
    """(QM9 index, SMILES) of QM9's training pool, zwitterions left out, in a seeded
    random order."""
    lo, hi = QM9_SPLIT["train"]
    rows = [(int(i), s) for i, s in qm9_columns("Index", "SMILES")
            if lo <= int(i) <= hi and "+" not in s and "-" not in s]  # no zwitterions
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[k] for k in order]


def _embedded(smiles: str) -> Molecule | None:
    try:
        return validate(from_smiles(smiles))
    except InputError:
        return None


def _role(k: int, n_test: int, n_val: int) -> str:
    return "test" if k < n_test else "val" if k < n_test + n_val else "train"


def build(per_group: int, n_test: int, n_val: int, seed: int = SEED) -> list[dict]:
    """The molecule set: one dict per molecule, in :func:`interleaved` order."""
    if per_group < n_test + n_val:
        raise SystemExit(f"--per-group ({per_group}) must be at least --test + --val")
    excluded, seen = g2_formulas(), set()
    chosen: dict[str, list[dict]] = {g: [] for g in GROUPS}
    for index, smiles in parents(seed):
        # each parent serves one group: the one with the fewest molecules that it can make
        for group in sorted(GROUPS, key=lambda g: (len(chosen[g]), GROUPS.index(g))):
            if len(chosen[group]) >= per_group:
                break
            product = substitute(smiles, group, seed=index)
            if product is None or product in seen or _formula(product) in excluded:
                continue
            mol = _embedded(product)
            if mol is None:
                continue
            seen.add(product)
            k = len(chosen[group])
            role = _role(k, n_test, n_val)
            chosen[group].append({"id": f"{group}-{role}-{k:03d}", "group": group, "role": role,
                                  "charge": mol.charge, "smiles": product, "parent": f"qm9:{index}",
                                  "molecule": mol})
            break
        if all(len(v) >= per_group for v in chosen.values()):
            break
    return interleaved(chosen)


def interleaved(chosen: dict[str, list[dict]]) -> list[dict]:
    """All test molecules, then validation, then training ones; within each, the k-th
    molecule of every group before the (k+1)-th: labelling the file in order gives
    every group its held-out set first, then 10, 25, 50 training molecules each."""
    out = []
    for role in ("test", "val", "train"):
        lists = [[r for r in chosen[g] if r["role"] == role] for g in GROUPS]
        for k in range(max((len(v) for v in lists), default=0)):
            out.extend(v[k] for v in lists if k < len(v))
    return out


def write(rows: list[dict], out: Path) -> None:
    """OUT/molecules.csv and OUT/structures.xyz (see the module docstring)."""
    write_molecule_set(rows, out, ["id", "group", "role", "charge", "smiles", "parent"],
                       ["id", "charge", "group"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for molecules.csv and structures.xyz")
    ap.add_argument("--per-group", type=int, default=67, help="molecules per group")
    ap.add_argument("--test", type=int, default=12, help="held-out molecules per group")
    ap.add_argument("--val", type=int, default=5, help="model-selection molecules per group")
    ap.add_argument("--seed", type=int, default=SEED, help="order of the parent molecules")
    args = ap.parse_args(argv)
    rows = build(args.per_group, args.test, args.val, args.seed)
    write(rows, args.out)
    counts = {g: sum(r["group"] == g for r in rows) for g in GROUPS}
    print(f"{len(rows)} molecules in {args.out}: " + ", ".join(f"{g} {n}" for g, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
