"""The model file: the one reader and writer of networks on disk (plain data and tensors,
read with ``weights_only=True``; the network rebuilt from its config)."""

from __future__ import annotations

import json
import os
import pickle
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from rhosr._version import __version__
from rhosr.core.elements import atomic_number
from rhosr.core.files import atomic_path
from rhosr.nn.config import ModelConfig
from rhosr.nn.nets import DensityNet, build

#: What QM9 holds: for model files whose training data predate the ``elements`` entry.
QM9_SEEN = {"elements": ["H", "C", "N", "O", "F"], "charges": [0]}


#: ``format`` entry of a model file.
MODEL_FORMAT = "rhosr-model"

#: Version of the model-file layout.
MODEL_FORMAT_VERSION = 1


def versions() -> dict:
    return {
        "rhosr": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "format_version": MODEL_FORMAT_VERSION,
    }


def model_record(config: ModelConfig, state_dict: dict, extra: dict | None = None) -> dict:
    """The record a model file holds: ``{"format": "rhosr-model", "config": asdict(config),
    "state_dict": ..., "extra": extra, "versions": ...}``, tensors copied to the CPU.

    ``extra`` must be JSON-able (it is stored as its JSON round trip).  Training
    checkpoints are this record with one more entry, ``training``
    (:func:`rhosr.training.checkpoint.write_checkpoint`)."""
    if not isinstance(config, ModelConfig):
        raise ValueError("config must be a ModelConfig; build the model with rhosr.nn.nets.build")
    try:
        extra = json.loads(json.dumps({} if extra is None else extra, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-able: {exc}") from exc
    if not isinstance(extra, dict):
        raise ValueError("extra must be a dict")
    return {
        "format": MODEL_FORMAT,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "extra": extra,
        "versions": versions(),
    }


def save_model(path, model: DensityNet, extra: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + ``os.replace``): the
    :func:`model_record` of its config, weights and ``extra``."""
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise ValueError("model has no ModelConfig; build it with rhosr.nn.nets.build")
    path = Path(path)
    atomic_torch_save(model_record(model.config, model.state_dict(), extra), path)
    return path


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename:
    a reader (or a kill) never sees a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def read_model_file(path, map_location="cpu") -> dict:
    """The checked record of a model file, read with the safe (weights-only) loader.

    Raises ValueError if the file is not a rhosr model file, including any
    file whose pickle references arbitrary code (refused, never executed).
    """
    not_ours = f"{path} is not a rhosr model file"
    try:
        record = torch.load(path, weights_only=True, map_location=map_location)
    except OSError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError,
            AttributeError, KeyError, IndexError) as exc:
        raise ValueError(f"{not_ours} (refused by the weights-only loader: {exc})") from exc
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(f"{not_ours} (no format={MODEL_FORMAT!r} entry)")
    state = record.get("state_dict")
    if not isinstance(record.get("config"), dict) or not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{not_ours} (config or state_dict missing or malformed)")
    record.setdefault("extra", {})
    record.setdefault("versions", {})
    return record


def seen_of(extra) -> dict | None:
    """``{"elements": [...], "charges": [...]}`` of a model file's training data (its
    ``extra``), or None when the file does not say.  Files trained on QM9 ids only
    (``qm9_*``) before the entry existed count as QM9's elements, neutral."""
    data = (extra or {}).get("training_data") or {}
    if isinstance(data.get("elements"), list) and isinstance(data.get("charges"), list):
        return {"elements": [str(e) for e in data["elements"]],
                "charges": sorted(int(c) for c in data["charges"])}
    ids = data.get("ids") or data.get("id_range") or []
    if ids and all(str(i).startswith("qm9_") for i in ids):
        return {k: list(v) for k, v in QM9_SEEN.items()}
    return None


def merge_seen(*seen) -> dict | None:
    """The union of several :func:`seen_of` results (None if any is unknown)."""
    if any(s is None for s in seen):
        return None
    elements = sorted({e for s in seen for e in s["elements"]}, key=atomic_number)
    return {"elements": elements, "charges": sorted({int(c) for s in seen for c in s["charges"]})}


def load_model(path, map_location="cpu") -> DensityNet:
    """Rebuild a network from a file written by :func:`save_model`, in eval mode.

    The state dict is loaded strictly; use :func:`read_model_file` for
    ``versions``.  ``model.seen`` is :func:`seen_of` the file, ``model.extra`` its ``extra``.
    """
    record = read_model_file(path, map_location=map_location)
    model = build(record["config"])
    try:
        model.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored config: {exc}") from exc
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    model.seen = seen_of(record["extra"])  # elements and charges of its training data
    model.extra = dict(record["extra"])  # e.g. its sad_variant: rhosr.nn.inputs.model_inputs
    return model.eval()


