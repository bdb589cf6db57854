"""Few-shot fine-tuning beyond QM9: NMAE per group against the number of molecules.

Measures, on the held-out molecules of each group of the beyond-QM9 bank (``data/exotic``:
S, Cl, P, Si, B, anions, cations; ids ``<group>-test-NNN``):

1. zero shot: the start model (default: the bundled one) next to the SAD input, and its
   QM9 test NMAE (``qm9:test/50`` of ``data/qm9``);
2. fine-tuning from it with the first N training molecules of one group (``--sizes``,
   default 10 25 50), mixed with QM9 training molecules of ``data/qm9`` (``--qm9-share`` of
   the samples), for ``--minutes`` each, model chosen on the group's validation molecules
   and the first QM9 validation molecules; then the group's test NMAE and QM9 test NMAE;
3. ``--sweep GROUP N``: instead, what to freeze and which learning rate, on one group and
   size (rows of ``SWEEP``);
4. ``--all N``: instead, one fine-tuning on the first N training molecules of every group
   at once (the candidate for the new default model), evaluated per group and on QM9;
5. ``--joint``: step 2 with every group at once: one run per size N on the first N training
   molecules of every group (runs ``all-N``), each group's row read from it (a seventh of
   the CPU time of step 2).

Each run is ``rhosr train --init MODEL EXOTIC QM9 --mix ... --ids ... --val-ids ...`` (the
command is printed); runs land in ``--out/<group>-<N>`` and resume when found there.
Results go to ``--out/finetune.json`` (runs measured earlier stay unless measured again),
a markdown table to stdout, and with ``--plot PNG`` the curves.

    PYTHONPATH=src python benchmarks/finetune.py --out runs/ft --minutes 10 --plot docs/finetune.png
    PYTHONPATH=src python benchmarks/finetune.py --out runs/ft-sweep --sweep S 25 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.splits import group_of_id, split_of_id  # noqa: E402
from rhosr.inference.evaluate import evaluate  # noqa: E402
from rhosr.inference.predict import default_model_path  # noqa: E402
from rhosr.labels.bank import open_labels  # noqa: E402
from rhosr.training.config import DEFAULT_FINETUNE_LR  # noqa: E402
from rhosr.training.run import train  # noqa: E402

GROUPS = ("S", "Cl", "P", "Si", "B", "anion", "cation")
#: (freeze, learning rate) rows of --sweep
SWEEP = [((), 1e-4), ((), 3e-4), ((), 1e-3), (("input",), 3e-4), (("body",), 3e-4),
         (("output",), 3e-4)]


def group_ids(store, group: str, role: str) -> list[str]:
    """The ids of one group and role in the recipe's order (``S-train-017``, ...)."""
    ids = [i for i in store.ids() if group_of_id(i) == group and split_of_id(i) == role]
    return sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))


def zero_shot(model, exotic, qm9, groups) -> dict:
    """{"groups": {g: {n, nmae, sad}}, "qm9_test": mean NMAE} of the start model."""
    ids = [i for g in groups for i in group_ids(exotic, g, "test")]
    ev = evaluate(model, exotic, ids=ids, device="cpu")
    q = evaluate(model, qm9, split="test", device="cpu")
    return {"groups": ev["summary"]["groups"], "qm9_test": q["summary"]["mean_nmae_percent"],
            "qm9_sad": q["summary"]["mean_sad_nmae_percent"]}


