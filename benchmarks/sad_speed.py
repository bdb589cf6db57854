"""Speed of the SAD input density (:func:`rhosr.core.sad.sad_density`).

    PYTHONPATH=src python benchmarks/sad_speed.py [--repeat 7]

Times, in this run, the SAD on the coarse (network input) mesh of an 18-atom
QM9 molecule (qm9_107770) and of the 206-atom GTP-Mg microtubule pocket
(charge -4), and on the fine mesh of methane.  Prints the best and the median
of ``--repeat`` calls after one warm-up call (which loads the tables).
Targets on a 2-core machine: 18 atoms <= 50 ms, 206 atoms <= 2 s.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import ase.io

from rhosr.core.grid import box_for
from rhosr.core.sad import sad_density
from rhosr.core.units import ANGSTROM_TO_BOHR

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"
CASES = [  # (xyz, charge, mesh)
    ("qm9_107770.xyz", 0, "coarse"),
    ("gtp_microtubule_1996.xyz", -4, "coarse"),
    ("qm9_000001.xyz", 0, "fine"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--variant", default="paper", choices=["paper", "worsened"])
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, variant {args.variant}, best / median of {args.repeat}")
    for xyz, charge, which in CASES:
        atoms = ase.io.read(REFERENCE / xyz)
        coarse, fine, pos = box_for(atoms.positions * ANGSTROM_TO_BOHR)
        grid = coarse if which == "coarse" else fine
        symbols = atoms.get_chemical_symbols()
        sad_density(symbols, pos, grid, charge=charge, variant=args.variant)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            sad_density(symbols, pos, grid, charge=charge, variant=args.variant)
            times.append(time.perf_counter() - t0)
        print(f"{xyz:26s} {len(symbols):4d} atoms, {which:6s} mesh {grid.mesh}: "
              f"{1e3 * min(times):8.1f} ms best, {1e3 * statistics.median(times):8.1f} ms median")


if __name__ == "__main__":
    main()
