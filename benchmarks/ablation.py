"""Ablation of the default network: equal wall-clock budgets, same data, same seed.

Each row trains one variant with :func:`rhosr.training.run.train` for ``--minutes``
on the training molecules of STORE (standard QM9 split) and validates on its
validation molecules; the table lists the change, parameters, steps reached,
seconds per step, and the best validation NMAE next to the SAD baseline of the
same validation molecules.  Rows run one after the other in this process, so
their times compare; runs land in ``--out/<row>``.  ``--out/ablation.json``
collects the rows: rows measured by an earlier invocation into the same
``--out`` stay in it (and in the printed table) unless measured again.

    PYTHONPATH=src python benchmarks/ablation.py STORE --out DIR [--minutes 5] [--rows ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.inference.evaluate import evaluate  # noqa: E402
from rhosr.nn.nets import build, count_parameters  # noqa: E402
from rhosr.training.run import train  # noqa: E402

#: name -> (description, model config)
ROWS = {
    "sr": ("sr (C = 32): sqrt(SAD) in, correction to sqrt of fine-mesh SAD out (sad-residual)",
           {"preset": "sr"}),
    "no-sqrt": ("input SAD without the square root", {"preset": "sr", "input_transform": "none"}),
    "relu-out": ("correction added to the fine-mesh SAD itself, ReLU (no square)",
                 {"preset": "sr", "output": "relu"}),
    "no-sad-residual": ("density itself: same body, pixel-shuffle upsampling, no fine-mesh SAD "
                        "(srresnet layout without norms, K=3)",
                        {"arch": "srresnet", "channels": 32, "blocks": 6, "kernel_in": 3, "kernel": 3,
                         "norm": "none", "input_transform": "sqrt", "output": "softplus"}),
    "narrow": ("C = 16 instead of 32", {"preset": "sr", "channels": 16}),
    "shallow": ("3 residual blocks instead of 6", {"preset": "sr", "blocks": 3}),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rows", nargs="+", default=["sr", "no-sqrt", "no-sad-residual"],
                    choices=sorted(ROWS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    results = []
    for name in args.rows:
        desc, cfg = ROWS[name]
        run = args.out / name
        res = train(args.store, run, preset=cfg, minutes=args.minutes, seed=args.seed,
                    batch=args.batch, val_every=args.val_every, progress=False,
                    resume=(run / "last.pt").exists())
        ev = evaluate(run / "best.pt", args.store, split="val", device="cpu")
        row = {"row": name, "change": desc, "parameters": count_parameters(build(cfg)),
               "steps": res["steps"], "seconds": res["seconds"],
               "s_per_step": res["seconds"] / max(res["steps"], 1),
               "val_nmae_percent": ev["summary"]["mean_nmae_percent"],
               "sad_nmae_percent": ev["summary"]["mean_sad_nmae_percent"]}
        results.append(row)
        print(json.dumps(row), flush=True)
    # rows measured earlier into the same --out (other invocations) stay in the table
    table = args.out / "ablation.json"
    earlier = json.loads(table.read_text()) if table.exists() else []
    done = {r["row"] for r in results}
    results = [r for r in earlier if r["row"] not in done] + results
    print(f"\n| row | change | parameters | steps in {args.minutes:g} min | s/step | val NMAE % | SAD % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['row']} | {r['change']} | {r['parameters']:,} | {r['steps']} | {r['s_per_step']:.2f} "
              f"| {r['val_nmae_percent']:.2f} | {r['sad_nmae_percent']:.2f} |")
    table.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
