"""A training run: :func:`train` sets it up from its options, runs the loop and finishes.

Set-up, in this order (the order keeps a resumed run exact): the run directory and its
checkpoint (:func:`open_run_dir`), the run's options (:func:`run_options`: those of this
call, the checkpoint's where :data:`rhosr.training.config.RESUME` says, the defaults chosen
for the device), the molecules (:func:`select_data`), the network, seeded
(:func:`build_network`), optimizer and schedule, the checkpoint's weights, optimizer,
schedule and RNG states (:func:`restore`), the sample stream (:func:`make_samples`) and
rank 0's logging (:func:`open_logging`).  Then :func:`rhosr.training.loop.run_loop`, and
:func:`finish`: the final checkpoints and the summary.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rhosr.errors import InputError
from rhosr.labels.bank import open_labels, store_paths
from rhosr.nn.config import PRESETS, TRAIN_PRESET, ModelConfig, make_config
from rhosr.nn.modelfile import merge_seen, read_model_file, seen_of
from rhosr.nn.nets import build, count_parameters
from rhosr.training.checkpoint import (
    ema_state,
    raw_state,
    read_checkpoint,
    set_rng_states,
    weights_hash,
)
from rhosr.training.config import (
    TrainConfig,
    given_options,
    options_record,
    resolved,
    resumed,
    saved_options,
)
from rhosr.training.data import DensityDataset, training_ids
from rhosr.training.distributed import World
from rhosr.training.loop import (
    MetricsCSV,
    RunState,
    freeze_parameters,
    open_tensorboard,
    run_loop,
    save_checkpoint,
)
from rhosr.training.sampling import mix_streams, step_samples
from rhosr.training.schedule import make_schedule

#: Env var: a folder where every rank writes ``rank<r>.sha256`` of its final weights.
HASH_DIR_ENV = "RHOSR_WEIGHTS_HASH_DIR"


def train(store, out_dir, config: TrainConfig | None = None, **options) -> dict:
    """Train a network on the records of a store; returns a summary dict.

    ``store``: a store, bank or path, or a list of them read as one
    (:class:`rhosr.labels.bank.Union`; ids must be unique across them).  ``out_dir``: the
    run directory: ``last.pt``, ``best.pt`` (:mod:`rhosr.training.checkpoint`),
    ``metrics.csv`` (and TensorBoard events if ``tensorboard`` is installed).  The options
    (``config`` and/or keywords, keywords winning) are the fields of
    :class:`rhosr.training.config.TrainConfig`; with ``resume=True`` the ones not given
    come from the run's checkpoint as :data:`rhosr.training.config.RESUME` says, and a
    fixed one given with another value is refused (InputError).

    The summary: run_dir, last, best, steps, seconds, best_val_nmae_percent,
    val_nmae_percent, train_molecules, val_molecules, world_size, weights_sha256 (of the
    raw weights) and frozen (parameter names).
    """
    options, given = given_options(config, **options)
    world = World(options.device)
    try:
        run = set_up(store, Path(out_dir), options, given, world)
        return finish(run, run_loop(run))
    finally:
        world.close()


# --------------------------------------------------------------------------
# set-up steps


def open_run_dir(out: Path, resume: bool, world: World) -> dict | None:
    """The checkpoint ``out/last.pt`` to resume from (None: a fresh run); creates ``out``."""
    last = out / "last.pt"
    ckpt = None
    if resume and last.is_file():
        try:
            ckpt = read_checkpoint(last)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    elif not resume and last.exists():
        raise InputError(f"{out}: already holds a run (last.pt); use --resume or another --out")
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    world.barrier()
    return ckpt


def run_options(options: TrainConfig, given, ckpt, device_type: str) -> TrainConfig:
    """The run's resolved options: this call's, the checkpoint's where a resume inherits
    them, the defaults chosen for ``device_type``."""
    if ckpt is not None:
        options = resumed(options, given, saved_options(ckpt))
    return resolved(options, device_type)


@dataclass
class Data:
    """The run's molecules: stores, training and validation ids, mix streams."""

    store: object
    val_store: object
    train_ids: list
    val_ids: list
    streams: object


