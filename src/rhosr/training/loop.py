"""The training loop: NMAE loss, optimizer steps, EMA, validation, metrics, checkpoints.

One optimizer step sees ``batch`` molecules.  Boxes differ in size, so the molecules are
not stacked: each one runs forward and backward on its own and the gradients accumulate
(loss = mean over the batch of the per-molecule NMAE ``sum|pred - ref| / sum(ref)``).
Under ``torchrun`` molecule j of the step goes to rank ``j % world`` and the summed
gradients are all-reduced before the step (:mod:`rhosr.training.distributed`); what a
step sees is a pure function of ``(seed, step)`` (:mod:`rhosr.training.sampling`).

The loop is plain functions over one :class:`RunState` (set up by
:func:`rhosr.training.run.train`): :func:`run_loop` repeats :func:`one_step`,
:func:`validate` and, on rank 0, :func:`log_step` (``metrics.csv``, TensorBoard when
installed, checkpoints by :func:`save_checkpoint`, progress bar) until :func:`done`.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rhosr.errors import InputError
from rhosr.training.checkpoint import cpu_state, rng_states, write_checkpoint
from rhosr.training.config import TrainConfig
from rhosr.training.data import DensityDataset
from rhosr.training.distributed import World

#: Parts of a network for ``freeze``: aliases of top-level module names
#: (any top-level module name, or a parameter-name prefix, is accepted too).
FREEZE_PARTS = {
    "input": ("head",),
    "body": ("blocks", "body_tail", "enc", "down", "bottom", "up", "dec"),
    "output": ("upsample", "tail"),
}
METRICS_FIELDS = ("step", "epoch", "lr", "loss_nmae_percent", "grad_norm",
                  "val_nmae_percent", "seconds", "molecules_per_second")


# --------------------------------------------------------------------------
# loss, freezing, EMA


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


def ema_update(ema_model, model, decay: float, step: int) -> None:
    """One step of the weights' exponential moving average (buffers copied)."""
    # a shorter memory in the first steps, so the average is not the init
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for e, b in zip(ema_model.buffers(), model.buffers()):
            e.copy_(b)


# --------------------------------------------------------------------------
# logging


class MetricsCSV:
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


