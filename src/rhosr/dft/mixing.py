"""Pulay mixing of densities (Pulay 1980; the DIIS of density-mixing plane-wave codes), for
:mod:`rhosr.dft.refine`.

Given inputs ρ_i and their residuals R_i = ρ_out[ρ_i] − ρ_i, the next input is
Σ c_i (ρ_i + β R_i) with Σ c_i = 1 minimising |Σ c_i R_i|².  The residuals' inner products
are kept between steps: each step adds one row (one inner product per kept residual).
"""

from __future__ import annotations

import numpy as np


class PulayMixer:
    """The last ``history`` inputs and residuals (arrays of one shape) and their Gram matrix;
    ``beta``: the share of the residuals added (β)."""

    def __init__(self, history: int, beta: float):
        if history < 1 or not 0 < beta <= 1:
            raise ValueError(f"Pulay mixing needs history >= 1 and 0 < beta <= 1, not "
                             f"{history}, {beta}")
        self.history, self.beta = int(history), float(beta)
        self.inputs, self.residuals = [], []
        self.gram = np.zeros((0, 0))

    def next(self, rho_in, residual):
        """Add ``rho_in`` and its ``residual``; return the next input."""
        self.inputs = (self.inputs + [rho_in])[-self.history:]
        self.residuals = (self.residuals + [residual])[-self.history:]
        n = len(self.residuals)
        gram = np.empty((n, n))
        gram[:-1, :-1] = self.gram[-(n - 1):, -(n - 1):] if n > 1 else self.gram[:0, :0]
        gram[-1] = gram[:, -1] = [float(np.vdot(r, residual)) for r in self.residuals]
        self.gram = gram
        a = np.zeros((n + 1, n + 1))
        a[:n, :n] = gram
        a[n, :n] = a[:n, n] = 1.0
        rhs = np.zeros(n + 1)
        rhs[n] = 1.0
        try:
            c = np.linalg.solve(a, rhs)[:n]
        except np.linalg.LinAlgError:
            c = np.zeros(n)
            c[-1] = 1.0
        return sum(ci * (x + self.beta * r) for ci, x, r in zip(c, self.inputs, self.residuals))
