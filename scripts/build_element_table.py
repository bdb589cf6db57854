"""Rebuild ``src/rhosr/data/elements.json``: the supported elements and their valence charges.

An element is supported when the installed PySCF has its GTH-PBE pseudopotential and
both basis sets of the recipe (gth-szv, gth-tzv2p); its valence charge is the
pseudopotential's.  ``rhosr.core.elements`` reads the table so that structure input and
prediction need not import PySCF; ``tests/test_molecule.py`` checks it against PySCF.

    python scripts/build_element_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.core.elements import TABLE_FILE, build_table  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "src" / "rhosr" / "data" / TABLE_FILE


def main() -> None:
    table = build_table()
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{OUT}: {len(table['valence'])} elements: {' '.join(table['valence'])}")


if __name__ == "__main__":
    main()
