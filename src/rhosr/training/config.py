"""The options of a training run: :class:`TrainConfig` (every option and its default),
their checks, and :data:`RESUME`, the one table of what a resume does with each.

Plain data without torch, so that ``rhosr train --help`` builds its parser from here
(:mod:`rhosr.cli.train` states no default of its own: it passes on only the options a user
gave, and a resume inherits the rest as :data:`RESUME` says).

A resumed run (``resume=True`` with ``RUN_DIR/last.pt``) treats each option as one of

* ``"fixed"``: the run's own.  Absent, it is inherited from the checkpoint; given with
  another value, the resume is refused with a one-line :class:`~rhosr.errors.InputError`.
  These decide the network, the order of the molecules and what every step computes, so a
  resume without ``--seed`` continues the run's own molecule order.
* ``"renewable"``: inherited unless given anew (the learning rate, the EMA decay, the
  precision, which molecules train and validate).  ``precision`` is renewable so that one
  run can go on on CPUs with and without bf16.
* ``"per call"``: this call's budget and machinery (steps, minutes, devices, workers, ...);
  never inherited.

Options a checkpoint does not record (checkpoints written before the option existed) are
unknown: whatever is given, else the default, is used.  A checkpoint without ``schedule``
predates the ``constant`` schedule and is ``"cosine"``.
"""

from __future__ import annotations

import filecmp
import math
import os
from dataclasses import dataclass, fields, replace

from rhosr.errors import InputError
from rhosr.nn.config import make_config
from rhosr.training.schedule import SCHEDULES

#: Learning rate of a fresh training, and of a fine-tuning (``init``): 3e-4 learned new
#: elements and charges best in the freeze / learning-rate sweep of docs/benchmarks.md
#: (1e-4 and 1e-3 were worse on validation).
DEFAULT_LR = 1e-3
DEFAULT_FINETUNE_LR = 3e-4
#: Molecules per optimizer step when none is given: on a CPU one (more optimizer steps per
#: minute learn fastest there: 1.738 % against 2.157 % validation NMAE for batch 2 after the
#: same 90 minutes, docs/training-log.md); on a GPU four.
DEFAULT_BATCH = {"cpu": 1, "cuda": 4}
DEFAULT_VAL_EVERY = 200
#: Steps of a run given neither ``steps`` nor ``minutes``.
DEFAULT_STEPS = 1000
#: ``precision``: bf16 autocast or float32 (auto: bf16 on CUDA and on a CPU with AMX or
#: AVX-512 BF16, where it is 1.6x faster per step at the same validation per step;
#: docs/benchmarks.md "bf16 against fp32").
PRECISIONS = ("auto", "bf16", "fp32")
#: CPU flags (Linux /proc/cpuinfo) of bfloat16 matrix hardware
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises AMX or AVX-512 BF16 (False where it cannot be read)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return False

FIXED, RENEWABLE, PER_CALL = "fixed", "renewable", "per call"

#: What a resume does with each option of :class:`TrainConfig` (see the module docstring).
RESUME = {
    # the network: architecture, start weights, what trains
    "preset": FIXED, "init": FIXED, "freeze": FIXED,
    # what every step computes: molecule order, augmentation, crops, the update
    "seed": FIXED, "batch": FIXED, "schedule": FIXED, "warmup": FIXED,
    "weight_decay": FIXED, "clip": FIXED, "augment": FIXED, "crop": FIXED,
    "sad_variant": FIXED,
    # which molecules may train at all (the rest validate)
    "val_fraction": FIXED,
    # the run's unless given anew
    "lr": RENEWABLE, "ema": RENEWABLE, "precision": RENEWABLE,
    "mix": RENEWABLE, "ids": RENEWABLE, "val_ids": RENEWABLE, "val_max": RENEWABLE,
    "val_store": RENEWABLE,
    # this call's: budget, logging, machinery
    "steps": PER_CALL, "minutes": PER_CALL, "stop_after": PER_CALL, "val_every": PER_CALL,
    "checkpoint_every": PER_CALL, "checkpoint_minutes": PER_CALL, "resume": PER_CALL,
    "device": PER_CALL, "workers": PER_CALL, "cache": PER_CALL, "progress": PER_CALL,
}

