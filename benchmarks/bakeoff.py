"""Accuracy per CPU-minute: network designs trained under one fixed protocol on the bank.

Every row trains one design from scratch with :func:`rhosr.training.run.train` on the same
molecules (the bank's training split), validates on the same molecules (its validation
split), for the same wall-clock minutes (``--minutes``, default 60), with the same seed,
batch and schedule; then evaluates the row's best checkpoint (chosen on validation) on
the bank's test split (``qm9:test/50``).  A row reports validation and test NMAE,
steps, seconds per step, parameters and inference seconds per test molecule.  Rows
run one after the other in this process (``--rows``); a row killed part-way resumes
where it stopped when run again into the same ``--out``.  ``--threads N`` gives each
row N CPU threads, so equal minutes are equal CPU-minutes: on two cores, two processes
with ``--threads 1`` and different rows measure two rows at once.  ``--out/bakeoff.json``
collects the rows (re-read before each write, so processes sharing ``--out`` keep each
other's rows; rows measured earlier stay unless measured again); ``--plot PNG`` draws
the learning curves (validation NMAE against minutes, from each run's ``metrics.csv``).
Equal minutes compare only when every row ran under the same load: run it with no
labelling, training or tests beside it.

    PYTHONPATH=src python benchmarks/bakeoff.py data/qm9 --out runs/bakeoff --minutes 60 \\
        --threads 1 --rows sr-narrow unet &
    PYTHONPATH=src python benchmarks/bakeoff.py data/qm9 --out runs/bakeoff --minutes 60 \\
        --threads 1 --rows sr-elements sr-fine --plot docs/bakeoff.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.inference.evaluate import evaluate  # noqa: E402
from rhosr.nn.nets import build, count_parameters  # noqa: E402
from rhosr.training.run import train  # noqa: E402

#: row -> (what it tests, model config, other options of rhosr.training.run.train)
ROWS = {
    "sr-narrow": ("the design bundled until 2026-12-04, from scratch (baseline)", "sr-narrow", {}),
    "sr-narrow-bf16": ("the same, forward passes in bfloat16 on the CPU (--precision bf16)",
                       "sr-narrow", {"precision": "bf16"}),
    "unet": ("multi-scale body: coarse mesh + 2 coarser levels, 16/40/80 channels", "unet", {}),
    "sr-elements": ("element-aware input: SAD split into H, C, N, O, F, other channels",
                    "sr-elements", {}),
    "sr-fine": ("near the nuclei: point-wise fine-mesh terms z_k sqrt(SAD_fine)^k, k = 1, 2",
                "sr-fine", {}),
    "unet-elements-fine": ("the three changes together",
                           {"preset": "unet", "inputs": "sad+elements", "fine_channels": 2}, {}),
    "tiny": ("a tiny net, for smoke tests of this script", "tiny", {}),
}


def curve(run: Path) -> list[tuple[float, float]]:
    """(minutes, validation NMAE %) of a run's metrics.csv."""
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as fh:
        return [(float(r["seconds"]) / 60, float(r["val_nmae_percent"])) for r in csv.DictReader(fh)
                if r.get("val_nmae_percent") not in (None, "")]


def load_rows(path: Path) -> dict:
    """Rows recorded in ``bakeoff.json`` so far, by name."""
    return {r["row"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}


def run_row(args, name: str) -> dict:
    desc, cfg, options = ROWS[name]
    run = args.out / name
    res = train(args.bank, run, preset=cfg, minutes=args.minutes, seed=args.seed, batch=args.batch,
                val_every=args.val_every, progress=False, resume=(run / "last.pt").exists(),
                device=args.device, **options)
    ev = evaluate(res["best"], args.bank, split="test", device=args.device)
    seconds = [m["seconds"] for m in ev["molecules"]]
    return {"row": name, "design": desc, "config": cfg if isinstance(cfg, dict) else {"preset": cfg},
            "options": options,
            "parameters": count_parameters(build(cfg)), "minutes": args.minutes,
            "train_molecules": res["train_molecules"], "val_molecules": res["val_molecules"],
            "steps": res["steps"], "s_per_step": res["seconds"] / max(res["steps"], 1),
            "val_nmae_percent": res["best_val_nmae_percent"],
            "test_nmae_percent": ev["summary"]["mean_nmae_percent"],
            "test_sad_nmae_percent": ev["summary"]["mean_sad_nmae_percent"],
            "test_molecules": ev["summary"]["n"],
            "inference_s_per_molecule": sum(seconds) / len(seconds),
            "curve": curve(run)}


def table(rows) -> str:
    lines = ["| row | design | parameters | steps | s/step | val NMAE % | test NMAE % | "
             "inference s/mol |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['design']} | {r['parameters']:,} | {r['steps']} | "
                     f"{r['s_per_step']:.2f} | {r['val_nmae_percent']:.3f} | "
                     f"{r['test_nmae_percent']:.3f} | {r['inference_s_per_molecule']:.2f} |")
    if rows:
        r = rows[0]
        lines.append(f"\n{r['train_molecules']} training, {r['val_molecules']} validation, "
                     f"{r['test_molecules']} test molecules; {r['minutes']:g} minutes per row; "
                     f"SAD on the test molecules {r['test_sad_nmae_percent']:.2f} %")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"]), label=r["row"])
    ax.set(xlabel="training minutes (wall clock)", ylabel="validation NMAE (%)", yscale="log",
           title="bake-off: same data, seed and budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bank", help="label bank or store (data/qm9)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock minutes per row")
    ap.add_argument("--rows", nargs="+",
                    default=["sr-narrow", "sr-narrow-bf16", "unet", "sr-elements", "sr-fine"],
                    choices=sorted(ROWS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads per row (torch.set_num_threads); default: torch's choice")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG")
    args = ap.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bakeoff.json"
    for name in args.rows:
        row = dict(run_row(args, name), threads=args.threads)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        rows = dict(load_rows(path), **{name: row})
        path.write_text(json.dumps(list(rows.values()), indent=1))
    rows = load_rows(path)
    print(table(list(rows.values())))
    if args.plot:
        plot(list(rows.values()), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
