"""Compare orbital label files with `rhosr generate` labels of the same molecules.

Before a folder of label files made elsewhere goes into a bank, relabel a few of its
molecules with `rhosr generate` and compare: total energy (Hartree) and density NMAE on
the fine mesh, both densities evaluated from their orbitals by rhosr.labels.orbitals.

    rhosr generate qm9:51,112,183 --out STORE --workers 1
    python scripts/verify_labels.py STORE LABEL_FOLDER

Prints one line per molecule of STORE; exits 1 when one differs by more than
--max-de (Hartree) or --max-nmae (percent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rhosr.labels.readers import read_label_file
from rhosr.labels.orbitals import density_from_record
from rhosr.labels.store import Store


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("labels", help="folder of <id>.npz orbital label files")
    p.add_argument("--max-de", type=float, default=1e-6, help="Hartree")
    p.add_argument("--max-nmae", type=float, default=1e-3, help="percent")
    args = p.parse_args(argv)
    store, worst = Store(args.store), 0
    for mol_id in store.ids():
        mine = store.read(mol_id)
        theirs = read_label_file(Path(args.labels) / f"{mol_id}.npz", {})
        if theirs.fine_mesh != mine.fine_mesh:
            print(f"{mol_id}: meshes differ {mine.fine_mesh} / {theirs.fine_mesh}")
            worst = 1
            continue
        rho = density_from_record(theirs, cache=False)
        de = mine.energy - theirs.energy
        err = 100 * float(np.abs(mine.rho_dft - rho).sum() / rho.sum())
        print(f"{mol_id}: {len(mine.symbols)} atoms, mesh {mine.fine_mesh}, dE {de:+.2e} Ha, "
              f"density NMAE {err:.2e} %, SCF cycles {mine.scf_iterations} / {theirs.scf_iterations}")
        if abs(de) > args.max_de or err > args.max_nmae:
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
