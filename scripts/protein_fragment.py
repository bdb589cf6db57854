"""Cut the 2 000-atom protein example out of adenylate kinase (PDB 4AKE, open state).

    python scripts/protein_fragment.py SOURCE.pdb --residues 1-130 --out examples/adk_fragment.pdb

SOURCE is ``adk_open.pdb`` of the MDAnalysisTests package (2.11.0 on PyPI): chain A of
PDB entry 4AKE with CHARMM hydrogens, 214 residues, 3 341 atoms. The script keeps the
residues asked for, caps the cut peptide bond with a hydrogen on the last carbonyl
carbon (1.10 Å along the C→N bond it replaces: a C-terminal aldehyde, closed shell),
writes element symbols (columns 77-78, from the CHARMM atom names) so that any PDB
reader gets them right, and states in REMARK lines where the file comes from and
the net charge its residues give (:func:`rhosr.core.sources.residue_charge`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.core.sources import residue_charge_of  # noqa: E402

CAP_BOND_ANGSTROM = 1.10


def read_atoms(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")):
            name = line[12:16].strip()
            out.append({"name": name, "res": line[17:21].strip(), "resid": int(line[22:26]),
                        "xyz": np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])]),
                        "element": line[76:78].strip() or name.lstrip("0123456789")[0]})
    return out


def fragment(atoms: list[dict], first: int, last: int) -> list[dict]:
    kept = [a for a in atoms if first <= a["resid"] <= last]
    after = [a for a in atoms if a["resid"] == last + 1 and a["name"] == "N"]
    if after:
        c = next(a for a in kept if a["resid"] == last and a["name"] == "C")
        bond = after[0]["xyz"] - c["xyz"]
        kept.append({"name": "HC", "res": c["res"], "resid": last, "element": "H",
                     "xyz": c["xyz"] + CAP_BOND_ANGSTROM * bond / np.linalg.norm(bond)})
    return kept


def pdb_line(k: int, a: dict) -> str:
    name = a["name"] if len(a["name"]) == 4 else " " + a["name"].ljust(3)
    x, y, z = a["xyz"]
    return (f"ATOM  {k:5d} {name} {a['res']:<4}A{a['resid']:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
            f"  1.00  0.00          {a['element']:>2}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="adk_open.pdb of MDAnalysisTests")
    ap.add_argument("--residues", default="1-130", help="first-last residue kept (default 1-130)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    first, last = (int(v) for v in args.residues.split("-"))
    atoms = fragment(read_atoms(args.source), first, last)
    charge = residue_charge_of([a["res"] for a in atoms], [a["name"] for a in atoms],
                               [a["resid"] for a in atoms])
    lines = [
        f"REMARK   1 ADENYLATE KINASE, OPEN STATE (PDB 4AKE CHAIN A), RESIDUES {first}-{last}",
        "REMARK   1 FROM adk_open.pdb OF MDAnalysisTests 2.11.0 (CHARMM HYDROGENS),",
        f"REMARK   1 CUT BY scripts/protein_fragment.py; C-TERMINAL H CAP ON RESIDUE {last}",
        f"REMARK   1 {len(atoms)} ATOMS, NET CHARGE {charge:+d} FROM THE RESIDUES",
    ]
    lines += [pdb_line(k + 1, a) for k, a in enumerate(atoms)] + ["END"]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{args.out}: {len(atoms)} atoms, charge {charge:+d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