def select_data(store, o: TrainConfig) -> Data:
    """Open the stores and choose the training and validation molecules."""
    store = open_labels(store)
    val_store = open_labels(o.val_store) if o.val_store is not None else None
    train_ids, val_ids = training_ids(store, val_store, o.val_fraction, o.ids or (), o.val_ids or ())
    if not train_ids:
        raise InputError(f"{store.path}: no training molecules (QM9 val/test ids never "
                         "train" + (", and --ids matched none)" if o.ids else ")"))
    streams = mix_streams(store, train_ids, o.mix)
    if o.val_max is not None:
        val_ids = val_ids[: int(o.val_max)]
    return Data(store, val_store, train_ids, val_ids, streams)


def preset_of(config: ModelConfig) -> str | None:
    """The name of the preset that is ``config``, or None."""
    for name, c in PRESETS.items():
        if c == config:
            return name
    return None


def choose_network(o: TrainConfig, ckpt=None) -> tuple[ModelConfig, str | None, dict | None]:
    """(config, preset name, init record or None) of the run's network: the checkpoint's,
    else the ``init`` file's, else ``preset`` (default :data:`rhosr.nn.config.TRAIN_PRESET`)."""
    if ckpt is not None:
        return make_config(ckpt["config"]), ckpt["extra"].get("preset"), None
    if o.init is not None:
        try:
            record = read_model_file(o.init)
        except (OSError, ValueError) as exc:
            raise InputError(f"--init {o.init}: {exc}") from None
        config = make_config(record["config"])
        if o.preset is not None and make_config(o.preset) != config:
            wider = make_config(o.preset)
            if not _widens_inputs(config, wider):
                raise InputError(f"--init {o.init}: its architecture differs from preset "
                                 f"{o.preset!r}")
            return wider, o.preset, record
        return config, record["extra"].get("preset") or preset_of(config), record
    return make_config(o.preset or TRAIN_PRESET), o.preset or TRAIN_PRESET, None


def _widens_inputs(old: ModelConfig, new: ModelConfig) -> bool:
    """True when ``new`` is ``old`` reading more input channels after the same SAD channel
    (e.g. ``unet`` → ``unet-charge``): the init's weights then load where shapes allow."""
    return (old.inputs == "sad" and new.inputs != "sad"
            and dataclasses.replace(new, inputs="sad") == old)


def widen_inputs(state_dict: dict, model) -> dict:
    """``state_dict`` of a network reading fewer input channels, fitted to ``model``: each
    weight whose input dimension (1) is smaller gets zeros for the new channels, so that the
    widened network computes what the old one did until training moves them."""
    out = {}
    for name, want in model.state_dict().items():
        have = state_dict[name]
        if have.shape != want.shape:
            new = torch.zeros_like(want)
            new[:, : have.shape[1]] = have
            have = new
        out[name] = have
    return out


def build_network(o: TrainConfig, ckpt, device) -> tuple:
    """(model, EMA model or None, frozen names, preset name, init record) of a seeded run."""
    random.seed(o.seed)
    np.random.seed(o.seed % 2**32)
    torch.manual_seed(o.seed)
    config, preset_name, init_record = choose_network(o, ckpt)
    model = build(config)
    if init_record is not None:
        model.load_state_dict(widen_inputs(init_record["state_dict"], model), strict=True)
    frozen = freeze_parameters(model, o.freeze)
    model.to(device).train()
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("every parameter is frozen: nothing to train")
    ema_model = None
    if o.ema is not None:
        ema_model = copy.deepcopy(model).eval()
        for p in ema_model.parameters():
            p.requires_grad_(False)
    return model, ema_model, frozen, preset_name, init_record


def make_optimizer(model, o: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=o.lr)