#: Options whose None means "chosen when the run starts": passed as None, they count as not
#: given (a resume inherits them).
CHOSEN_AT_START = ("preset", "batch", "lr")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of :func:`rhosr.training.run.train`, with its default.

    Network
        ``preset``: model preset name or config dict (None: ``rhosr.nn.config.TRAIN_PRESET``,
        or with ``init`` the file's architecture).  ``init``: model file to fine-tune from
        (config and weights).  ``freeze``: parts kept fixed, see
        :func:`rhosr.training.loop.freeze_parameters`.
    Steps
        ``seed``: model initialisation, molecule order, augmentations.  ``batch``: molecules
        per optimizer step (gradient accumulation; None: :data:`DEFAULT_BATCH` for the
        device).  ``lr``: peak learning rate (None: :data:`DEFAULT_LR`,
        :data:`DEFAULT_FINETUNE_LR` with ``init``).  ``schedule``: "cosine" (``warmup``
        share of the budget, then a cosine decay over ``steps``/``minutes``) or "constant"
        (200 warm-up steps, then ``lr`` with no horizon, so that a run resumed with a
        larger budget goes on as one schedule).  ``weight_decay`` (AdamW, weights of
        dimension > 1), ``clip`` (gradient norm; 0 or None: none).  ``ema``: decay of an
        exponential moving average of the weights, used for validation and saved as the
        model weights (None: none).  ``precision``: "bf16" (forward passes under bfloat16
        autocast; weights, gradients and optimizer float32), "fp32", or "auto" (bf16 on
        CUDA).
    Samples
        ``augment``: a random cube symmetry and periodic shift per sample.  ``crop``: train
        on crops of this many coarse points per axis (plus the receptive-field halo; local
        networks only).  ``sad_variant``: of the input SAD.  ``cache``: see
        :class:`rhosr.training.data.DensityDataset`.  ``workers``: processes preparing
        samples ahead ("auto": up to 4 on CUDA, 0 on a CPU).
    Molecules
        Training records: QM9 ids and ids that name their split (split 'train' only), and
        other ids but the ``val_fraction`` hashed to validation.  Validation: the 'val'
        records, or with ``val_store`` (a store, bank or path) that store's records
        ('test' excluded).  ``mix``: with several stores, the share of training samples
        from each (one weight per store; None: one pool).  ``ids``, ``val_ids``: glob
        patterns (``fnmatch``) the training / validation ids must match.  ``val_max``:
        validate on at most this many molecules (the first by id).
    Budget and checkpoints
        ``steps``, ``minutes``: the run ends at whichever comes first (neither:
        :data:`DEFAULT_STEPS` steps); the cosine schedule spans the same budget.
        ``stop_after``: end after this step as if interrupted (the schedule still spans
        ``steps``).  ``val_every``: validate (and write ``last.pt``) every this many steps
        and at the end.  ``checkpoint_every`` (None: ``val_every``), ``checkpoint_minutes``:
        also write ``last.pt`` that often.  ``resume``: continue from ``RUN_DIR/last.pt``
        (a fresh start without one).  ``device``: "auto", "cpu", "cuda", "cuda:N".
        ``progress``: a progress bar.
    """

    preset: object = None
    init: str | None = None
    freeze: tuple = ()
    seed: int = 0
    batch: int | None = None
    lr: float | None = None
    schedule: str = "cosine"
    warmup: float = 0.05
    weight_decay: float = 1e-4
    clip: float | None = 1.0
    ema: float | None = None
    precision: str = "auto"
    augment: bool = True
    crop: int | None = None
    sad_variant: str = "paper"
    cache: object = True
    workers: object = "auto"
    val_store: object = None
    val_fraction: float = 0.1
    mix: tuple | None = None
    ids: tuple | None = None
    val_ids: tuple | None = None
    val_max: int | None = None
    steps: int | None = None
    minutes: float | None = None
    stop_after: int | None = None
    val_every: int = DEFAULT_VAL_EVERY
    checkpoint_every: int | None = None
    checkpoint_minutes: float = 10.0
    resume: bool = False
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        for name in ("freeze", "mix", "ids", "val_ids", "crop"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        if self.freeze is None:
            object.__setattr__(self, "freeze", ())
        if self.init is not None:
            object.__setattr__(self, "init", str(self.init))
        check(self)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _at_least(c: TrainConfig, name: str, low, strict: bool = False) -> None:
    value = getattr(c, name)
    if value is not None:
        ok = value > low if strict else value >= low
        _need(ok, f"{name} must be {'>' if strict else '>='} {low}, got {value}")


def check(c: TrainConfig) -> None:
    """Raise a one-line InputError for option values no run can use."""
    _need(c.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {c.schedule!r}")
    _need(c.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {c.precision!r}")
    for name in ("batch", "val_every", "steps", "checkpoint_every", "stop_after"):
        _at_least(c, name, 1)
    crops = c.crop if isinstance(c.crop, tuple) else (c.crop,)
    _need(c.crop is None or (len(crops) in (1, 3) and min(crops) >= 1),
          f"crop must be a positive int or 3 of them, got {c.crop!r}")
    for name in ("minutes", "lr", "checkpoint_minutes"):
        _at_least(c, name, 0, strict=True)
    for name in ("weight_decay", "clip", "val_max"):
        _at_least(c, name, 0)
    _need(0.0 <= float(c.val_fraction) < 1.0, f"val_fraction must be in [0, 1), got {c.val_fraction}")
    _need(0.0 <= float(c.warmup) < 1.0, f"warmup must be in [0, 1), got {c.warmup}")
    _need(c.ema is None or 0.0 < float(c.ema) < 1.0, f"ema decay must be in (0, 1), got {c.ema}")
    _need(c.cache in (True, False, "all"), f"cache must be True, False or 'all', got {c.cache!r}")
    _need(c.workers == "auto" or (isinstance(c.workers, int) and c.workers >= 0),
          f"workers must be an integer >= 0 or 'auto', got {c.workers!r}")
    if c.mix is not None:
        _need(all(math.isfinite(w) and w >= 0 for w in c.mix) and sum(c.mix) > 0,
              f"--mix weights must be >= 0 with a positive sum, got {list(c.mix)}")
    if c.preset is not None:
        try:
            make_config(c.preset)
        except ValueError as exc:
            raise InputError(str(exc)) from None


#: The defaults, as a config.
DEFAULTS = TrainConfig()


def default_of(name: str):
    """The default of option ``name``."""
    return getattr(DEFAULTS, name)


def flag_of(name: str) -> str:
    """The ``rhosr train`` flag of option ``name``."""
    return {"augment": "--no-augment", "progress": "--no-progress"}.get(
        name, "--" + name.replace("_", "-"))


def given_options(config: TrainConfig | None = None, **options) -> tuple[TrainConfig, frozenset]:
    """(TrainConfig, names of the options given) of :func:`rhosr.training.run.train`'s
    arguments: the ``options`` passed, and the fields of ``config`` that differ from the
    defaults; an option of :data:`CHOSEN_AT_START` passed as None counts as not given."""
    unknown = sorted(set(options) - set(RESUME))
    if unknown:
        raise TypeError(f"train() got unexpected option(s) {unknown}; known: {sorted(RESUME)}")
    base = DEFAULTS if config is None else config
    given = {f.name for f in fields(base) if getattr(base, f.name) != getattr(DEFAULTS, f.name)}
    given |= {k for k, v in options.items() if not (v is None and k in CHOSEN_AT_START)}
    return replace(base, **options), frozenset(given)


def saved_options(record: dict) -> dict:
    """The options a checkpoint record holds that a resume may inherit, as TrainConfig
    values (``preset``: the run's network config as a dict).  Per-call options and options
    the checkpoint does not record are left out."""
    args = (record.get("training") or {}).get("args") or {}
    saved = {k: v for k, v in args.items() if RESUME.get(k) in (FIXED, RENEWABLE)}
    saved.setdefault("schedule", "cosine")  # written before the 'constant' schedule existed
    saved["preset"] = dict(record["config"])
    for name in ("freeze", "mix", "ids", "val_ids"):
        if saved.get(name) is not None:
            saved[name] = tuple(saved[name])
    return saved


def _same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` are one file, or two files with the same bytes (a
    model file copied with a snapshot of the code)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except (OSError, TypeError):
        return False


def same_option(name: str, given, saved) -> bool:
    """Whether a given option's value is the run's (``preset``: the same network; ``init``:
    the same path or a file with the same bytes)."""
    if name == "preset":
        try:
            return make_config(given) == make_config(saved)
        except ValueError:
            return False
    if name == "init" and given is not None and saved is not None:
        return str(given) == str(saved) or _same_file(given, saved)
    return given == saved


def resumed(config: TrainConfig, given, saved: dict) -> TrainConfig:
    """The options of a resumed run: the ``config`` of this call, with the checkpoint's
    ``saved`` options (:func:`saved_options`) inherited where :data:`RESUME` says;
    InputError (one line, naming the option) for a fixed option given with another value."""
    changes = {}
    for name, value in saved.items():
        if name not in given:
            changes[name] = value
        elif RESUME[name] == FIXED and not same_option(name, getattr(config, name), value):
            what = ("network differs from preset" if name == "preset"
                    else f"{name} is {value!r}, not")
            raise InputError(f"--resume: the run's {what} {getattr(config, name)!r} (a resumed run "
                             f"keeps its {name}: leave {flag_of(name)} out)")
    return replace(config, **changes)


def resolved(config: TrainConfig, device_type: str) -> TrainConfig:
    """``config`` with what is chosen at the start filled in for a run on ``device_type``:
    batch, lr, steps (when neither steps nor minutes), checkpoint_every, and precision
    ("bf16" or "fp32")."""
    bf16 = config.precision == "bf16" or (
        config.precision == "auto" and (device_type == "cuda" or cpu_has_bf16()))
    lr = config.lr
    if lr is None:
        lr = DEFAULT_FINETUNE_LR if config.init is not None else DEFAULT_LR
    no_budget = config.steps is None and config.minutes is None
    return replace(
        config, batch=int(config.batch or DEFAULT_BATCH.get(device_type, 1)), lr=float(lr),
        steps=DEFAULT_STEPS if no_budget else config.steps,
        checkpoint_every=int(config.checkpoint_every or config.val_every),
        precision="bf16" if bf16 else "fp32")


def _listed(value):
    return None if value is None else list(value)


def options_record(c: TrainConfig, world_size: int, device_type: str, val_store=None) -> dict:
    """The ``training.args`` entry of a checkpoint: the resolved options of the run
    (:func:`resolved`) that :func:`saved_options` reads back, with the world size, the
    device type and the validation store's path(s) ``val_store``."""
    return {
        "seed": c.seed, "batch": c.batch, "lr": c.lr, "steps": c.steps, "minutes": c.minutes,
        "val_every": c.val_every, "ema": c.ema, "weight_decay": c.weight_decay, "clip": c.clip,
        "warmup": c.warmup, "augment": c.augment, "crop": c.crop, "val_fraction": c.val_fraction,
        "init": c.init, "freeze": list(c.freeze), "sad_variant": c.sad_variant, "normalize": True,
        "world_size": world_size, "device": device_type, "mix": _listed(c.mix),
        "ids": _listed(c.ids), "val_ids": _listed(c.val_ids), "precision": c.precision,
        "schedule": c.schedule, "val_max": c.val_max, "val_store": val_store,
    }