def open_tensorboard(out: Path):
    """A TensorBoard writer into ``out/tensorboard``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


# --------------------------------------------------------------------------
# the run's state


@dataclass
class RunState:
    """What the loop's steps read and change.  ``options``: the run's resolved options
    (:func:`rhosr.training.config.resolved`); ``args``: their checkpoint record;
    ``extra``: the unchanging part of the model file's ``extra``."""

    options: TrainConfig
    world: World
    out: Path
    model: torch.nn.Module
    ema_model: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    schedule: object
    samples: object
    my_js: list
    val_ds: DensityDataset
    train_molecules: int
    frozen: list
    args: dict
    extra: dict
    step: int = 0
    seconds_before: float = 0.0
    best: float | None = None
    last_val: float | None = None
    resumed: bool = False
    metrics: MetricsCSV | None = None
    tb: object = None
    bar: object = None
    last_ckpt_time: float = field(default_factory=time.perf_counter)

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def amp(self) -> bool:
        return self.options.precision == "bf16"

    @property
    def params(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


def save_checkpoint(run: RunState, path, seconds: float) -> None:
    """Write the run as a checkpoint (:mod:`rhosr.training.checkpoint`) to ``path``."""
    tr = {
        "step": run.step, "seconds": seconds, "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(), "rng": rng_states(),
        "best_val_nmae_percent": run.best, "val_nmae_percent": run.last_val,
        "frozen": run.frozen, "args": run.args,
    }
    if run.ema_model is not None:
        tr["model_state"] = cpu_state(run.model)
        tr["ema_state"] = cpu_state(run.ema_model)
    head = {k: run.extra[k] for k in ("preset", "parameters", "training_data")}
    extra = {**head, "best_val_nmae_percent": run.best, "val_nmae_percent": run.last_val,
             "steps": run.step, "seconds": round(seconds, 3),
             **{k: v for k, v in run.extra.items() if k not in head}}
    write_checkpoint(path, run.ema_model or run.model, extra, tr)


# --------------------------------------------------------------------------
# the loop's steps


def done(run: RunState, secs: float) -> bool:
    """Whether the budget of this call (steps, stop_after, minutes) is spent."""
    o = run.options
    if o.steps is not None and run.step >= o.steps:
        return True
    if o.stop_after is not None and run.step >= o.stop_after:
        return True
    return o.minutes is not None and secs >= 60.0 * o.minutes


def one_step(run: RunState, factor: float) -> tuple[float, float]:
    """One optimizer step at lr × ``factor``; returns (summed loss, gradient norm)."""
    o, params = run.options, run.params
    for g in run.optimizer.param_groups:
        g["lr"] = o.lr * factor
    for p in params:
        p.grad.zero_()
    loss_sum = 0.0
    for j in run.my_js:
        sample = next(run.samples)
        if tuple(sample["step_j"]) != (run.step, j):  # pragma: no cover - a bug, not input
            raise RuntimeError(f"sample {sample['step_j']} arrived at step {run.step}, slot {j}")
        loss = molecule_loss(run.model, sample, run.device, run.amp)
        (loss / o.batch).backward()
        loss_sum += float(loss.detach())
    run.world.all_reduce_grads(params)
    loss_sum = run.world.sum([loss_sum])[0]
    grad_norm = (float(torch.nn.utils.clip_grad_norm_(params, o.clip)) if o.clip
                 else float("nan"))
    run.optimizer.step()
    if run.ema_model is not None:
        ema_update(run.ema_model, run.model, float(o.ema), run.step)
    run.step += 1
    return loss_sum, grad_norm


def validate(run: RunState):
    """Validation NMAE (percent) of the EMA (or raw) weights, or None without molecules."""
    if not len(run.val_ds):
        return None
    total, count = validation_nmae(run.ema_model or run.model, run.val_ds, run.device, run.amp,
                                   run.world.rank, run.world.world)
    total, count = run.world.sum([total, count])
    run.last_val = total / max(count, 1)
    return run.last_val


def log_step(run: RunState, row: dict, val, improved: bool, finishing: bool, secs: float) -> None:
    """Rank 0: metrics row, TensorBoard, checkpoints, progress bar."""
    o = run.options
    run.metrics.write(row)
    if run.tb is not None:
        run.tb.add_scalar("train/loss_nmae_percent", row["loss_nmae_percent"], run.step)
        run.tb.add_scalar("train/lr", row["lr"], run.step)
        if val is not None:
            run.tb.add_scalar("val/nmae_percent", val, run.step)
    now = time.perf_counter()
    if improved:
        save_checkpoint(run, run.best_path, secs)
    if (run.step % o.checkpoint_every == 0 or finishing or val is not None
            or now - run.last_ckpt_time >= 60.0 * o.checkpoint_minutes):
        save_checkpoint(run, run.last_path, secs)
        run.last_ckpt_time = now
    if run.bar is not None:
        post = {"loss%": f"{row['loss_nmae_percent']:.3f}"}
        if run.last_val is not None:
            post["val%"] = f"{run.last_val:.3f}"
        if o.minutes is not None:
            post["left"] = f"{max(60.0 * o.minutes - secs, 0) / 60:.1f}min"
        run.bar.set_postfix(post, refresh=False)
        run.bar.update(1)


def run_loop(run: RunState) -> float:
    """Steps until the budget is spent; returns the run's seconds (with those before a resume)."""
    o, world = run.options, run.world
    t_run = time.perf_counter()
    run.last_ckpt_time = t_run
    elapsed = lambda: run.seconds_before + (time.perf_counter() - t_run)
    for p in run.params:
        p.grad = torch.zeros_like(p)
    secs = world.broadcast([elapsed()])[0]
    while not done(run, secs):
        t_step = time.perf_counter()
        factor = run.schedule.factor(run.step, secs)
        loss_sum, grad_norm = one_step(run, factor)
        secs = world.broadcast([elapsed()])[0]
        finishing = done(run, secs)
        val = validate(run) if run.step % o.val_every == 0 or finishing else None
        improved = val is not None and (run.best is None or val < run.best)
        if improved:
            run.best = val
        if world.main:
            row = {"step": run.step, "epoch": (run.step * o.batch - 1) // run.train_molecules,
                   "lr": o.lr * factor, "loss_nmae_percent": 100.0 * loss_sum / o.batch,
                   "grad_norm": grad_norm, "val_nmae_percent": "" if val is None else val,
                   "seconds": secs,
                   "molecules_per_second": o.batch / max(time.perf_counter() - t_step, 1e-9)}
            log_step(run, row, val, improved, finishing, secs)
    run.samples = None  # ends the loader's worker processes
    return secs