def restore(ckpt, model, ema_model, optimizer, schedule, frozen) -> dict:
    """Load weights, optimizer, schedule and RNG states of ``ckpt``; returns the run's
    step, seconds_before, best and last_val (zeros and None for a fresh run)."""
    if ckpt is None:
        return {"step": 0, "seconds_before": 0.0, "best": None, "last_val": None}
    tr = ckpt["training"]
    model.load_state_dict(raw_state(ckpt), strict=True)
    if list(tr.get("frozen", [])) != frozen:
        raise InputError(f"--resume: the run froze {tr.get('frozen')}, this call {frozen}")
    if "optimizer" in tr:  # a slim resume point has none: AdamW starts its moments anew
        optimizer.load_state_dict(tr["optimizer"])
    schedule.load_state_dict(tr["schedule"])
    if ema_model is not None:
        ema_model.load_state_dict(ema_state(ckpt) or model.state_dict(), strict=True)
    set_rng_states(tr["rng"])
    return {"step": int(tr["step"]), "seconds_before": float(tr["seconds"]),
            "best": tr.get("best_val_nmae_percent"), "last_val": tr.get("val_nmae_percent")}


def make_samples(o: TrainConfig, data: Data, model, world: World, start: int):
    """(this rank's sample iterator from step ``start``, its slots of a step, validation set)."""
    if o.crop is not None and not model.is_local:
        raise InputError(f"--crop needs a local network; {model.config.arch} is not (train on "
                         "whole boxes)")
    halo = model.receptive_field if o.crop is not None else 0
    inputs = model.config.inputs
    train_ds = DensityDataset(data.store, data.train_ids, augment=o.augment, seed=o.seed,
                              cache=o.cache, crop=o.crop, halo=halo, sad_variant=o.sad_variant,
                              inputs=inputs)
    val_ds = DensityDataset(data.val_store or data.store, data.val_ids, cache=o.cache,
                            sad_variant=o.sad_variant, inputs=inputs)
    my_js = list(range(world.rank, o.batch, world.world))
    workers = o.workers
    if workers == "auto":
        per_rank = max((os.cpu_count() or 1) // max(world.world, 1), 1)
        workers = min(4, per_rank - 1) if world.device.type == "cuda" else 0
    samples = step_samples(train_ds, o.seed, o.batch, start, my_js, int(workers),
                           world.device.type == "cuda", data.streams)
    return samples, my_js, val_ds


def seen_by(data: Data, init_record, ckpt) -> dict:
    """Elements and charges of the training molecules, with those the start model saw
    (the ``elements`` and ``charges`` entries of the model file); {} when the start
    model's are unknown."""
    elements, charges = set(), set()
    for rec in data.store.records(data.train_ids, density=False):
        elements.update(rec.symbols)
        charges.add(int(rec.charge))
    here = {"elements": sorted(elements), "charges": sorted(charges)}
    before = [seen_of(r["extra"]) for r in (init_record, ckpt) if r is not None]
    return merge_seen(here, *before) or {}


def run_extra(o: TrainConfig, data: Data, model, preset_name, seen: dict, world: World) -> dict:
    """The model file's ``extra`` but the run's progress (see ``save_checkpoint``)."""
    paths = store_paths(data.store)
    training_data = {
        "store": paths[0] if len(paths) == 1 else paths, "molecules": len(data.train_ids),
        "id_range": [min(data.train_ids), max(data.train_ids)],
        "val_store": None if data.val_store is None else store_paths(data.val_store)[0],
        "val_molecules": len(data.val_ids), "val_fraction": o.val_fraction,
        "mix": o.mix, "ids_patterns": o.ids, **seen, "ids": list(data.train_ids),
    }
    return {"preset": preset_name, "parameters": count_parameters(model, trainable_only=False),
            "training_data": training_data, "init": o.init, "freeze": list(o.freeze),
            "ema": o.ema, "seed": o.seed, "normalize": True, "sad_variant": o.sad_variant,
            "world_size": world.world}


def set_up(store, out: Path, options: TrainConfig, given, world: World) -> RunState:
    """The run's state, ready for :func:`rhosr.training.loop.run_loop` (see the module docstring)."""
    ckpt = open_run_dir(out, options.resume, world)
    o = run_options(options, given, ckpt, world.device.type)
    data = select_data(store, o)
    model, ema_model, frozen, preset_name, init_record = build_network(o, ckpt, world.device)
    optimizer = make_optimizer(model, o)
    schedule = make_schedule(o.schedule, o.steps, o.minutes, o.warmup)
    progress = restore(ckpt, model, ema_model, optimizer, schedule, frozen)
    world.broadcast_module(model)
    if ema_model is not None:
        world.broadcast_module(ema_model)
    samples, my_js, val_ds = make_samples(o, data, model, world, progress["step"])
    val_paths = None if data.val_store is None else store_paths(data.val_store)
    run = RunState(
        options=o, world=world, out=out, model=model, ema_model=ema_model, optimizer=optimizer,
        schedule=schedule, samples=samples, my_js=my_js, val_ds=val_ds,
        train_molecules=len(data.train_ids), frozen=frozen,
        args=options_record(o, world.world, world.device.type,
                            val_paths[0] if val_paths and len(val_paths) == 1 else val_paths),
        extra=run_extra(o, data, model, preset_name, seen_by(data, init_record, ckpt), world),
        resumed=ckpt is not None, **progress)
    open_logging(run)
    return run


def open_logging(run: RunState) -> None:
    """Rank 0: ``metrics.csv`` (kept up to a resumed run's step), TensorBoard, progress bar,
    and one line saying what starts."""
    if not run.world.main:
        return
    o = run.options
    run.metrics = MetricsCSV(run.out / "metrics.csv", keep_until=run.step if run.resumed else -1)
    run.tb = open_tensorboard(run.out)
    if o.progress:
        run.bar = tqdm(total=o.steps, initial=run.step, unit="step", dynamic_ncols=True,
                       desc=f"train {run.extra['preset'] or run.model.config.arch}")
    if run.resumed:
        print(f"rhosr train: resuming {run.last_path} at step {run.step}", flush=True)
    else:
        print(f"rhosr train: {run.train_molecules} training / {len(run.val_ds)} validation "
              f"molecules, {count_parameters(run.model):,} trainable parameters, device "
              f"{run.device}, world {run.world.world}", flush=True)


# --------------------------------------------------------------------------
# finish


def finish(run: RunState, secs: float) -> dict:
    """Final checkpoints (``best.pt`` is the final weights when nothing validated), close
    the logs, check that every rank holds the same weights; the summary of :func:`train`."""
    world = run.world
    if world.main:
        if not run.best_path.exists():
            # no validation molecules: the final weights are the best we know
            save_checkpoint(run, run.best_path, secs)
        save_checkpoint(run, run.last_path, secs)
        if run.bar is not None:
            run.bar.close()
        if run.tb is not None:
            run.tb.close()
        run.metrics.close()
    digest = weights_hash(run.model)
    hash_dir = os.environ.get(HASH_DIR_ENV)
    if hash_dir:
        Path(hash_dir).mkdir(parents=True, exist_ok=True)
        (Path(hash_dir) / f"rank{world.rank}.sha256").write_text(digest + "\n")
    if not world.all_equal(digest):
        raise RuntimeError("data-parallel ranks ended with different weights")
    world.barrier()
    return {
        "run_dir": str(run.out), "last": str(run.last_path), "best": str(run.best_path),
        "steps": run.step, "seconds": secs, "best_val_nmae_percent": run.best,
        "val_nmae_percent": run.last_val, "train_molecules": run.train_molecules,
        "val_molecules": len(run.val_ds), "world_size": world.world,
        "weights_sha256": digest, "frozen": run.frozen,
    }
