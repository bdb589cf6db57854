"""Where a network runs: the one resolution of ``--device`` for training, evaluation and
prediction."""

from __future__ import annotations

import torch

from rhosr.errors import InputError


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` (or None): CUDA if available, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` or a ``torch.device`` as given.  InputError (one line) for another
    name or for CUDA on a machine without it."""
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"device {name}: choose auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name}: CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device {name}: {exc}") from None
