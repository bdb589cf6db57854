"""Pulay mixing of densities (Pulay 1980; the DIIS of density-mixing plane-wave codes), for
:mod:`rhosr.dft.refine`.

Given inputs ρ_i and their residuals R_i = ρ_out[ρ_i] − ρ_i, the next input is
Σ c_i (ρ_i + β R_i) with Σ c_i = 1 minimising |Σ c_i R_i|²; with a preconditioner P it is
Σ c_i ρ_i + P(Σ c_i R_i) (:mod:`rhosr.dft.newton`: the Newton step for density matrices).
The residuals' inner products (``metric``, default the plain sum of products, taken between
their images under ``weigh``, computed once per residual) are kept between steps: each step
adds one row (one inner product per kept residual).
"""

from __future__ import annotations

import numpy as np


class PulayMixer:
    """The last ``history`` inputs and residuals (arrays of one shape) and their Gram matrix;
    ``beta``: the share of the residuals added (β); ``metric(weigh(a), weigh(b))``: their
    inner product (``weigh`` default the identity)."""

    def __init__(self, history: int, beta: float, metric=None, weigh=None):
        if history < 1 or not 0 < beta <= 1:
            raise ValueError(f"Pulay mixing needs history >= 1 and 0 < beta <= 1, not "
                             f"{history}, {beta}")
        self.history, self.beta = int(history), float(beta)
        self.metric = metric if metric is not None else (lambda a, b: float(np.vdot(a, b)))
        self.weigh = weigh if weigh is not None else (lambda a: a)
        self.inputs, self.residuals, self.weighed = [], [], []
        self.gram = np.zeros((0, 0))

    def next(self, rho_in, residual, precondition=None):
        """Add ``rho_in`` and its ``residual``; return the next input (``precondition``: a
        map of the combined residual that replaces β times it)."""
        self.inputs = (self.inputs + [rho_in])[-self.history:]
        self.residuals = (self.residuals + [residual])[-self.history:]
        self.weighed = (self.weighed + [self.weigh(residual)])[-self.history:]
        n = len(self.residuals)
        gram = np.empty((n, n))
        gram[:-1, :-1] = self.gram[-(n - 1):, -(n - 1):] if n > 1 else self.gram[:0, :0]
        gram[-1] = gram[:, -1] = [self.metric(w, self.weighed[-1]) for w in self.weighed]
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
        if precondition is not None:
            return (sum(ci * x for ci, x in zip(c, self.inputs))
                    + precondition(sum(ci * r for ci, r in zip(c, self.residuals))))
        return sum(ci * (x + self.beta * r) for ci, x, r in zip(c, self.inputs, self.residuals))
