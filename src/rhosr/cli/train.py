"""The ``rhosr train`` and ``rhosr evaluate`` subcommands.

Registered in :data:`rhosr.cli.main.COMMANDS`; ``torchrun ... -m rhosr train``
runs the training subcommand in every process.  ``rhosr train`` states no default of its
own: every option's default and resume rule come from :mod:`rhosr.training.config`, and
only the options a user gives reach :func:`rhosr.training.run.train` (so that a resume
inherits the others).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rhosr.cli.common import Formatter, model_file
from rhosr.errors import InputError
from rhosr.nn.config import PRESETS, TRAIN_PRESET
from rhosr.training.config import (
    DEFAULT_BATCH,
    DEFAULT_FINETUNE_LR,
    DEFAULT_LR,
    DEFAULT_STEPS,
    FIXED,
    PRECISIONS,
    RENEWABLE,
    RESUME,
    default_of,
    flag_of,
)
from rhosr.training.schedule import SCHEDULES

# ---------------------------------------------------------------- train

#: What ``--help`` says a resume does with an option (rhosr.training.config.RESUME).
_RESUME_NOTE = {FIXED: "a resume keeps the run's and refuses another",
                RENEWABLE: "a resume keeps the run's unless given"}


def _option(p, name: str, help: str, default: str | None = None, **kw) -> None:
    """Add the flag of option ``name``: no argparse default (only what the user gives
    reaches train()), its default and resume rule said in the help from TrainConfig."""
    shown = default if default is not None else default_of(name)
    notes = [] if shown in (None, "") else [f"default: {shown}"]
    if RESUME[name] in _RESUME_NOTE:
        notes.append(_RESUME_NOTE[RESUME[name]])
    text = help + (f" ({'; '.join(notes)})" if notes else "")
    p.add_argument(flag_of(name), dest=name, default=argparse.SUPPRESS, help=text, **kw)


def add_train(sub) -> None:
    p = sub.add_parser(
        "train", formatter_class=Formatter,
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
                    "--mix 1 1 --out RUN. --resume continues RUN_DIR/last.pt: options not given "
                    "are the run's (the seed, batch, schedule, network, ... are always the "
                    "run's; --lr, --ema, --precision and the molecule selection may change), the "
                    "budget, device and workers are this call's. Several processes: "
                    "torchrun --nproc-per-node N -m rhosr train ...",
    )
    p.add_argument("store", metavar="STORE", nargs="+",
                   help="training store(s) or bank(s); ids must be unique across them")
    _option(p, "mix", "share of training samples from each STORE, one weight per store",
            default="one pool of all their training molecules", type=float, nargs="+",
            metavar="W")
    _option(p, "ids", "only training molecules whose id matches one of these glob patterns "
                      "(e.g. 'qm9_*' 'S-train-01?'); @FILE reads patterns from a file, one per "
                      "line", default="all", nargs="+", metavar="PATTERN")
    _option(p, "val_ids", "the same for the validation molecules", default="all", nargs="+",
            metavar="PATTERN")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    _option(p, "preset", "model preset", choices=sorted(PRESETS),
            default=f"{TRAIN_PRESET}, the bake-off's winner, or the --init file's")
    _option(p, "steps", "optimizer steps", type=int,
            default=f"{DEFAULT_STEPS} unless --minutes")
    _option(p, "minutes", "wall-clock budget; the run ends at --steps or --minutes, whichever "
                          "first", type=float)
    _option(p, "seed", "seed of init, molecule order, augmentation", type=int)
    _option(p, "resume", "continue from RUN_DIR/last.pt", action="store_true", default="")
    _option(p, "init", "fine-tune: start from the architecture and weights of this model file, "
                       "or of the bundled model with 'default'", default="", metavar="MODEL_FILE")
    _option(p, "freeze", "parts kept fixed: input, body, output, or a module name of the "
                         "network", default="none", nargs="+", metavar="PART")
    _option(p, "val_store", "separate validation store", metavar="STORE")
    _option(p, "val_fraction", "share of non-QM9 records used for validation, by id hash",
            type=float)
    _option(p, "lr", "peak learning rate", type=float,
            default=f"{DEFAULT_LR}; {DEFAULT_FINETUNE_LR} with --init")
    _option(p, "batch", "molecules per optimizer step", type=int,
            default=f"{DEFAULT_BATCH['cpu']} on a CPU, where more steps per minute learn fastest, "
                    f"{DEFAULT_BATCH['cuda']} on a GPU")
    _option(p, "val_every", "validate and checkpoint every K steps", type=int)
    _option(p, "val_max", "validate on at most this many molecules", type=int, default="all")
    _option(p, "device", "auto (cuda if available), cpu, cuda, cuda:N")
    _option(p, "precision", "bf16: forward passes under bfloat16 autocast (weights and optimizer "
                            "float32); auto: bf16 on CUDA and on a CPU with AMX or AVX-512 BF16 (1.6x "
                            "the steps per minute, the same accuracy per step), fp32 on other CPUs",
            choices=PRECISIONS)
    _option(p, "schedule", "learning rate: 'cosine' warms up and decays over the budget; "
                           "'constant' warms up for 200 steps and stays at --lr with no horizon, "
                           "for one long run resumed with larger --minutes", choices=SCHEDULES)
    _option(p, "ema", "keep an exponential moving average of the weights, e.g. 0.999",
            type=float, metavar="DECAY", default="none")
    _option(p, "crop", "train on crops of this many coarse points per axis, plus the "
                       "receptive-field halo", type=int, default="whole boxes")
    _option(p, "augment", "no cube symmetries or shifts", action="store_false", default="")
    _option(p, "workers", "processes preparing samples ahead; auto: up to 4 on CUDA, 0 on a CPU")
    _option(p, "progress", "no progress bar", action="store_false", default="")


def run_train(args) -> int:
    from rhosr.labels.bank import open_labels
    from rhosr.training.run import train

    options = {k: v for k, v in vars(args).items() if k in RESUME}
    if "workers" in options and options["workers"] != "auto":
        try:
            options["workers"] = int(options["workers"])
        except ValueError:
            raise InputError(f"--workers must be an integer or 'auto', not {options['workers']!r}") from None
    for path in [*args.store, options.get("val_store")]:
        if path is not None and not Path(path).is_dir():
            raise InputError(f"{path}: not a rhosr store or bank")
    if "init" in options:
        options["init"] = model_file(options["init"], "--init")
    for name in ("ids", "val_ids"):
        if name in options:
            options[name] = _id_patterns(options[name])
    result = train(open_labels(args.store), args.out, **options)
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
        "evaluate", formatter_class=Formatter,
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

