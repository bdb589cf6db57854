"""Print a seeded sample of QM9 molecules with a given composition as one ``qm9:`` spec.

    python scripts/qm9_select.py train --element N --at-least 2 --count 150
    rhosr generate "$(python scripts/qm9_select.py train --element N --at-least 2 --count 150)" --out STORE

The QM9 split is by index, and its parts differ in chemistry: the test split
(120 001-133 885) holds far more nitrogen than the training pool (2.2 against
0.9 N atoms per molecule; 67 % against 23 % of molecules with two N or more).
A uniform sample of the training pool under-represents that chemistry; this
script draws extra training molecules rich in one element, from one split only,
in a fixed random order (a larger ``--count`` extends the same list).
``--stats`` prints the composition of each split instead; ``--eval FILE.json``
splits the per-molecule NMAE of ``rhosr evaluate --json`` by that composition.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.molecule import QM9_SPLIT, qm9_columns, qm9_index_of, qm9_sample, qm9_symbols  # noqa: E402


def compositions() -> dict[int, Counter]:
    """{QM9 index: {element: count}} for every molecule qm9pack holds."""
    return {int(i): Counter(qm9_symbols(e)) for i, e in qm9_columns("Index", "Elements")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", nargs="?", choices=sorted(QM9_SPLIT), help="split to draw from")
    ap.add_argument("--element", default="N", help="element symbol (default: N)")
    ap.add_argument("--at-least", type=int, default=2, help="minimum count of that element")
    ap.add_argument("--count", type=int, default=100, help="molecules to print")
    ap.add_argument("--seed", type=int, default=0, help="seed of the order")
    ap.add_argument("--stats", action="store_true", help="print each split's composition")
    ap.add_argument("--eval", nargs="+", metavar="JSON",
                    help="rhosr evaluate --json files: mean NMAE below / at least --at-least "
                         "atoms of --element, and its Pearson r with the atom count")
    args = ap.parse_args(argv)
    if not (args.stats or args.eval or args.split):
        ap.error("give a split, --stats or --eval")
    comp = compositions()
    if args.eval:
        for path in args.eval:
            molecules = json.loads(Path(path).read_text())["molecules"]
            rows = [(r["nmae_percent"], comp[i]) for r in molecules
                    if (i := qm9_index_of(r["id"])) in comp]
            err = np.array([e for e, _ in rows])
            counts = [c for _, c in rows]
            rich = np.array([c[args.element] >= args.at_least for c in counts], dtype=bool)
            size = np.array([c.total() for c in counts])
            parts = [f"{label} {args.at_least} {args.element}: "
                     + (f"{err[mask].mean():.2f} % ({mask.sum()})" if mask.any() else "none")
                     for label, mask in (("<", ~rich), (">=", rich))]
            r_size = np.corrcoef(err, size)[0, 1] if len(rows) > 2 else float("nan")
            print(f"{path}: {len(rows)} molecules, {size.mean():.1f} atoms, NMAE {err.mean():.2f} %; "
                  f"{'; '.join(parts)}; Pearson r(NMAE, atoms) = {r_size:.2f}")
        return
    if args.stats:
        for name, (lo, hi) in QM9_SPLIT.items():
            rows = [c for i, c in comp.items() if lo <= i <= hi]
            n_el = np.array([c[args.element] for c in rows])
            print(f"{name:<6} {len(rows):>7} molecules  {args.element} per molecule {n_el.mean():.2f}  "
                  f"with >= {args.at_least}: {100 * (n_el >= args.at_least).mean():.0f} %")
        return
    lo, hi = QM9_SPLIT[args.split]
    # the seeded order of qm9:<split>/<count>@<seed>, filtered by composition
    order = qm9_sample(args.split, sum(lo <= i <= hi for i in comp), args.seed)
    picked = [i for i in order if comp[i][args.element] >= args.at_least][:args.count]
    if len(picked) < args.count:
        sys.exit(f"only {len(picked)} molecules of the {args.split} split have "
                 f">= {args.at_least} {args.element}")
    print("qm9:" + ",".join(str(i) for i in picked))


if __name__ == "__main__":
    main()
