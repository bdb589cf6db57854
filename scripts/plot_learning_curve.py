"""Learning curve of one or more training runs (RUN_DIR/metrics.csv) as a PNG.

    python scripts/plot_learning_curve.py RUN_DIR[+RUN_DIR...] ... -o docs/learning_curve.png \
        [--sad PERCENT] [--target PERCENT] [--chain] [--labels NAME ...]

Training loss (NMAE %, running mean over --window steps) and validation NMAE
(%) against wall-clock minutes, log scale; ``--sad`` draws the SAD baseline
on the same validation molecules as a horizontal line.  ``--chain``: the runs
are consecutive phases of one training (each started with ``--init`` from the
one before), so each run's clock starts where the previous one ended;
``A+B`` chains only the runs A and B, so one figure can hold a chained run
next to another run (one colour per argument, phases in lighter shades).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_metrics(run_dir: Path):
    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    minutes = np.array([float(r["seconds"]) / 60 for r in rows])
    loss = np.array([float(r["loss_nmae_percent"]) for r in rows])
    val = [(float(r["seconds"]) / 60, float(r["val_nmae_percent"])) for r in rows if r["val_nmae_percent"]]
    return minutes, loss, np.array(val).reshape(-1, 2)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders; A+B for consecutive phases")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--sad", type=float, default=None, help="SAD NMAE %% on the validation molecules")
    ap.add_argument("--target", type=float, default=None, help="a target NMAE %% to mark")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--chain", action="store_true",
                    help="all runs are consecutive phases of one training")
    ap.add_argument("--labels", nargs="+", default=None, help="one legend name per argument")
    args = ap.parse_args(argv)
    groups = [[Path(p) for p in arg.split("+")] for arg in args.runs]
    if args.chain:
        groups = [[p for g in groups for p in g]]
    if args.labels is not None and len(args.labels) != len(groups):
        ap.error(f"--labels needs {len(groups)} names")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for gi, group in enumerate(groups):
        offset = 0.0
        name = args.labels[gi] if args.labels else "+".join(p.name for p in group)
        colour = f"C{gi}" if len(groups) > 1 else None
        for i, run in enumerate(group):
            minutes, loss, val = read_metrics(run)
            minutes = minutes + offset
            if len(val):
                val[:, 0] += offset
            if i:
                ax.axvline(offset, color=colour or "grey", ls=":", lw=1)
            if len(minutes):
                offset = float(minutes[-1])
            c = colour or f"C{i}"
            # one argument: a colour and a legend entry per phase; several: per argument
            label = run.name if colour is None and len(group) > 1 else name
            in_legend = i == 0 or colour is None
            w = min(args.window, len(loss))
            smooth = np.convolve(loss, np.ones(w) / w, mode="valid") if w else loss
            ax.plot(minutes[w - 1:], smooth, color=c, alpha=0.35, lw=1,
                    label=f"{label}: training loss (mean of {w} steps)" if in_legend else None)
            if len(val):
                ax.plot(val[:, 0], val[:, 1], "o-", color=c, ms=3,
                        label=f"{label}: validation" if in_legend else None)
    if args.sad is not None:
        ax.axhline(args.sad, color="k", ls="--", lw=1, label=f"SAD baseline ({args.sad:.1f} %)")
    if args.target is not None:
        ax.axhline(args.target, color="C3", ls=":", lw=1, label=f"target ({args.target:g} %)")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
    ax.set_xlabel("wall-clock minutes (2 CPU cores)")
    ax.set_ylabel("NMAE (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
