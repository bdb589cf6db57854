"""NMAE of a model against molecule size: QM9 test molecules, the held-out large molecules
of data/large, binned by atom count, next to the SAD's.

    PYTHONPATH=src python benchmarks/size_accuracy.py [--model default] [--json F] [--plot F]

Evaluates the ``test`` split of every bank given (default: data/qm9, data/large and data/pocket) with
:func:`rhosr.inference.evaluate.evaluate` (the path of ``rhosr predict``) and prints one row
per size bin: molecules, mean and max NMAE of the model, mean NMAE of the SAD.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.inference.evaluate import evaluate  # noqa: E402

BINS = ((1, 29, "QM9 size (<= 29)"), (30, 49, "30-49"), (50, 79, "50-79"), (80, 120, "80-120"),
        (121, 10**6, "> 120"))


def binned(rows) -> list[dict]:
    out = []
    for lo, hi, name in BINS:
        sel = [r for r in rows if lo <= r["atoms"] <= hi]
        if sel:
            err = [r["nmae_percent"] for r in sel]
            out.append({"bin": name, "n": len(sel), "atoms": f"{min(r['atoms'] for r in sel)}-"
                        f"{max(r['atoms'] for r in sel)}", "mean_nmae_percent": float(np.mean(err)),
                        "max_nmae_percent": float(np.max(err)),
                        "mean_sad_nmae_percent": float(np.mean([r["sad_nmae_percent"] for r in sel]))})
    return out


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["atoms"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.semilogx(n, [r["nmae_percent"] for r in rows], "o", color="C0", label="bundled model")
    ax.semilogx(n, [r["sad_nmae_percent"] for r in rows], "s", color="C7", alpha=0.5, label="SAD (its input)")
    ax.set_xlabel("atoms")
    ax.set_ylabel("NMAE, % (held-out molecules)")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("banks", nargs="*", default=[str(ROOT / "data" / n) for n in ("qm9", "large", "pocket")])
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    model = args.model
    if model == "default":
        from rhosr.inference.predict import default_model_path

        model = str(default_model_path())
    rows = []
    for bank in args.banks:
        res = evaluate(model, bank, split="test", device="cpu")
        rows += res["molecules"]
    print(f"{'atoms':<18} {'n':>3} {'range':>9} {'NMAE %':>8} {'max %':>7} {'SAD %':>7}")
    table = binned(rows)
    for b in table:
        print(f"{b['bin']:<18} {b['n']:>3} {b['atoms']:>9} {b['mean_nmae_percent']:>8.3f} "
              f"{b['max_nmae_percent']:>7.3f} {b['mean_sad_nmae_percent']:>7.2f}")
    for r in rows:
        if r["atoms"] >= 30:
            print(f"  {r['id']:<22} {r['atoms']:>4} atoms  NMAE {r['nmae_percent']:.3f} %  "
                  f"SAD {r['sad_nmae_percent']:.2f} %  {r['seconds']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"bins": table, "molecules": rows}, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
