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
(:func:`rhosr.model.load_model` reads them; ``state_dict`` holds the EMA
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

import numpy as np
import torch

from .dataset import DensityDataset, select_ids
from .model import (DEFAULT_PRESET, MODEL_FORMAT, PRESETS, atomic_torch_save, build, count_parameters,
                    make_config, read_model_file)
from .molecule import InputError, split_of_id

#: Learning rate of a fresh training, and of a fine-tuning (``init``).
DEFAULT_LR = 1e-3
DEFAULT_FINETUNE_LR = 1e-4
DEFAULT_BATCH = 4
DEFAULT_VAL_EVERY = 200
#: Steps of a run given neither ``steps`` nor ``minutes``.
DEFAULT_STEPS = 1000
#: Parts of a network for ``freeze``: aliases of top-level module names
#: (any top-level module name, or a parameter-name prefix, is accepted too).
FREEZE_PARTS = {
    "input": ("head",),
    "body": ("blocks", "body_tail"),
    "output": ("upsample", "tail"),
}
METRICS_FIELDS = ("step", "epoch", "lr", "loss_nmae_percent", "grad_norm",
                  "val_nmae_percent", "seconds", "molecules_per_second")
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
    from .bank import open_labels

    return open_labels(store)


def _training_ids(store, val_store, val_fraction):
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
          lr=None, batch: int = DEFAULT_BATCH, val_every: int = DEFAULT_VAL_EVERY,
          device="auto", ema=None, weight_decay: float = 1e-4, clip: float = 1.0,
          warmup: float = 0.05, augment: bool = True, crop=None, val_max=None,
          checkpoint_every=None, checkpoint_minutes: float = 10.0, stop_after=None,
          progress: bool = True, sad_variant: str = "paper", cache=True,
          workers="auto") -> dict:
    """Train a network on the records of a store; returns a summary dict.

    Parameters
    ----------
    store, val_store : Store or path
        Training records (QM9 ids: split 'train' only; others: all but the
        ``val_fraction`` hashed to validation).  Validation: QM9 'val' records
        and the hashed fraction, or, with ``val_store``, that store's records
        (QM9 'test' excluded).
    out_dir : path
        Run directory: ``last.pt``, ``best.pt``, ``metrics.csv`` (and
        TensorBoard events if ``tensorboard`` is installed).
    preset : str, optional
        Model preset (default :data:`rhosr.model.DEFAULT_PRESET`; with
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
    batch : molecules per optimizer step (gradient accumulation).
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
    cache : see :class:`rhosr.dataset.DensityDataset` (SAD kept in memory).
    workers : int or "auto"
        Processes preparing samples ahead (auto: up to 4 on CUDA, 0 on CPU).
    """
    world = _Dist(device)
    try:
        return _train(world, store, out_dir, preset, steps, minutes, seed, resume, init,
                      tuple(freeze or ()), val_store, val_fraction, lr, batch, val_every, ema,
                      weight_decay, clip, warmup, augment, crop, val_max, checkpoint_every,
                      checkpoint_minutes, stop_after, progress, sad_variant, cache, workers)
    finally:
        world.close()


