"""The bundled model's whole training history as one learning curve, with a fitted trend.

    python scripts/training_history.py -o docs/training_history.png [--json docs/training_history.json]

Validation NMAE against cumulative training minutes (2 CPU cores) since the bake-off: the
bundled model's phases before the long run (their ends, from the ``phases`` of its model
file; phase 1 was
validated on QM9 molecules only, phases 2 and 3 on the 50 molecules of the long run) and then
the long run (models/long/metrics-unet.csv, its `unet` part to step 17200, then
models/long/metrics.csv, its `unet-charge` part; the same 50 molecules), whose clock starts
where the phases ended (wall minutes of the run; a step longer than 5 minutes, a pause, counts as
one typical step). A power law NMAE = a·t^(-b) is fitted by least squares in log-log to the
validation points on those 50 molecules (phase 3's end and the long run's); the script prints
it and what it predicts at 10x and 100x today's minutes, the latter about what a GPU gives in
the time two CPU cores take for today's (a power law has no floor, so the predictions are
optimistic where the curve flattens).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def history(model_path: Path, metrics: list):
    """(phase ends [(minutes, val, name)], long-run points [(minutes, val)]), cumulative minutes."""
    import torch

    extra = torch.load(model_path, weights_only=True, map_location="cpu")["extra"]
    ends, clock = [], 0.0
    for k, ph in enumerate(extra["phases"]):
        if ph["run"] in ("long", "cool"):  # the long run and its cooldown branches (runs/cool),
            continue                       # drawn from the run's metrics below
        clock += float(ph["seconds"]) / 60
        ends.append((clock, float(ph["best_val_nmae_percent"]), f"phase {k + 1} ({ph['run']})"))
    rows, dts = [], []
    for path in (p for p in metrics if Path(p).is_file()):
        part = list(csv.DictReader(open(path)))
        rows += part  # each file's clock starts at its run's start
        dts.append(np.diff(np.array([float(r["seconds"]) for r in part]), prepend=0.0))
    # the run's clock is wall time: a pause (SIGSTOP while something else was timed, or a
    # gap between sessions) shows as one long step; count such steps as a typical one
    dt = np.concatenate(dts)
    typical = float(np.median(dt[1:])) if len(dt) > 1 else 0.0
    dt = np.where(dt > max(20 * typical, 300.0), typical, dt)
    clock_min = clock + np.cumsum(dt) / 60
    points = [(float(m), float(r["val_nmae_percent"])) for m, r in zip(clock_min, rows)
              if r["val_nmae_percent"]]
    return ends, points


def fit(points):
    """(a, b) of NMAE = a t^-b, least squares in log-log."""
    t, v = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    slope, log_a = np.polyfit(t, v, 1)
    return float(np.exp(log_a)), float(-slope)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=ROOT / "src" / "rhosr" / "models" / "default.pt")
    ap.add_argument("--metrics", type=Path, nargs="+",
                    default=[ROOT / "models" / "long" / n for n in ("metrics-unet.csv", "metrics.csv")],
                    help="the long run's metrics files in order (their clocks continue each other)")
    args = ap.parse_args(argv)
    ends, points = history(args.model, args.metrics)
    same_50 = [ends[-1][:2]] + points
    a, b = fit(same_50)
    now = same_50[-1][0]
    pred = {f"{k}x": {"minutes": k * now, "val_nmae_percent": a * (k * now) ** -b} for k in (1, 10, 100)}
    print(f"fit: NMAE = {a:.3f} * minutes^-{b:.4f} over {len(same_50)} points, "
          f"{same_50[0][0]:.0f}-{now:.0f} minutes")
    for k, p in pred.items():
        print(f"  {k:>4} ({p['minutes']:.0f} min): {p['val_nmae_percent']:.3f} %")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, v, name in ends:
        ax.plot(m, v, "s", color="C1")
        ax.annotate(name, (m, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    t, v = zip(*points)
    ax.plot(t, v, ".-", color="C0", label="long run (same 50 validation molecules)")
    grid = np.geomspace(same_50[0][0], 100 * now, 200)
    ax.plot(grid, a * grid ** -b, "--", color="C3",
            label=f"fit {a:.2f}·t^-{b:.3f}: {pred['10x']['val_nmae_percent']:.2f} % at 10×, "
                  f"{pred['100x']['val_nmae_percent']:.2f} % at 100×")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative training minutes (wall; 2 CPU cores, 1 beside labelling)")
    ax.set_ylabel("validation NMAE, %")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    if args.json:
        args.json.write_text(json.dumps({"phases": ends, "long_run": points, "fit": {"a": a, "b": b},
                                         "predictions": pred}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
