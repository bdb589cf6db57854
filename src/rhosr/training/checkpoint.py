"""Training checkpoints: model files with one more entry, ``training``.

``RUN_DIR/last.pt`` and ``RUN_DIR/best.pt`` are the :func:`rhosr.nn.modelfile.model_record`
of the network (``state_dict``: the EMA weights when EMA is on, else the raw weights;
:func:`rhosr.nn.modelfile.load_model` reads them) plus ``training``::

    step, seconds            optimizer steps done, training seconds so far
    optimizer                AdamW state (absent in a slim resume point)
    schedule                 the learning-rate schedule's state_dict
    rng                      torch / numpy / python (/ CUDA) RNG states
    best_val_nmae_percent, val_nmae_percent
    frozen                   names of the frozen parameters
    args                     the run's options (rhosr.training.config.options_record)
    model_state, ema_state   with EMA: the raw and the averaged weights
    model_delta              slim resume point with EMA: raw - EMA weights, float16

Everything is plain data and tensors (``torch.load(path, weights_only=True)``), written to
a temporary file and renamed into place, so a run killed at any moment leaves a loadable
``last.pt``.  :func:`slim_checkpoint` writes the small resume point of one long run.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import torch

from rhosr.nn.modelfile import atomic_torch_save, model_record, read_model_file


def rng_states() -> dict:
    """The global RNG states of torch, NumPy, Python (and CUDA when in use), as plain data."""
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


def set_rng_states(state: dict) -> None:
    """Restore what :func:`rng_states` recorded."""
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


def cpu_state(module_or_state) -> dict:
    """A copy of a module's (or a state dict's) tensors on the CPU."""
    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 of the model's state dict (names and raw bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def jsonable(obj):
    """``obj`` with non-finite floats as None, tuples as lists and keys as strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_checkpoint(path, model: torch.nn.Module, extra: dict, training: dict) -> None:
    """Write a checkpoint: the model-file record of ``model`` (its config and weights) and
    ``extra``, plus the ``training`` entry; atomically."""
    record = model_record(model.config, model.state_dict(), jsonable(extra))
    record["training"] = training
    atomic_torch_save(record, path)


def read_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint's record (a model file with a ``training`` entry), read safely."""
    record = read_model_file(path, map_location=map_location)
    if not isinstance(record.get("training"), dict):
        raise ValueError(f"{path} is a model file but not a training checkpoint (no 'training')")
    return record


def raw_state(ckpt) -> dict:
    """The raw (not averaged) weights of a checkpoint, full or slim."""
    tr = ckpt["training"]
    if "model_delta" in tr:
        return {k: v + tr["model_delta"][k].to(v.dtype) if v.is_floating_point() else v
                for k, v in ckpt["state_dict"].items()}
    return tr.get("model_state", ckpt["state_dict"])


def ema_state(ckpt) -> dict | None:
    """The averaged weights of a checkpoint written with EMA, else None."""
    tr = ckpt["training"]
    if "ema_state" in tr:
        return tr["ema_state"]
    return ckpt["state_dict"] if "model_delta" in tr else None


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


def best_weights(best_path, last_path, dst) -> str:
    """Write the weights of the checkpoint ``best_path`` as a plain model file ``dst`` (no
    training state) unless they are ``last_path``'s own (same step), in which case ``dst``
    is removed; returns what was done (one line).  For the long run's committed state."""
    best, last = read_checkpoint(best_path), read_checkpoint(last_path)
    step = best["training"]["step"]
    if step == last["training"]["step"]:
        Path(dst).unlink(missing_ok=True)
        return f"best = resume point (step {step})"
    atomic_torch_save({k: v for k, v in best.items() if k != "training"}, dst)
    return f"best.pt: step {step}, validation {best['training'].get('best_val_nmae_percent')} %"
