"""Training loop: whole periodic boxes, NMAE loss, checkpoints, resume, DDP.

One optimizer step sees ``batch`` molecules.  Boxes differ in size, so the
molecules are not stacked: each one runs forward and backward on its own and
the gradients accumulate (loss = mean over the batch of the per-molecule NMAE
``sum|pred - ref| / sum(ref)``).  Under ``torchrun`` (env ``WORLD_SIZE`` > 1)
the molecules of each step are dealt out to the ranks (molecule j of the step
to rank ``j % world``), and the summed gradients are all-reduced before the
optimizer step, so N ranks compute the same update as one process (up to the
order of floating-point sums).  Rank 0 logs and writes the checkpoints.

What a step sees is a pure function of ``(seed, step)``: the molecule order
is a seeded permutation per epoch and each molecule's augmentation (one of the
48 cube symmetries and a periodic shift) is drawn from
``default_rng([seed, step, j])``.  Hence a resumed run repeats exactly what an
uninterrupted one would do.

Checkpoints ``RUN_DIR/last.pt`` and ``RUN_DIR/best.pt`` are model files
(:func:`rhosr.nn.modelfile.load_model` reads them; ``state_dict`` holds the EMA
weights when EMA is on) with one more top-level entry, ``training``: raw
weights (with EMA), EMA weights, optimizer, schedule, RNG states, step,
seconds, best validation NMAE and the training arguments.  Everything is plain
data and tensors (``torch.load(path, weights_only=True)``), written to a
temporary file and renamed into place, so a run killed at any moment leaves a
loadable ``last.pt``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from rhosr.core.splits import select_ids, split_of_id
from rhosr.errors import InputError
from rhosr.labels.bank import store_paths
from rhosr.nn.config import (  # noqa: E402 -- re-exported
    DEFAULT_BATCH,
    DEFAULT_FINETUNE_LR,
    DEFAULT_LR,
    DEFAULT_STEPS,
    DEFAULT_VAL_EVERY,
)
from rhosr.nn.modelfile import MODEL_FORMAT, atomic_torch_save, merge_seen, read_model_file, seen_of
from rhosr.nn.nets import PRESETS, TRAIN_PRESET, build, count_parameters, make_config
from rhosr.training.data import DensityDataset

#: Parts of a network for ``freeze``: aliases of top-level module names
#: (any top-level module name, or a parameter-name prefix, is accepted too).
FREEZE_PARTS = {
    "input": ("head",),
    "body": ("blocks", "body_tail", "enc", "down", "bottom", "up", "dec"),
    "output": ("upsample", "tail"),
}
METRICS_FIELDS = ("step", "epoch", "lr", "loss_nmae_percent", "grad_norm",
                  "val_nmae_percent", "seconds", "molecules_per_second")
#: ``precision`` of :func:`train`: bf16 autocast or float32 (auto: bf16 on CUDA only).
PRECISIONS = ("auto", "bf16", "fp32")
#: Env var: a folder where every rank writes ``rank<r>.sha256`` of its final weights.
HASH_DIR_ENV = "RHOSR_WEIGHTS_HASH_DIR"


# --------------------------------------------------------------------------
# small pieces


def resolve_device(device="auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return dev


def nmae_loss(pred: torch.Tensor, target: torch.Tensor, interior=None) -> torch.Tensor:
    """Per-sample NMAE ``sum|pred - target| / sum(target)``, shape (B,), float32.

    ``pred``, ``target``: (B, 1, X, Y, Z).  ``interior``: optional (3, 2)
    [start, stop) per axis restricting the sums (crops)."""
    if interior is not None:
        (x0, x1), (y0, y1), (z0, z1) = [(int(a), int(b)) for a, b in interior]
        pred = pred[..., x0:x1, y0:y1, z0:z1]
        target = target[..., x0:x1, y0:y1, z0:z1]
    dims = tuple(range(1, pred.dim()))
    pred, target = pred.float(), target.float()
    return (pred - target).abs().sum(dim=dims) / target.sum(dim=dims).clamp_min(1e-30)


def freeze_parameters(model: torch.nn.Module, parts) -> list[str]:
    """Set ``requires_grad=False`` on the named parts; returns the frozen parameter names.

    A part is an alias of :data:`FREEZE_PARTS` ("input", "body", "output"), a
    top-level module name of the network (``head``, ``blocks``, ``tail``, ...;
    note that the module ``head`` is the *input* convolution), or a parameter
    name prefix such as ``blocks.0``.
    """
    names = [n for n, _ in model.named_parameters()]
    modules = {n.split(".")[0] for n in names}
    frozen = []
    for part in parts:
        prefixes = FREEZE_PARTS.get(part, (part,))
        prefixes = [p for p in prefixes if p in modules or any(n.startswith(p + ".") for n in names)]
        if not prefixes:
            raise InputError(f"cannot freeze {part!r}: choose from {sorted(FREEZE_PARTS)}, the "
                             f"network's modules {sorted(modules)}, or a parameter-name prefix")
        for name, p in model.named_parameters():
            if any(name == q or name.startswith(q + ".") for q in prefixes):
                p.requires_grad_(False)
                frozen.append(name)
    return sorted(set(frozen))


class WarmupCosine:
    """Learning-rate factor: linear warm-up then cosine decay to ``final``.

    Progress p in [0, 1] is ``max((step + 1) / total_steps, seconds /
    total_seconds)`` over whichever totals are given; the factor is ``p /
    warmup`` for p < warmup, then ``final + (1 - final)(1 + cos(pi q)) / 2``
    with q = (p - warmup) / (1 - warmup).
    """

    def __init__(self, total_steps=None, total_seconds=None, warmup: float = 0.05,
                 final: float = 0.01):
        if total_steps is None and total_seconds is None:
            raise ValueError("give total_steps or total_seconds")
        self.total_steps = total_steps
        self.total_seconds = total_seconds
        self.warmup = float(warmup)
        self.final = float(final)
        self.last_factor = 0.0

    def progress(self, step: int, seconds: float = 0.0) -> float:
        p = 0.0
        if self.total_steps:
            p = max(p, (step + 1) / self.total_steps)
        if self.total_seconds:
            p = max(p, seconds / self.total_seconds)
        return min(max(p, 0.0), 1.0)

    def factor(self, step: int, seconds: float = 0.0) -> float:
        p = self.progress(step, seconds)
        if p < self.warmup:
            f = p / self.warmup
        else:
            q = (p - self.warmup) / max(1.0 - self.warmup, 1e-12)
            f = self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * min(q, 1.0)))
        self.last_factor = f
        return f

    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "total_seconds": self.total_seconds,
                "warmup": self.warmup, "final": self.final, "last_factor": self.last_factor}

    def load_state_dict(self, state: dict) -> None:
        # the totals of the current call win (a resumed run may be extended)
        self.warmup = float(state.get("warmup", self.warmup))
        self.final = float(state.get("final", self.final))
        self.last_factor = float(state.get("last_factor", 0.0))


class WarmupConstant:
    """Learning-rate factor with no horizon: linear warm-up over ``warmup_steps`` steps, then 1.

    For one long run that goes on across sessions: a resumed run continues at the
    same rate (the weights' EMA does the averaging a decay would do)."""

    def __init__(self, warmup_steps: int = 200):
        self.warmup_steps = int(warmup_steps)
        self.last_factor = 0.0

    def factor(self, step: int, seconds: float = 0.0) -> float:
        f = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        self.last_factor = f
        return f

    def state_dict(self) -> dict:
        return {"kind": "constant", "warmup_steps": self.warmup_steps,
                "last_factor": self.last_factor}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_steps = int(state.get("warmup_steps", self.warmup_steps))
        self.last_factor = float(state.get("last_factor", 0.0))


#: Learning-rate schedules of :func:`train`.
SCHEDULES = ("cosine", "constant")


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pystate, pygauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": int(version), "state": [int(v) for v in pystate],
                   "gauss": None if pygauss is None else float(pygauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            pass  # another number of GPUs: keep the seeded state


def _cpu_state(module_or_state) -> dict:
    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the model's state dict (names and raw bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint's record (a model file with a ``training`` entry), read safely."""
    record = read_model_file(path, map_location=map_location)
    if not isinstance(record.get("training"), dict):
        raise ValueError(f"{path} is a model file but not a training checkpoint (no 'training')")
    return record


# --------------------------------------------------------------------------
# distributed


class _Dist:
    """World description; a no-op when not launched by torchrun."""

    def __init__(self, device_pref):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.world > 1 else 0
        device = resolve_device(device_pref)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.enabled = self.world > 1
        self._owned = False
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
                self._owned = True
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values, dtype=torch.float64):
        dev = self.device if self.device.type == "cuda" else torch.device("cpu")
        return torch.tensor(values, dtype=dtype, device=dev)

    def sum(self, values) -> list[float]:
        if not self.enabled:
            return list(values)
        t = self._tensor(list(values))
        self.dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, values) -> list[float]:
        if not self.enabled:
            return list(values)
        t = self._tensor(list(values))
        self.dist.broadcast(t, 0)
        return t.tolist()

    def all_reduce_grads(self, params) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        i = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[i:i + n].view_as(g))
            i += n

    def broadcast_module(self, module) -> None:
        if not self.enabled:
            return
        for t in module.state_dict().values():
            self.dist.broadcast(t.data if hasattr(t, "data") else t, 0)

    def barrier(self) -> None:
        if self.enabled:
            self.dist.barrier()

    def all_equal(self, text: str) -> bool:
        if not self.enabled:
            return True
        digest = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
        t = self._tensor([digest], dtype=torch.int64)
        lo, hi = t.clone(), t.clone()
        self.dist.all_reduce(lo, op=self.dist.ReduceOp.MIN)
        self.dist.all_reduce(hi, op=self.dist.ReduceOp.MAX)
        return int(lo.item()) == int(hi.item())

    def close(self) -> None:
        if self.enabled and self._owned:
            self.dist.destroy_process_group()


# --------------------------------------------------------------------------
# the loop


def _forward(model, sample, device, amp: bool, normalize: bool = True):
    sc = sample["sad_coarse"][None].to(device, non_blocking=True)
    sf = sample["sad_fine"][None].to(device, non_blocking=True)
    n_e = dv = None
    if normalize and sample["whole"]:
        n_e = sample["n_electrons"].reshape(1).to(device)
        dv = sample["dv_fine"].reshape(1).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        pred = model(sc, sf, n_e, dv)
    return pred.float()


def molecule_loss(model, sample, device, amp: bool = False, normalize: bool = True):
    """NMAE (a 0-d tensor) of one sample of :class:`DensityDataset`, with graph."""
    pred = _forward(model, sample, device, amp, normalize)
    target = sample["target"][None].to(device, non_blocking=True)
    interior = None if sample["whole"] else sample["interior"].tolist()
    return nmae_loss(pred, target, interior)[0]


@torch.no_grad()
def validation_nmae(model, dataset: DensityDataset, device, amp: bool = False,
                    rank: int = 0, world: int = 1, normalize: bool = True) -> tuple[float, int]:
    """(sum of NMAE in %, count) over this rank's share of ``dataset`` (whole boxes)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(rank, len(dataset), world):
        s = dataset.sample(i)
        pred = _forward(model, s, device, amp, normalize)
        total += 100.0 * float(nmae_loss(pred, s["target"][None].to(device))[0])
        count += 1
    model.train(was_training)
    return total, count


def _open_store(store):
    from rhosr.labels.bank import open_labels

    return open_labels(store)


def _matching(ids, patterns):
    """The ids that match one of the glob patterns (all ids when ``patterns`` is empty)."""
    if not patterns:
        return list(ids)
    import fnmatch

    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]


def _training_ids(store, val_store, val_fraction, patterns=(), val_patterns=()):
    train_ids, val_ids = _split_ids(store, val_store, val_fraction)
    return _matching(train_ids, patterns), _matching(val_ids, val_patterns)


def _split_ids(store, val_store, val_fraction):
    ids = store.ids()
    if val_store is None:
        train_ids = select_ids(ids, "train", val_fraction)
        val_ids = select_ids(ids, "val", val_fraction)
    else:
        # an explicit validation store: every non-QM9 record of STORE trains;
        # QM9 records still follow the standard split
        train_ids = [i for i in ids if (split_of_id(i) or "train") == "train"]
        val_ids = [i for i in val_store.ids() if split_of_id(i) != "test"]
        both = sorted(set(train_ids) & set(val_ids))
        if both:
            raise InputError(f"{len(both)} molecule(s) are in both the training and the "
                             f"validation store, e.g. {both[0]}")
    return train_ids, val_ids


def train(store, out_dir, preset=None, steps=None, minutes=None, seed: int = 0,
          resume: bool = False, init=None, freeze=(), val_store=None, val_fraction: float = 0.1,
          lr=None, batch: int | None = None, val_every: int = DEFAULT_VAL_EVERY,
          device="auto", ema=None, weight_decay: float = 1e-4, clip: float = 1.0,
          warmup: float = 0.05, augment: bool = True, crop=None, val_max=None,
          checkpoint_every=None, checkpoint_minutes: float = 10.0, stop_after=None,
          progress: bool = True, sad_variant: str = "paper", cache=True,
          workers="auto", mix=None, ids=None, val_ids=None, precision: str = "auto",
          schedule=None) -> dict:
    """Train a network on the records of a store; returns a summary dict.

    Parameters
    ----------
    store, val_store : Store or path; ``store`` may also be a list of them, read as one
        (:class:`rhosr.labels.bank.Union`; ids must be unique across them).
        Training records (QM9 ids and ids that name their split: split 'train' only;
        others: all but the ``val_fraction`` hashed to validation).  Validation: the
        'val' records, or, with ``val_store``, that store's records ('test' excluded).
    mix : list of float, optional
        With several stores: the share of training samples drawn from each (one weight
        per store, normalised); each store's molecules in a seeded order per pass.
        Default: one pool of all their training molecules.
    ids : list of str, optional
        Glob patterns (``fnmatch``): only training records whose id matches one of them
        train (e.g. ``["qm9_*", "S-train-0[12]?"]``).
    val_ids : list of str, optional
        The same for the validation records.
    schedule : "cosine" or "constant", optional
        "cosine" (default of a new run): warm-up, then a cosine decay over the budget
        (``steps``/``minutes``); "constant": 200 warm-up steps, then the peak rate with no
        horizon, so that a run resumed with a larger budget goes on as one schedule.  A
        resumed run keeps its schedule.
    precision : "auto", "bf16" or "fp32"
        bf16: forward passes under bfloat16 autocast (weights, gradients and the
        optimizer stay float32); "auto": bf16 on CUDA, fp32 on a CPU.
    out_dir : path
        Run directory: ``last.pt``, ``best.pt``, ``metrics.csv`` (and
        TensorBoard events if ``tensorboard`` is installed).
    preset : str, optional
        Model preset (default :data:`rhosr.nn.config.TRAIN_PRESET`; with
        ``init``, the file's architecture).
    steps, minutes : optimizer steps and/or wall-clock budget; the run ends at
        whichever comes first (default ``DEFAULT_STEPS`` steps).  The
        learning-rate schedule spans the same budget.
    seed : int
        Model initialisation, molecule order, augmentations.
    resume : bool
        Continue from ``out_dir/last.pt`` (fresh start if there is none).
    init : path, optional
        Model file to fine-tune from (config and weights taken from it).
    freeze : parts kept fixed, see :func:`freeze_parameters`.
    lr : peak learning rate (default ``DEFAULT_LR``, ``DEFAULT_FINETUNE_LR`` with ``init``).
    batch : molecules per optimizer step (gradient accumulation); default: a resumed
        run's, else :data:`DEFAULT_BATCH` for the device (1 on a CPU, 4 on a GPU).
    val_every : validate (and checkpoint) every this many steps, and at the end.
    device : "auto", "cpu", "cuda", ...  bf16 autocast is used on CUDA.
    ema : float, optional
        Decay of an exponential moving average of the weights, used for
        validation and saved as the model weights.
    crop : int, optional
        Train on crops of this many coarse points per axis (plus a halo of the
        model's receptive field) instead of whole boxes.
    val_max : int, optional
        Validate on at most this many molecules (the first, sorted by id).
    checkpoint_every : int, optional
        Write ``last.pt`` every this many steps (default ``val_every``);
        also every ``checkpoint_minutes`` minutes and at the end.
    stop_after : int, optional
        End this run after this step as if interrupted (the schedule still
        spans ``steps``); for time-limited jobs and tests.
    cache : see :class:`rhosr.training.data.DensityDataset` (SAD kept in memory).
    workers : int or "auto"
        Processes preparing samples ahead (auto: up to 4 on CUDA, 0 on CPU).
    """
    options = SimpleNamespace(**{k: v for k, v in locals().items() if k != "device"})
    options.freeze = tuple(freeze or ())
    world = _Dist(device)
    try:
        run = _Run(world, options)
        return run.finish(run.loop())
    finally:
        world.close()


def _check_options(o) -> None:
    """Raise InputError for option values no run can use; fills in defaults."""
    if o.schedule is not None and o.schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {SCHEDULES}, got {o.schedule!r}")
    if o.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {o.precision!r}")
    if o.batch is not None and o.batch < 1:
        raise InputError(f"batch must be >= 1, got {o.batch}")
    if o.val_every < 1:
        raise InputError(f"val_every must be >= 1, got {o.val_every}")
    if not 0.0 <= float(o.val_fraction) < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {o.val_fraction}")
    if o.ema is not None and not 0.0 < float(o.ema) < 1.0:
        raise InputError(f"ema decay must be in (0, 1), got {o.ema}")
    if o.steps is None and o.minutes is None:
        o.steps = DEFAULT_STEPS
    if o.steps is not None and o.steps < 1:
        raise InputError(f"steps must be >= 1, got {o.steps}")
    if o.minutes is not None and o.minutes <= 0:
        raise InputError(f"minutes must be > 0, got {o.minutes}")
    o.checkpoint_every = int(o.checkpoint_every or o.val_every)


def _choose_config(o, ckpt):
    """(config, preset name, init record or None) of the run's network."""
    if ckpt is not None:
        return make_config(ckpt["config"]), ckpt["extra"].get("preset"), None
    if o.init is not None:
        try:
            record = read_model_file(o.init)
        except (OSError, ValueError) as exc:
            raise InputError(f"--init {o.init}: {exc}") from None
        config = make_config(record["config"])
        if o.preset is not None and make_config(o.preset) != config:
            raise InputError(f"--init {o.init}: its architecture differs from preset {o.preset!r}")
        return config, record["extra"].get("preset") or _preset_of(config), record
    try:
        config = make_config(o.preset or TRAIN_PRESET)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return config, o.preset or TRAIN_PRESET, None


def _raw_state(ckpt) -> dict:
    """The raw (not averaged) weights of a checkpoint, full or slim."""
    tr = ckpt["training"]
    if "model_delta" in tr:
        return {k: v + tr["model_delta"][k].to(v.dtype) if v.is_floating_point() else v
                for k, v in ckpt["state_dict"].items()}
    return tr.get("model_state", ckpt["state_dict"])


def slim_checkpoint(src, dst) -> int:
    """Write a checkpoint ``src`` as a slim resume point ``dst``; returns its size in bytes.

    Keeps the EMA weights (float32, the model), the raw weights as their float16
    difference from them, the schedule position, RNG states and run arguments, and
    drops the optimizer moments (AdamW rebuilds them within a few hundred steps), so
    that a resume point of the bundled 0.7 M-parameter network is ~4 MB.  ``train(...,
    resume=True)`` continues from it like from a full ``last.pt``."""
    ckpt = read_checkpoint(src)
    tr = dict(ckpt["training"])
    if "ema_state" in tr:
        raw, ema = tr.pop("model_state"), tr.pop("ema_state")
        tr["model_delta"] = {k: (raw[k] - ema[k]).half() if raw[k].is_floating_point()
                             else torch.zeros_like(raw[k]) for k in ema}
    tr.pop("optimizer", None)
    atomic_torch_save({**ckpt, "training": tr}, dst)
    return Path(dst).stat().st_size


class _Run:
    """One training run: set up, then steps, validation and checkpoints (see :func:`train`)."""

    def __init__(self, world, o):
        self.world, self.o = world, o
        self.device = world.device
        _check_options(o)
        self._setup_run_dir()
        self._inherit()
        self.amp = o.precision == "bf16" or (o.precision == "auto" and self.device.type == "cuda")
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._restore()
        self._setup_samples()
        self._setup_logging()

    # ---- setup

    def _inherit(self):
        """A resumed run keeps its precision and data selection unless given anew."""
        args = (self.ckpt or {}).get("training", {}).get("args", {})
        o = self.o
        if o.precision == "auto":
            o.precision = args.get("precision", "auto")
        for name in ("mix", "ids", "val_ids"):
            if getattr(o, name) is None and args.get(name) is not None:
                setattr(o, name, args[name])

    def _setup_data(self):
        o = self.o
        self.store = _open_store(o.store)
        self.val_store = _open_store(o.val_store) if o.val_store is not None else None
        self.train_ids, self.val_ids = _training_ids(self.store, self.val_store, o.val_fraction,
                                                     o.ids or (), o.val_ids or ())
        if not self.train_ids:
            raise InputError(f"{self.store.path}: no training molecules (QM9 val/test ids never "
                             "train" + (", and --ids matched none)" if o.ids else ")"))
        self.streams = _mix_streams(self.store, self.train_ids, o.mix)
        if o.val_max is not None:
            self.val_ids = self.val_ids[: int(o.val_max)]

    def _setup_run_dir(self):
        o = self.o
        self.out = Path(o.out_dir)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.ckpt = None
        if o.resume and self.last_path.is_file():
            try:
                self.ckpt = read_checkpoint(self.last_path)
            except ValueError as exc:
                raise InputError(str(exc)) from None
        elif not o.resume and self.last_path.exists():
            raise InputError(f"{self.out}: already holds a run (last.pt); use --resume or another --out")
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        if o.batch is None:
            resumed = (self.ckpt or {}).get("training", {}).get("args", {}).get("batch")
            o.batch = int(resumed or DEFAULT_BATCH.get(self.device.type, 1))

    def _setup_model(self):
        o = self.o
        random.seed(o.seed)
        np.random.seed(o.seed % 2**32)
        torch.manual_seed(o.seed)
        self.config, self.preset_name, init_record = _choose_config(o, self.ckpt)
        self.model = build(self.config)
        if init_record is not None:
            self.model.load_state_dict(init_record["state_dict"], strict=True)
        self.seen = _seen(self.store, self.train_ids, init_record, self.ckpt)
        self.frozen = freeze_parameters(self.model, o.freeze)
        self.model.to(self.device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise InputError("every parameter is frozen: nothing to train")
        self.ema_model = None
        if o.ema is not None:
            self.ema_model = copy.deepcopy(self.model).eval()
            for p in self.ema_model.parameters():
                p.requires_grad_(False)

    def _setup_optimizer(self):
        o, lr = self.o, self.o.lr
        if lr is None and self.ckpt is not None:
            lr = self.ckpt["training"].get("args", {}).get("lr")
        if lr is None:
            lr = DEFAULT_FINETUNE_LR if o.init is not None else DEFAULT_LR
        self.lr = float(lr)
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        decay = [p for p in self.params if p.dim() > 1]
        no_decay = [p for p in self.params if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        saved = (self.ckpt or {}).get("training", {}).get("args", {}).get("schedule", "cosine")
        if self.ckpt is not None and o.schedule is not None and o.schedule != saved:
            raise InputError(f"--resume: the run's schedule is {saved!r}, not {o.schedule!r}")
        o.schedule = saved if self.ckpt is not None else (o.schedule or "cosine")
        if o.schedule == "constant":
            self.schedule = WarmupConstant()
        else:
            self.schedule = WarmupCosine(o.steps, None if o.minutes is None else 60.0 * o.minutes,
                                         o.warmup)

    def _restore(self):
        """Step, best, RNG, optimizer and weights from ``last.pt`` when resuming."""
        self.step, self.seconds_before, self.best, self.last_val = 0, 0.0, None, None
        if self.ckpt is not None:
            tr = self.ckpt["training"]
            self.model.load_state_dict(_raw_state(self.ckpt), strict=True)
            if list(tr.get("frozen", [])) != self.frozen:
                raise InputError(f"--resume: the run froze {tr.get('frozen')}, this call {self.frozen}")
            if "optimizer" in tr:  # a slim resume point has none: AdamW starts its moments anew
                self.optimizer.load_state_dict(tr["optimizer"])
            self.schedule.load_state_dict(tr["schedule"])
            if self.ema_model is not None:
                ema = tr.get("ema_state", self.ckpt["state_dict"] if "model_delta" in tr else None)
                self.ema_model.load_state_dict(ema or self.model.state_dict(), strict=True)
            self.step = int(tr["step"])
            self.seconds_before = float(tr["seconds"])
            self.best = tr.get("best_val_nmae_percent")
            self.last_val = tr.get("val_nmae_percent")
            _set_rng_states(tr["rng"])
        self.world.broadcast_module(self.model)
        if self.ema_model is not None:
            self.world.broadcast_module(self.ema_model)

    def _setup_samples(self):
        o, world = self.o, self.world
        if o.crop is not None and not self.model.is_local:
            raise InputError(f"--crop needs a local network; {self.config.arch} is not (train on "
                             "whole boxes)")
        halo = self.model.receptive_field if o.crop is not None else 0
        inputs = self.config.inputs
        train_ds = DensityDataset(self.store, self.train_ids, augment=o.augment, seed=o.seed,
                                  cache=o.cache, crop=o.crop, halo=halo, sad_variant=o.sad_variant,
                                  inputs=inputs)
        self.val_ds = DensityDataset(self.val_store or self.store, self.val_ids, cache=o.cache,
                                     sad_variant=o.sad_variant, inputs=inputs)
        self.my_js = list(range(world.rank, o.batch, world.world))
        workers = o.workers
        if workers == "auto":
            per_rank = max((os.cpu_count() or 1) // max(world.world, 1), 1)
            workers = min(4, per_rank - 1) if self.device.type == "cuda" else 0
        self.samples = _step_samples(train_ds, o.seed, o.batch, self.step, self.my_js,
                                     int(workers), self.device.type == "cuda", self.streams)

    def _setup_logging(self):
        self.metrics = self.tb = self.bar = None
        if not self.world.main:
            return
        o = self.o
        self.metrics = _MetricsCSV(self.out / "metrics.csv",
                                   keep_until=self.step if self.ckpt is not None else -1)
        self.tb = _tensorboard(self.out)
        if o.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=o.steps, initial=self.step, unit="step", dynamic_ncols=True,
                            desc=f"train {self.preset_name or self.config.arch}")
        if self.ckpt is None:
            print(f"rhosr train: {len(self.train_ids)} training / {len(self.val_ids)} validation "
                  f"molecules, {count_parameters(self.model):,} trainable parameters, device "
                  f"{self.device}, world {self.world.world}", flush=True)
        else:
            print(f"rhosr train: resuming {self.last_path} at step {self.step}", flush=True)

    # ---- metadata and checkpoints

    def run_info(self) -> dict:
        o = self.o
        return {
            "seed": o.seed, "batch": o.batch, "lr": self.lr, "steps": o.steps,
            "minutes": o.minutes, "val_every": o.val_every, "ema": o.ema,
            "weight_decay": o.weight_decay, "clip": o.clip, "warmup": o.warmup,
            "augment": o.augment, "crop": o.crop, "val_fraction": o.val_fraction,
            "init": None if o.init is None else str(o.init), "freeze": list(o.freeze),
            "sad_variant": o.sad_variant, "normalize": True, "world_size": self.world.world,
            "device": self.device.type, "mix": o.mix, "ids": o.ids, "val_ids": o.val_ids,
            "precision": "bf16" if self.amp else "fp32", "schedule": o.schedule,
        }

    def extra(self, seconds) -> dict:
        o = self.o
        paths = store_paths(self.store)
        data_info = {
            "store": paths[0] if len(paths) == 1 else paths, "molecules": len(self.train_ids),
            "id_range": [min(self.train_ids), max(self.train_ids)],
            "val_store": None if self.val_store is None else store_paths(self.val_store)[0],
            "val_molecules": len(self.val_ids), "val_fraction": o.val_fraction,
            "mix": o.mix, "ids_patterns": o.ids, **self.seen, "ids": list(self.train_ids),
        }
        return {
            "preset": self.preset_name,
            "parameters": count_parameters(self.model, trainable_only=False),
            "training_data": data_info, "best_val_nmae_percent": self.best,
            "val_nmae_percent": self.last_val, "steps": self.step, "seconds": round(seconds, 3),
            "init": None if o.init is None else str(o.init), "freeze": list(o.freeze),
            "ema": o.ema, "seed": o.seed, "normalize": True, "sad_variant": o.sad_variant,
            "world_size": self.world.world,
        }

    def checkpoint(self, path, seconds) -> None:
        from rhosr.nn.modelfile import versions

        infer = self.ema_model if self.ema_model is not None else self.model
        tr = {
            "step": self.step, "seconds": seconds, "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "rng": _rng_states(),
            "best_val_nmae_percent": self.best, "val_nmae_percent": self.last_val,
            "frozen": self.frozen, "args": self.run_info(),
        }
        if self.ema_model is not None:
            tr["model_state"] = _cpu_state(self.model)
            tr["ema_state"] = _cpu_state(self.ema_model)
        record = {"format": MODEL_FORMAT, "config": asdict(self.config),
                  "state_dict": _cpu_state(infer), "extra": _jsonable(self.extra(seconds)),
                  "versions": versions(), "training": tr}
        atomic_torch_save(record, path)

    # ---- the loop

    def done(self, secs) -> bool:
        o = self.o
        if o.steps is not None and self.step >= o.steps:
            return True
        if o.stop_after is not None and self.step >= o.stop_after:
            return True
        return o.minutes is not None and secs >= 60.0 * o.minutes

    def one_step(self, factor) -> tuple[float, float]:
        """One optimizer step at lr × ``factor``; returns (summed loss, gradient norm)."""
        o = self.o
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * factor
        for p in self.params:
            p.grad.zero_()
        loss_sum = 0.0
        for j in self.my_js:
            sample = next(self.samples)
            if tuple(sample["step_j"]) != (self.step, j):  # pragma: no cover - a bug, not input
                raise RuntimeError(f"sample {sample['step_j']} arrived at step {self.step}, slot {j}")
            loss = molecule_loss(self.model, sample, self.device, self.amp)
            (loss / o.batch).backward()
            loss_sum += float(loss.detach())
        self.world.all_reduce_grads(self.params)
        loss_sum = self.world.sum([loss_sum])[0]
        grad_norm = (float(torch.nn.utils.clip_grad_norm_(self.params, o.clip)) if o.clip
                     else float("nan"))
        self.optimizer.step()
        if self.ema_model is not None:
            _ema_update(self.ema_model, self.model, float(o.ema), self.step)
        self.step += 1
        return loss_sum, grad_norm

    def validate(self):
        """Validation NMAE (percent) of the EMA (or raw) weights, or None without molecules."""
        if not self.val_ids:
            return None
        total, count = validation_nmae(self.ema_model or self.model, self.val_ds, self.device,
                                       self.amp, self.world.rank, self.world.world)
        total, count = self.world.sum([total, count])
        self.last_val = total / max(count, 1)
        return self.last_val

    def log_step(self, row, val, improved, finishing, secs) -> None:
        """Rank 0: metrics row, TensorBoard, checkpoints, progress bar."""
        o = self.o
        self.metrics.write(row)
        if self.tb is not None:
            self.tb.add_scalar("train/loss_nmae_percent", row["loss_nmae_percent"], self.step)
            self.tb.add_scalar("train/lr", row["lr"], self.step)
            if val is not None:
                self.tb.add_scalar("val/nmae_percent", val, self.step)
        now = time.perf_counter()
        if improved:
            self.checkpoint(self.best_path, secs)
        if (self.step % o.checkpoint_every == 0 or finishing or val is not None
                or now - self.last_ckpt_time >= 60.0 * o.checkpoint_minutes):
            self.checkpoint(self.last_path, secs)
            self.last_ckpt_time = now
        if self.bar is not None:
            post = {"loss%": f"{row['loss_nmae_percent']:.3f}"}
            if self.last_val is not None:
                post["val%"] = f"{self.last_val:.3f}"
            if o.minutes is not None:
                post["left"] = f"{max(60.0 * o.minutes - secs, 0) / 60:.1f}min"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def loop(self) -> float:
        """Steps until the budget is spent; returns the run's seconds."""
        o, world = self.o, self.world
        t_run = time.perf_counter()
        self.last_ckpt_time = t_run
        elapsed = lambda: self.seconds_before + (time.perf_counter() - t_run)  # noqa: E731
        for p in self.params:
            p.grad = torch.zeros_like(p)
        secs = world.broadcast([elapsed()])[0]
        while not self.done(secs):
            t_step = time.perf_counter()
            factor = self.schedule.factor(self.step, secs)
            loss_sum, grad_norm = self.one_step(factor)
            secs = world.broadcast([elapsed()])[0]
            finishing = self.done(secs)
            val = self.validate() if self.step % o.val_every == 0 or finishing else None
            improved = val is not None and (self.best is None or val < self.best)
            if improved:
                self.best = val
            if world.main:
                row = {"step": self.step, "epoch": (self.step * o.batch - 1) // len(self.train_ids),
                       "lr": self.lr * factor, "loss_nmae_percent": 100.0 * loss_sum / o.batch,
                       "grad_norm": grad_norm, "val_nmae_percent": "" if val is None else val,
                       "seconds": secs,
                       "molecules_per_second": o.batch / max(time.perf_counter() - t_step, 1e-9)}
                self.log_step(row, val, improved, finishing, secs)
        del self.samples  # ends the loader's worker processes
        return secs

    def finish(self, secs) -> dict:
        world = self.world
        if world.main:
            if not self.best_path.exists():
                # no validation molecules: the final weights are the best we know
                self.checkpoint(self.best_path, secs)
            self.checkpoint(self.last_path, secs)
            if self.bar is not None:
                self.bar.close()
            if self.tb is not None:
                self.tb.close()
            self.metrics.close()
        digest = weights_hash(self.model)
        hash_dir = os.environ.get(HASH_DIR_ENV)
        if hash_dir:
            Path(hash_dir).mkdir(parents=True, exist_ok=True)
            (Path(hash_dir) / f"rank{world.rank}.sha256").write_text(digest + "\n")
        if not world.all_equal(digest):
            raise RuntimeError("data-parallel ranks ended with different weights")
        world.barrier()
        return {
            "run_dir": str(self.out), "last": str(self.last_path), "best": str(self.best_path),
            "steps": self.step, "seconds": secs, "best_val_nmae_percent": self.best,
            "val_nmae_percent": self.last_val, "train_molecules": len(self.train_ids),
            "val_molecules": len(self.val_ids), "world_size": world.world,
            "weights_sha256": digest, "frozen": self.frozen,
        }


def _seen(store, train_ids, init_record, ckpt) -> dict:
    """Elements and charges of the training molecules, with those the start model saw
    (the ``elements`` and ``charges`` entries of the model file); {} when the start
    model's are unknown."""
    elements, charges = set(), set()
    for rec in store.records(train_ids, density=False):
        elements.update(rec.symbols)
        charges.add(int(rec.charge))
    here = {"elements": sorted(elements), "charges": sorted(charges)}
    before = [seen_of(r["extra"]) for r in (init_record, ckpt) if r is not None]
    return merge_seen(here, *before) or {}


def _mix_streams(store, train_ids, mix):
    """None, or ([dataset indices of each store's training molecules], [weights])."""
    if mix is None:
        return None
    parts = getattr(store, "parts", [store])
    if len(mix) != len(parts):
        raise InputError(f"--mix gives {len(mix)} weight(s) for {len(parts)} store(s)")
    if any(not math.isfinite(w) or w < 0 for w in mix) or sum(mix) <= 0:
        raise InputError(f"--mix weights must be >= 0 with a positive sum, got {list(mix)}")
    where = store.part_of if len(parts) > 1 else (lambda _i: 0)
    streams = [[] for _ in parts]
    for k, mol_id in enumerate(train_ids):
        streams[where(mol_id)].append(k)
    for part, stream, w in zip(parts, streams, mix):
        if w > 0 and not stream:
            raise InputError(f"{part.path}: --mix weight {w} but no training molecules there")
    total = float(sum(mix))
    return streams, [w / total for w in mix]


def mixed_position(g: int, weights) -> tuple[int, int]:
    """(stream, position in it) of sample ``g`` when the streams are interleaved by weight.

    Stream 0 takes the samples where ``round(g * w0)`` steps up (its share of every
    prefix is within one sample of ``w0``), the other streams share the rest the same
    way, recursively: a pure function of ``g``."""
    rest = 1.0
    for s, w in enumerate(weights[:-1]):
        share = min(w / rest, 1.0) if rest > 0 else 0.0
        before = math.floor(g * share + 0.5)
        if math.floor((g + 1) * share + 0.5) > before:
            return s, before
        g -= before
        rest -= w
    return len(weights) - 1, g


class StepSamples(torch.utils.data.Dataset):
    """Training samples keyed by ``(step, j)``: molecule j of optimizer step ``step``.

    The molecule is entry ``step * batch + j`` of the epoch-wise seeded
    permutation of ``dataset`` (epoch e: ``default_rng([seed, 1, e])``), its
    augmentation drawn from ``default_rng([seed, 2, step, j])``: a pure
    function of the key, so workers, ranks and resumed runs agree.  With
    ``streams`` (a mix of stores, see :func:`mixed_position`), sample
    ``step * batch + j`` goes to a stream by weight, and to entry p of that
    stream's own seeded permutation per pass (``default_rng([seed, 1, s, e])``)."""

    def __init__(self, dataset: DensityDataset, seed: int, batch: int, streams=None):
        self.dataset, self.seed, self.batch = dataset, int(seed), int(batch)
        self.streams = streams
        self._perms: dict = {}

    def _perm(self, key, n):
        if key not in self._perms:
            if len(self._perms) > 16:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, 1, *key]).permutation(n)
        return self._perms[key]

    def index(self, step: int, j: int) -> int:
        g = step * self.batch + j
        if self.streams is None:
            epoch, k = divmod(g, len(self.dataset))
            return int(self._perm((epoch,), len(self.dataset))[k])
        members, weights = self.streams
        s, p = mixed_position(g, weights)
        epoch, k = divmod(p, len(members[s]))
        return int(members[s][self._perm((s, epoch), len(members[s]))[k]])

    def __getitem__(self, key):
        step, j = (int(k) for k in key)
        rng = np.random.default_rng([self.seed, 2, step, j])
        sample = self.dataset.random_sample(self.index(step, j), rng)
        sample["step_j"] = (step, j)
        return sample


def _keys(start: int, js):
    step = start
    while True:
        for j in js:
            yield (step, j)
        step += 1


def _step_samples(dataset, seed, batch, start, js, workers: int, pin: bool, streams=None):
    """Iterator over this rank's samples from step ``start`` on (``workers``
    processes prefetching when > 0)."""
    if not js:
        return iter(())
    source = StepSamples(dataset, seed, batch, streams)
    if workers <= 0:
        return (source[k] for k in _keys(start, js))
    loader = torch.utils.data.DataLoader(
        source, sampler=_keys(start, js), batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=2)
    return iter(loader)


def _preset_of(config) -> str | None:
    for name, c in PRESETS.items():
        if c == config:
            return name
    return None


def _ema_update(ema_model, model, decay: float, step: int) -> None:
    # a shorter memory in the first steps, so the average is not the init
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for e, b in zip(ema_model.buffers(), model.buffers()):
            e.copy_(b)


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class _MetricsCSV:
    """``metrics.csv``, one row per step; on resume rows after the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: int = -1):
        rows = []
        if keep_until >= 0 and path.is_file():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    try:
                        if int(r["step"]) <= keep_until:
                            rows.append(r)
                    except (KeyError, ValueError):
                        continue
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=METRICS_FIELDS, extrasaction="ignore")
        self.w.writeheader()
        for r in rows:
            self.w.writerow(r)
        self.f.flush()

    def write(self, row: dict) -> None:
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


__all__ = ["train", "nmae_loss", "molecule_loss", "validation_nmae", "freeze_parameters",
           "WarmupCosine", "read_checkpoint", "weights_hash", "resolve_device", "StepSamples",
           "FREEZE_PARTS", "DEFAULT_LR", "DEFAULT_FINETUNE_LR"]