def fine_tune(args, exotic, qm9, group, n, freeze=(), lr=None, name=None) -> dict:
    """One fine-tuning run and its evaluation (a row of the table); ``group`` "all":
    the first ``n`` of every group at once."""
    groups = args.groups if group == "all" else [group]
    per_group = {g: group_ids(exotic, g, "train")[:n] for g in groups}
    short = {g: len(v) for g, v in per_group.items() if len(v) < n}
    if any(c < 0.9 * n for c in short.values()):
        raise SystemExit(f"{args.exotic}: fewer than {n} training molecules: {short}")
    if short:  # a label or two missing (an SCF that did not converge): use what is there
        print(f"note: fewer than {n} training molecules in {short}", flush=True)
    train_ids = [i for v in per_group.values() for i in v]
    run = args.out / (name or f"{group}-{n}")
    share = args.qm9_share
    lr = args.lr if lr is None else lr
    val = [f"{g}-val-*" for g in groups] + ["qm9_*"]
    val_max = args.val_max if group != "all" else args.val_max + 5 * len(groups)
    print(f"rhosr train {args.exotic} {args.qm9} --init {args.model} --out {run} --minutes "
          f"{args.minutes:g} --mix {1 - share:g} {share:g} --ids <the first {n} training molecules "
          f"of {', '.join(groups)}> 'qm9_*' --val-ids {' '.join(repr(v) for v in val)} "
          f"--val-max {val_max} --lr {lr:g}" + (f" --freeze {' '.join(freeze)}" if freeze else "")
          + (f" --ema {args.ema:g}" if args.ema else ""),
          flush=True)
    res = train([args.exotic, args.qm9], run, init=args.model, minutes=args.minutes,
                mix=[1 - share, share], ids=train_ids + ["qm9_*"], val_ids=val, val_max=val_max,
                lr=lr, freeze=freeze, seed=args.seed, val_every=args.val_every, progress=False,
                ema=args.ema,
                resume=(run / "last.pt").exists())
    ev = evaluate(res["best"], exotic, ids=[i for g in groups for i in group_ids(exotic, g, "test")],
                  device="cpu")
    q = evaluate(res["best"], qm9, split="test", device="cpu")
    return {"run": run.name, "group": group, "n": n, "freeze": list(freeze), "lr": lr,
            "minutes": args.minutes, "qm9_share": share, "ema": args.ema, "steps": res["steps"],
            "val_nmae_percent": res["best_val_nmae_percent"],
            "test_nmae_percent": ev["summary"]["mean_nmae_percent"],
            "sad_nmae_percent": ev["summary"]["mean_sad_nmae_percent"],
            "qm9_test_nmae_percent": q["summary"]["mean_nmae_percent"],
            "groups": ev["summary"]["groups"]}


def run_for(result: dict, group: str, n: int):
    """(group test NMAE %, QM9 test NMAE %) after fine-tuning with ``n`` molecules, from the
    group's own run or a ``--joint`` run; None if not measured."""
    r = result["runs"].get(f"{group}-{n}")
    if r is not None:
        return r["test_nmae_percent"], r["qm9_test_nmae_percent"]
    r = result["runs"].get(f"all-{n}")
    if r is not None and group in r["groups"]:
        return r["groups"][group]["mean_nmae_percent"], r["qm9_test_nmae_percent"]
    return None


def table(result: dict) -> str:
    zs = result.get("zero_shot") or {}
    lines = ["| group | SAD % | zero shot % | " + " | ".join(
        f"N = {n} % (QM9 test %)" for n in result["sizes"]) + " |",
        "| --- | --- | --- |" + " --- |" * len(result["sizes"])]
    for g in result["groups"]:
        z = (zs.get("groups") or {}).get(g, {})
        cells = []
        for n in result["sizes"]:
            r = run_for(result, g, n)
            cells.append("-" if r is None else f"{r[0]:.2f} ({r[1]:.2f})")
        lines.append(f"| {g} | {z.get('mean_sad_nmae_percent', float('nan')):.2f} | "
                     f"{z.get('mean_nmae_percent', float('nan')):.2f} | " + " | ".join(cells) + " |")
    if zs:
        lines.append(f"\nQM9 test NMAE of the start model: {zs['qm9_test']:.3f} % "
                     f"(SAD {zs['qm9_sad']:.2f} %)")
    return "\n".join(lines)


