"""Rebuild ``src/rhosr/data/basis_gth-tzv2p.npz``: the label basis for NumPy-only density evaluation.

Per supported element, the shells of ``gth-tzv2p`` exactly as PySCF builds them for a cell
(angular momentum, primitive exponents, contraction coefficients with libcint's
normalisation, ``cell._libcint_ctr_coeff``), and PySCF's Cartesian-to-real-spherical
matrices (``gto.cart2sph``) for every angular momentum that occurs.  ``rhosr.labels.orbitals``
reads the table so that an orbital record becomes a density without PySCF;
``tests/test_orbitals.py`` checks the table against PySCF.

    python scripts/build_basis_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.labels.orbitals import BASIS_FILE, build_basis_arrays  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "src" / "rhosr" / "data" / BASIS_FILE


def main() -> None:
    arrays = build_basis_arrays()
    np.savez_compressed(OUT, **arrays)
    print(f"{OUT}: {len(str(arrays['symbols']).split())} elements, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