def _train(world, store, out_dir, preset, steps, minutes, seed, resume, init, freeze,
           val_store, val_fraction, lr, batch, val_every, ema, weight_decay, clip, warmup,
           augment, crop, val_max, checkpoint_every, checkpoint_minutes, stop_after, progress,
           sad_variant, cache, workers):
    device = world.device
    amp = device.type == "cuda"
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    if val_every < 1:
        raise InputError(f"val_every must be >= 1, got {val_every}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if ema is not None and not 0.0 < float(ema) < 1.0:
        raise InputError(f"ema decay must be in (0, 1), got {ema}")
    if steps is None and minutes is None:
        steps = DEFAULT_STEPS
    if steps is not None and steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if minutes is not None and minutes <= 0:
        raise InputError(f"minutes must be > 0, got {minutes}")
    checkpoint_every = int(checkpoint_every or val_every)

    store = _open_store(store)
    val_store = _open_store(val_store) if val_store is not None else None
    train_ids, val_ids = _training_ids(store, val_store, val_fraction)
    if not train_ids:
        raise InputError(f"{store.path}: no training molecules (QM9 val/test ids never train)")
    if val_max is not None:
        val_ids = val_ids[: int(val_max)]

    out = Path(out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt = None
    if resume and last_path.is_file():
        try:
            ckpt = read_checkpoint(last_path)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    elif not resume and last_path.exists():
        raise InputError(f"{out}: already holds a run (last.pt); use --resume or another --out")
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    world.barrier()

    # ---- model
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    init_record = None
    if ckpt is not None:
        config = make_config(ckpt["config"])
        preset_name = ckpt["extra"].get("preset")
    elif init is not None:
        try:
            init_record = read_model_file(init)
        except (OSError, ValueError) as exc:
            raise InputError(f"--init {init}: {exc}") from None
        config = make_config(init_record["config"])
        if preset is not None and make_config(preset) != config:
            raise InputError(f"--init {init}: its architecture differs from preset {preset!r}")
        preset_name = init_record["extra"].get("preset") or _preset_of(config)
    else:
        try:
            config = make_config(preset or DEFAULT_PRESET)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        preset_name = preset or DEFAULT_PRESET
    model = build(config)
    if init_record is not None:
        model.load_state_dict(init_record["state_dict"], strict=True)
    frozen = freeze_parameters(model, freeze)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("every parameter is frozen: nothing to train")
    if lr is None and ckpt is not None:
        lr = ckpt["training"].get("args", {}).get("lr")
    if lr is None:
        lr = DEFAULT_FINETUNE_LR if init is not None else DEFAULT_LR
    lr = float(lr)
    if not lr > 0:
        raise InputError(f"lr must be > 0, got {lr}")
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr)
    schedule = WarmupCosine(steps, None if minutes is None else 60.0 * minutes, warmup)
    ema_model = None
    if ema is not None:
        ema_model = copy.deepcopy(model).eval()
        for p in ema_model.parameters():
            p.requires_grad_(False)

    step, seconds_before, best = 0, 0.0, None
    last_val = None
    if ckpt is not None:
        tr = ckpt["training"]
        model.load_state_dict(tr.get("model_state", ckpt["state_dict"]), strict=True)
        if list(tr.get("frozen", [])) != frozen:
            raise InputError(f"--resume: the run froze {tr.get('frozen')}, this call {frozen}")
        optimizer.load_state_dict(tr["optimizer"])
        schedule.load_state_dict(tr["schedule"])
        if ema_model is not None:
            if "ema_state" in tr:
                ema_model.load_state_dict(tr["ema_state"], strict=True)
            else:
                ema_model.load_state_dict(model.state_dict())
        step = int(tr["step"])
        seconds_before = float(tr["seconds"])
        best = tr.get("best_val_nmae_percent")
        last_val = tr.get("val_nmae_percent")
        _set_rng_states(tr["rng"])
    world.broadcast_module(model)
    if ema_model is not None:
        world.broadcast_module(ema_model)

    halo = model.receptive_field if crop is not None else 0
    train_ds = DensityDataset(store, train_ids, augment=augment, seed=seed, cache=cache,
                              crop=crop, halo=halo, sad_variant=sad_variant)
    val_ds = DensityDataset(val_store or store, val_ids, cache=cache, sad_variant=sad_variant)

    my_js = list(range(world.rank, batch, world.world))
    if workers == "auto":
        per_rank = max((os.cpu_count() or 1) // max(world.world, 1), 1)
        workers = min(4, per_rank - 1) if device.type == "cuda" else 0
    workers = int(workers)
    samples = _step_samples(train_ds, seed, batch, step, my_js, workers, device.type == "cuda")

    run_info = {
        "seed": seed, "batch": batch, "lr": lr, "steps": steps, "minutes": minutes,
        "val_every": val_every, "ema": ema, "weight_decay": weight_decay, "clip": clip,
        "warmup": warmup, "augment": augment, "crop": crop, "val_fraction": val_fraction,
        "init": None if init is None else str(init), "freeze": list(freeze),
        "sad_variant": sad_variant, "normalize": True, "world_size": world.world,
        "device": device.type,
    }
    data_info = {
        "store": str(Path(store.path).resolve()), "molecules": len(train_ids),
        "id_range": [min(train_ids), max(train_ids)],
        "val_store": None if val_store is None else str(Path(val_store.path).resolve()),
        "val_molecules": len(val_ids), "val_fraction": val_fraction,
    }

    def extra(seconds):
        return {
            "preset": preset_name, "parameters": count_parameters(model, trainable_only=False),
            "training_data": data_info, "best_val_nmae_percent": best,
            "val_nmae_percent": last_val, "steps": step, "seconds": round(seconds, 3),
            "init": run_info["init"], "freeze": list(freeze), "ema": ema, "seed": seed,
            "normalize": True, "sad_variant": sad_variant, "world_size": world.world,
        }

    def checkpoint(path, seconds):
        from .model import _versions

        infer = ema_model if ema_model is not None else model
        tr = {
            "step": step, "seconds": seconds, "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "rng": _rng_states(),
            "best_val_nmae_percent": best, "val_nmae_percent": last_val,
            "frozen": frozen, "args": run_info,
        }
        if ema_model is not None:
            tr["model_state"] = _cpu_state(model)
            tr["ema_state"] = _cpu_state(ema_model)
        record = {"format": MODEL_FORMAT, "config": asdict(config), "state_dict": _cpu_state(infer),
                  "extra": _jsonable(extra(seconds)), "versions": _versions(), "training": tr}
        atomic_torch_save(record, path)

    # ---- logging (rank 0)
    metrics = tb = bar = None
    if world.main:
        metrics = _MetricsCSV(out / "metrics.csv", keep_until=step if ckpt is not None else -1)
        tb = _tensorboard(out)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True,
                       desc=f"train {preset_name or config.arch}")
        if ckpt is None:
            print(f"rhosr train: {len(train_ids)} training / {len(val_ids)} validation molecules, "
                  f"{count_parameters(model):,} trainable parameters, device {device}, "
                  f"world {world.world}", flush=True)
        else:
            print(f"rhosr train: resuming {last_path} at step {step}", flush=True)

    t_run = time.perf_counter()
    last_ckpt_time = t_run

    def elapsed() -> float:
        return seconds_before + (time.perf_counter() - t_run)

    def done(secs) -> bool:
        if steps is not None and step >= steps:
            return True
        if stop_after is not None and step >= stop_after:
            return True
        return minutes is not None and secs >= 60.0 * minutes

    for p in params:
        p.grad = torch.zeros_like(p)
    secs = world.broadcast([elapsed()])[0]
    while not done(secs):
        t_step = time.perf_counter()
        factor = schedule.factor(step, secs)
        for g in optimizer.param_groups:
            g["lr"] = lr * factor
        for p in params:
            p.grad.zero_()
        loss_sum = 0.0
        for j in my_js:
            sample = next(samples)
            if tuple(sample["step_j"]) != (step, j):  # pragma: no cover - a bug, not user input
                raise RuntimeError(f"sample {sample['step_j']} arrived at step {step}, slot {j}")
            loss = molecule_loss(model, sample, device, amp)
            (loss / batch).backward()
            loss_sum += float(loss.detach())
        world.all_reduce_grads(params)
        loss_sum = world.sum([loss_sum])[0]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if clip else float("nan")
        optimizer.step()
        if ema_model is not None:
            _ema_update(ema_model, model, float(ema), step)
        step += 1
        secs = world.broadcast([elapsed()])[0]
        epoch = (step * batch - 1) // len(train_ids)
        val = None
        finishing = done(secs)
        if step % val_every == 0 or finishing:
            if val_ids:
                total, count = validation_nmae(ema_model or model, val_ds, device, amp,
                                               world.rank, world.world)
                total, count = world.sum([total, count])
                val = total / max(count, 1)
                last_val = val
        improved = val is not None and (best is None or val < best)
        if improved:
            best = val
        if world.main:
            mps = batch / max(time.perf_counter() - t_step, 1e-9)
            row = {"step": step, "epoch": epoch, "lr": lr * factor,
                   "loss_nmae_percent": 100.0 * loss_sum / batch, "grad_norm": grad_norm,
                   "val_nmae_percent": "" if val is None else val, "seconds": secs,
                   "molecules_per_second": mps}
            metrics.write(row)
            if tb is not None:
                tb.add_scalar("train/loss_nmae_percent", row["loss_nmae_percent"], step)
                tb.add_scalar("train/lr", row["lr"], step)
                if val is not None:
                    tb.add_scalar("val/nmae_percent", val, step)
            now = time.perf_counter()
            if improved:
                checkpoint(best_path, secs)
            if (step % checkpoint_every == 0 or finishing or val is not None
                    or now - last_ckpt_time >= 60.0 * checkpoint_minutes):
                checkpoint(last_path, secs)
                last_ckpt_time = now
            if bar is not None:
                post = {"loss%": f"{row['loss_nmae_percent']:.3f}"}
                if last_val is not None:
                    post["val%"] = f"{last_val:.3f}"
                if minutes is not None:
                    post["left"] = f"{max(60.0 * minutes - secs, 0) / 60:.1f}min"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
    del samples  # ends the loader's worker processes
    if world.main:
        if not best_path.exists():
            # no validation molecules: the final weights are the best we know
            checkpoint(best_path, secs)
        checkpoint(last_path, secs)
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        metrics.close()
    digest = weights_hash(model)
    hash_dir = os.environ.get(HASH_DIR_ENV)
    if hash_dir:
        Path(hash_dir).mkdir(parents=True, exist_ok=True)
        (Path(hash_dir) / f"rank{world.rank}.sha256").write_text(digest + "\n")
    if not world.all_equal(digest):
        raise RuntimeError("data-parallel ranks ended with different weights")
    world.barrier()
    return {
        "run_dir": str(out), "last": str(last_path), "best": str(best_path), "steps": step,
        "seconds": secs, "best_val_nmae_percent": best, "val_nmae_percent": last_val,
        "train_molecules": len(train_ids), "val_molecules": len(val_ids),
        "world_size": world.world, "weights_sha256": digest, "frozen": frozen,
    }


class StepSamples(torch.utils.data.Dataset):
    """Training samples keyed by ``(step, j)``: molecule j of optimizer step ``step``.

    The molecule is entry ``step * batch + j`` of the epoch-wise seeded
    permutation of ``dataset`` (epoch e: ``default_rng([seed, 1, e])``), its
    augmentation drawn from ``default_rng([seed, 2, step, j])``: a pure
    function of the key, so workers, ranks and resumed runs agree."""

    def __init__(self, dataset: DensityDataset, seed: int, batch: int):
        self.dataset, self.seed, self.batch = dataset, int(seed), int(batch)
        self._epoch, self._perm = None, None

    def index(self, step: int, j: int) -> int:
        epoch, k = divmod(step * self.batch + j, len(self.dataset))
        if self._epoch != epoch:
            self._perm = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.dataset))
            self._epoch = epoch
        return int(self._perm[k])

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


def _step_samples(dataset, seed, batch, start, js, workers: int, pin: bool):
    """Iterator over this rank's samples from step ``start`` on (``workers``
    processes prefetching when > 0)."""
    if not js:
        return iter(())
    source = StepSamples(dataset, seed, batch)
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
