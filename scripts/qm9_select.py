"""Print a seeded sample of QM9 molecules with a given composition as one ``qm9:`` spec.

    python scripts/qm9_select.py train --element N --at-least 2 --count 150
    python scripts/qm9_select.py train --element H --at-most 6 --count 300
    rhosr generate "$(python scripts/qm9_select.py train --element N --at-least 2 --count 150)" --out STORE

The QM9 split is by index, and its parts differ in chemistry: the test split
(120 001-133 885) holds far more nitrogen than the training pool (2.2 against
0.9 N atoms per molecule; 67 % against 23 % of molecules with two N or more).
A uniform sample of the training pool under-represents that chemistry; this
script draws extra training molecules rich (or poor) in one element, from one split
only, in a fixed random order (a larger ``--count`` extends the same list). The test
split is also poor in hydrogen (7.7 H per molecule, 43 % with at most 6, against 9.2 and
15 % in the training pool: more rings and multiple bonds), and its hydrogen-poor molecules
are the ones the bundled model predicts worst.
``--stats`` prints the composition of each split instead; ``--eval FILE.json``
splits the per-molecule NMAE of ``rhosr evaluate --json`` by that composition.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.core.qm9 import (
    QM9_SPLIT,  # noqa: E402
    qm9_columns,
    qm9_index_of,
    qm9_sample,
    qm9_symbols,
)


@lru_cache(maxsize=1)
def compositions() -> dict[int, Counter]:
    """{QM9 index: {element: count}} for every molecule qm9pack holds (read once; do not
    modify the result)."""
    return {int(i): Counter(qm9_symbols(e)) for i, e in qm9_columns("Index", "Elements")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", nargs="?", choices=sorted(QM9_SPLIT), help="split to draw from")
    ap.add_argument("--element", default="N", help="element symbol (default: N)")
    ap.add_argument("--at-least", type=int, default=None,
                    help="minimum count of that element (default: 2, or 0 with --at-most)")
    ap.add_argument("--at-most", type=int, default=None, help="maximum count of that element")
    ap.add_argument("--count", type=int, default=100, help="molecules to print")
    ap.add_argument("--seed", type=int, default=0, help="seed of the order")
    ap.add_argument("--stats", action="store_true", help="print each split's composition")
    ap.add_argument("--eval", nargs="+", metavar="JSON",
                    help="rhosr evaluate --json files: mean NMAE outside / inside the selected "
                         "range of --element, and its Pearson r with the atom count and with "
                         "the count of --element")
    args = ap.parse_args(argv)
    if not (args.stats or args.eval or args.split):
        ap.error("give a split, --stats or --eval")
    if args.at_least is None:
        args.at_least = 2 if args.at_most is None else 0
    if args.at_most is not None and args.at_most < args.at_least:
        ap.error(f"--at-most {args.at_most} is below --at-least {args.at_least}")
    hi_count = float("inf") if args.at_most is None else args.at_most
    rng = (f">= {args.at_least}" if args.at_most is None
           else f"{args.at_least}-{args.at_most}" if args.at_least else f"<= {args.at_most}")

    def selected(c: Counter) -> bool:
        return args.at_least <= c[args.element] <= hi_count

    comp = compositions()
    if args.eval:
        for path in args.eval:
            molecules = json.loads(Path(path).read_text())["molecules"]
            rows = [(r["nmae_percent"], comp[i]) for r in molecules
                    if (i := qm9_index_of(r["id"])) in comp]
            err = np.array([e for e, _ in rows])
            counts = [c for _, c in rows]
            inside = np.array([selected(c) for c in counts], dtype=bool)
            size = np.array([c.total() for c in counts])
            n_el = np.array([c[args.element] for c in counts])
            parts = [f"{label}{args.element} {rng}: "
                     + (f"{err[mask].mean():.2f} % ({mask.sum()})" if mask.any() else "none")
                     for label, mask in (("not ", ~inside), ("", inside))]

            def pearson(x, err=err):
                ok = len(err) > 2 and np.ptp(x) > 0
                return np.corrcoef(err, x)[0, 1] if ok else float("nan")

            print(f"{path}: {len(rows)} molecules, {size.mean():.1f} atoms, NMAE {err.mean():.2f} %; "
                  f"{'; '.join(parts)}; Pearson r(NMAE, atoms) = "
                  f"{pearson(size):.2f}, r(NMAE, {args.element}) = {pearson(n_el):.2f}")
        return
    if args.stats:
        for name, (lo, hi) in QM9_SPLIT.items():
            rows = [c for i, c in comp.items() if lo <= i <= hi]
            n_el = np.array([c[args.element] for c in rows])
            inside = np.array([selected(c) for c in rows], dtype=bool)
            print(f"{name:<6} {len(rows):>7} molecules  {args.element} per molecule {n_el.mean():.2f}  "
                  f"with {rng}: {100 * inside.mean():.0f} %")
        return
    lo, hi = QM9_SPLIT[args.split]
    # the seeded order of qm9:<split>/<count>@<seed>, filtered by composition
    order = qm9_sample(args.split, sum(lo <= i <= hi for i in comp), args.seed)
    picked = [i for i in order if selected(comp[i])][:args.count]
    if len(picked) < args.count:
        sys.exit(f"only {len(picked)} molecules of the {args.split} split have "
                 f"{args.element} {rng}")
    print("qm9:" + ",".join(str(i) for i in picked))


if __name__ == "__main__":
    main()
