"""The ``rhosr train`` and ``rhosr evaluate`` subcommands.

Registered in :data:`rhosr.cli.main.COMMANDS`; ``torchrun ... -m rhosr train``
runs the training subcommand in every process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rhosr.cli.common import _Formatter, model_file
from rhosr.errors import InputError

# ---------------------------------------------------------------- train


def add_train(sub) -> None:
    from rhosr.nn.config import (
        DEFAULT_BATCH,
        DEFAULT_FINETUNE_LR,
        DEFAULT_LR,
        DEFAULT_STEPS,
        DEFAULT_VAL_EVERY,
        PRESETS,
        TRAIN_PRESET,
    )

    p = sub.add_parser(
        "train", formatter_class=_Formatter,
        help="train a network on a store (whole periodic boxes; torchrun for several processes)",
        description="Train the super-resolution network on the records of a store: loss = NMAE "
                    "per molecule, batch molecules per optimizer step (gradient accumulation), "
                    "AdamW with warm-up and cosine decay, the 48 cube symmetries and periodic "
                    "shifts as augmentation. QM9 records follow the standard split (train on "
                    "1-110000, validate on 110001-120000, never touch the test split); other "
                    "records go to validation by a hash of their id (--val-fraction). Writes "
                    "RUN_DIR/best.pt, RUN_DIR/last.pt (model files that are also checkpoints) "
                    "and RUN_DIR/metrics.csv. Several stores or banks train as one; --mix sets "
                    "the share of each, --ids which molecules train. Fine-tuning on your own "
                    "data without forgetting QM9: rhosr train MINE data/qm9 --init default "
                    "--mix 1 1 --out RUN. Several processes: "
                    "torchrun --nproc-per-node N -m rhosr train ...",
    )
    p.add_argument("store", metavar="STORE", nargs="+",
                   help="training store(s) or bank(s); ids must be unique across them")
    p.add_argument("--mix", type=float, nargs="+", default=None, metavar="W",
                   help="share of training samples from each STORE, one weight per store "
                        "(default: one pool of all their training molecules)")
    p.add_argument("--ids", nargs="+", default=None, metavar="PATTERN",
                   help="only training molecules whose id matches one of these glob patterns "
                        "(e.g. 'qm9_*' 'S-train-01?'); @FILE reads patterns from a file, one "
                        "per line")
    p.add_argument("--val-ids", nargs="+", default=None, metavar="PATTERN",
                   help="the same for the validation molecules")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help=f"model preset (default: {TRAIN_PRESET}, the bake-off's winner, or the --init "
                        "file's)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default: {DEFAULT_STEPS} unless --minutes)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget; the run ends at --steps or --minutes, whichever first")
    p.add_argument("--seed", type=int, default=0, help="seed of init, molecule order, augmentation")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--init", default=None, metavar="MODEL_FILE",
                   help="fine-tune: start from this model file (its architecture)")
    p.add_argument("--freeze", nargs="+", default=[], metavar="PART",
                   help="parts kept fixed: input, body, output, or a module name of the network")
    p.add_argument("--val-store", default=None, metavar="STORE", help="separate validation store")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of non-QM9 records used for validation (by id hash)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: {DEFAULT_LR}; {DEFAULT_FINETUNE_LR} with --init)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"molecules per optimizer step (default: a resumed run's, else "
                        f"{DEFAULT_BATCH['cpu']} on a CPU, where more steps per minute learn "
                        f"fastest, {DEFAULT_BATCH['cuda']} on a GPU)")
    p.add_argument("--val-every", type=int, default=DEFAULT_VAL_EVERY,
                   help="validate and checkpoint every K steps")
    p.add_argument("--val-max", type=int, default=None, help="validate on at most this many molecules")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bf16: forward passes under bfloat16 autocast (weights and optimizer "
                        "float32); auto: bf16 on CUDA, fp32 on a CPU")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=None,
                   help="learning rate: 'cosine' (default) warms up and decays over the budget; "
                        "'constant' warms up for 200 steps and stays at --lr with no horizon, for "
                        "one long run resumed with larger --minutes (a resumed run keeps its own)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999)")
    p.add_argument("--crop", type=int, default=None,
                   help="train on crops of this many coarse points per axis (+ receptive-field halo)")
    p.add_argument("--no-augment", action="store_true", help="no cube symmetries or shifts")
    p.add_argument("--workers", default="auto",
                   help="processes preparing samples ahead (auto: up to 4 on CUDA, 0 on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args) -> int:
    from rhosr.labels.bank import open_labels
    from rhosr.training.loop import train

    workers = args.workers
    if workers != "auto":
        try:
            workers = int(workers)
        except ValueError:
            raise InputError(f"--workers must be an integer or 'auto', not {workers!r}") from None
    for path in [*args.store, args.val_store]:
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{path}: not a rhosr store or bank")
    init = None if args.init is None else model_file(args.init, "--init")
    result = train(
        open_labels(args.store), args.out, preset=args.preset, mix=args.mix,
        ids=_id_patterns(args.ids), val_ids=_id_patterns(args.val_ids), precision=args.precision,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed, resume=args.resume, init=init, freeze=args.freeze,
        val_store=None if args.val_store is None else open_labels(args.val_store),
        val_fraction=args.val_fraction, lr=args.lr, batch=args.batch, val_every=args.val_every,
        device=args.device, ema=args.ema, crop=args.crop, augment=not args.no_augment,
        val_max=args.val_max, progress=not args.no_progress, workers=workers,
        schedule=args.schedule,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best_val_nmae_percent"]
        print(f"rhosr train: {result['steps']} steps in {result['seconds']:.0f} s; "
              f"best validation NMAE {'-' if best is None else f'{best:.3f} %'}; "
              f"model {result['best']}")
    if result["world_size"] > 1:
        # Everything is written and the process group destroyed. Leave without the
        # interpreter's teardown: the gloo backend's background threads can abort a
        # finished rank there ("terminate called without an active exception"), and
        # torchrun would then report the whole run as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _id_patterns(values):
    """--ids values, with @FILE expanded to the file's non-empty lines."""
    if values is None:
        return None
    out = []
    for v in values:
        if v.startswith("@"):
            try:
                lines = Path(v[1:]).read_text().split()
            except OSError as err:
                raise InputError(f"--ids {v}: {err.strerror or err}") from None
            out.extend(lines)
        else:
            out.append(v)
    return out


