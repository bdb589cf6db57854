"""Learning-rate schedules: a factor of the peak rate per step (plain Python, no torch).

:data:`SCHEDULES` names them for the ``schedule`` option; :func:`make_schedule` builds the
one a run uses.  A schedule's ``state_dict`` is part of every checkpoint (its position
and shape), so that a resumed run continues the same curve.
"""

from __future__ import annotations

import math

#: Learning-rate schedules of :func:`rhosr.training.run.train`.
SCHEDULES = ("cosine", "constant")


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


def make_schedule(name: str, steps=None, minutes=None, warmup: float = 0.05):
    """The schedule ``name`` of :data:`SCHEDULES` over a budget of ``steps`` and/or ``minutes``."""
    if name == "constant":
        return WarmupConstant()
    if name == "cosine":
        return WarmupCosine(steps, None if minutes is None else 60.0 * minutes, warmup)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
