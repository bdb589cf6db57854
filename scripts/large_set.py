"""Build the large-molecule set: drug-like molecules, peptides, sugars, steroids, nucleotides.

    python scripts/large_set.py --out data/large      # the committed set

Reads ``data/large/smiles.csv`` (name, group, role, SMILES; the committed list) and
embeds every molecule in 3D with RDKit (:func:`rhosr.core.sources.from_smiles`:
ETKDG v3 with seed 42, then MMFF94), so the geometries depend only on the list and
the RDKit version. Every molecule must have 30 to 120 atoms (hydrogens included) and
only elements the bundled model has seen (H C N O F S P).

Roles: ``test`` molecules are held out (never trained on, never used to choose a
model), ``val`` ones choose models, ``train`` ones train. Ids are
``<group>-<role>-<NNN>`` (numbered per group in list order), the form
:func:`rhosr.core.splits.split_of_id` reads as the split.

Writes ``OUT/molecules.csv`` (id, group, role, charge, atoms, name, smiles) and
``OUT/structures.xyz`` (extended xyz, Å) in labelling order: held-out molecules
first, then validation, then training, each by increasing atom count, so that a
partly labelled set already holds the cheapest complete held-out set.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.molecule import validate  # noqa: E402
from rhosr.core.sources import from_smiles, write_molecule_set  # noqa: E402

ELEMENTS = {"H", "C", "N", "O", "F", "S", "P"}
MIN_ATOMS, MAX_ATOMS = 30, 120
ROLES = ("test", "val", "train")


def read_list(path: Path) -> list[dict]:
    """The rows of the SMILES list, each checked and numbered per group."""
    from rdkit import Chem

    rows, count, seen = [], {}, set()
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["role"] not in ROLES:
                raise SystemExit(f"{path}: {row['name']}: role must be one of {ROLES}")
            canonical = Chem.CanonSmiles(row["smiles"])
            if canonical in seen or row["name"] in {r["name"] for r in rows}:
                raise SystemExit(f"{path}: {row['name']} is listed twice")
            seen.add(canonical)
            k = count.get(row["group"], 0)
            count[row["group"]] = k + 1
            rows.append(dict(row, id=f"{row['group']}-{row['role']}-{k:03d}"))
    return rows


def embed(row: dict) -> dict:
    """The row with its RDKit geometry, or SystemExit naming what is wrong."""
    mol = validate(from_smiles(row["smiles"]))
    if not MIN_ATOMS <= mol.natm <= MAX_ATOMS:
        raise SystemExit(f"{row['name']}: {mol.natm} atoms, outside {MIN_ATOMS}-{MAX_ATOMS}")
    other = set(mol.symbols) - ELEMENTS
    if other:
        raise SystemExit(f"{row['name']}: elements {sorted(other)} outside {sorted(ELEMENTS)}")
    return dict(row, molecule=mol, charge=mol.charge, atoms=mol.natm)


def write(rows: list[dict], out: Path) -> None:
    """OUT/molecules.csv and OUT/structures.xyz (see the module docstring)."""
    write_molecule_set(rows, out, ["id", "group", "role", "charge", "atoms", "name", "smiles"],
                       ["id", "charge", "group", "name"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for molecules.csv and structures.xyz")
    ap.add_argument("--list", type=Path, default=ROOT / "data/large/smiles.csv",
                    help="the SMILES list (default: data/large/smiles.csv)")
    args = ap.parse_args(argv)
    rows = [embed(r) for r in read_list(args.list)]
    rows.sort(key=lambda r: (ROLES.index(r["role"]), r["atoms"]))
    write(rows, args.out)
    for role in ROLES:
        sizes = [r["atoms"] for r in rows if r["role"] == role]
        if sizes:
            print(f"{role}: {len(sizes)} molecules, {min(sizes)}-{max(sizes)} atoms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
