"""Label-generation throughput on QM9 training-pool molecules.

    python benchmarks/generate.py [--molecules qm9:train/10] [--workers 2]

Labels the molecules into a temporary store with `rhosr.dft.generate.generate`
and prints molecules per hour and the share of worker time spent in the SCF,
in evaluating the density on the fine mesh, and in writing the store, all
measured in this run.
"""

import argparse
import os
import tempfile
import time

from rhosr.core.splits import split_of_id
from rhosr.dft.generate import collect, generate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecules", default="qm9:train/10", help="structure argument (training pool)")
    ap.add_argument("--count", type=int, default=10, help="number of molecules")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to compare")
    args = ap.parse_args()
    mols, _ = collect([args.molecules])
    mols = mols[: args.count]
    assert all(split_of_id(m.id) == "train" for m in mols), "benchmark only on the training pool"
    print(f"{len(mols)} molecules ({mols[0].id} .. {mols[-1].id}), "
          f"{sum(m.natm for m in mols) / len(mols):.1f} atoms on average, {os.cpu_count()} cores")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = generate([args.molecules], os.path.join(tmp, "store"), workers=workers,
                         limit=args.count, progress=False)
            wall = time.perf_counter() - t0
        n = s.done + len(s.failed)
        work = sum(s.timings.values())
        print(f"workers={workers}: {n} molecules in {wall:.1f} s -> {3600 * n / wall:.0f} molecules/hour "
              f"(failed {len(s.failed)}); mean {s.mean_seconds:.1f} s per molecule per worker")
        print("  share of time: " + ", ".join(
            f"{k} {100 * v / work:.1f}%" for k, v in s.timings.items()) + f" (of {work:.1f} s)")


if __name__ == "__main__":
    main()