def sweep_table(rows) -> str:
    lines = ["| freeze | lr | steps | val NMAE % | test NMAE % | QM9 test NMAE % |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {' '.join(r['freeze']) or 'nothing'} | {r['lr']:g} | {r['steps']} | "
                     f"{r['val_nmae_percent']:.3f} | {r['test_nmae_percent']:.3f} | "
                     f"{r['qm9_test_nmae_percent']:.3f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    zs = (result.get("zero_shot") or {}).get("groups", {})
    for g in result["groups"]:
        done = [(n, run_for(result, g, n)) for n in result["sizes"]]
        done = [(n, r) for n, r in done if r is not None]
        pts = ([(0, zs[g]["mean_nmae_percent"])] if g in zs else []) + [(n, r[0]) for n, r in done]
        q = [(n, r[1]) for n, r in done]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=g)
        if q:
            bx.plot(*zip(*q), marker="o", label=g)
    ax.set(xlabel="fine-tuning molecules of the group", ylabel="held-out NMAE (%)",
           title="each group's held-out molecules")
    bx.set(xlabel="fine-tuning molecules of the group", ylabel="QM9 test NMAE (%)",
           title="QM9 test (qm9:test/50)")
    if result.get("zero_shot"):
        bx.axhline(result["zero_shot"]["qm9_test"], color="k", ls="--", lw=1, label="start model")
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--exotic", default=str(ROOT / "data" / "exotic"))
    ap.add_argument("--qm9", default=str(ROOT / "data" / "qm9"))
    ap.add_argument("--model", default=str(default_model_path()), help="start model file")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS))
    ap.add_argument("--sizes", nargs="*", type=int, default=[10, 25, 50],
                    help="fine-tuning molecules per group (none: the zero shot only)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock minutes per run")
    ap.add_argument("--qm9-share", type=float, default=0.5, help="share of QM9 samples")
    ap.add_argument("--lr", type=float, default=DEFAULT_FINETUNE_LR,
                    help=f"peak learning rate (default {DEFAULT_FINETUNE_LR:g}, rhosr train --init's)")
    ap.add_argument("--ema", type=float, default=None,
                    help="EMA decay of the weights (rhosr train --ema); default: none")
    ap.add_argument("--val-max", type=int, default=15, help="validation molecules per run")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-zero-shot", action="store_true")
    ap.add_argument("--sweep", nargs=2, metavar=("GROUP", "N"), default=None)
    ap.add_argument("--joint", action="store_true",
                    help="one run per size on every group at once (runs all-N)")
    ap.add_argument("--all", type=int, default=None, metavar="N",
                    help="one run on the first N training molecules of every group")
    ap.add_argument("--plot", type=Path, default=None, metavar="PNG")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    exotic, qm9 = open_labels(args.exotic), open_labels(args.qm9)
    if args.all is not None:
        row = fine_tune(args, exotic, qm9, "all", args.all)
        (args.out / "all.json").write_text(json.dumps(row, indent=1))
        print("| group | SAD % | NMAE % |\n| --- | --- | --- |")
        for g, v in row["groups"].items():
            print(f"| {g} | {v['mean_sad_nmae_percent']:.2f} | {v['mean_nmae_percent']:.2f} |")
        print(f"QM9 test NMAE {row['qm9_test_nmae_percent']:.3f} %; model "
              f"{args.out / f'all-{args.all}' / 'best.pt'}")
        return 0
    if args.sweep:
        group, n = args.sweep[0], int(args.sweep[1])
        rows = [fine_tune(args, exotic, qm9, group, n, freeze=f, lr=lr,
                          name=f"{group}-{n}-{'-'.join(f) or 'none'}-{lr:g}") for f, lr in SWEEP]
        (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
        print(sweep_table(rows))
        return 0
    path = args.out / "finetune.json"
    result = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    sizes = sorted(set(args.sizes) | {r["n"] for r in result["runs"].values()})
    result.update(groups=args.groups, sizes=sizes, minutes=args.minutes,
                  qm9_share=args.qm9_share, lr=args.lr, model=args.model)
    if not args.no_zero_shot:
        result["zero_shot"] = zero_shot(args.model, exotic, qm9, args.groups)
        path.write_text(json.dumps(result, indent=1))
    runs = ([("all", n) for n in args.sizes] if args.joint else
            [(g, n) for g in args.groups for n in args.sizes])
    for g, n in runs:
        result["runs"][f"{g}-{n}"] = fine_tune(args, exotic, qm9, g, n)
        path.write_text(json.dumps(result, indent=1))
    print(table(result))
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