# ---------------------------------------------------------------- evaluate


def add_evaluate(sub) -> None:

    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter,
        help="NMAE of a model on a store, against the SAD baseline",
        description="Predict every molecule of a split of STORE (whole boxes) and compare with "
                    "the DFT density: NMAE % of the model and of the SAD, error of the electron "
                    "count, seconds. 'val': QM9 110001-120000 and the hashed share of other "
                    "records; 'test': QM9 120001-133885; 'all': every record.",
    )
    p.add_argument("store", metavar="STORE", nargs="+",
                   help="store(s) or bank(s); several are evaluated together, with a summary "
                        "per group (qm9, S, anion, ...)")
    p.add_argument("--model", required=True, metavar="MODEL_FILE", help="model file (e.g. RUN_DIR/best.pt)")
    p.add_argument("--split", choices=("val", "test", "all"), default="val", help="which records")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def run_evaluate(args) -> int:
    from rhosr.inference.evaluate import evaluate, format_table
    from rhosr.labels.bank import open_labels

    model = model_file(args.model, "--model")
    for path in args.store:
        if not Path(path).is_dir():
            raise InputError(f"{path}: not a rhosr store or bank")
    result = evaluate(model, open_labels(args.store), split=args.split, device=args.device,
                      progress=args.progress)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


# ---------------------------------------------------------------- standalone

