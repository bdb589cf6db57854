"""The SAD's atoms: the shipped radial tables (``rhosr/data/sad_tables.npz``, built by
``scripts/build_sad_tables.py``) and the run-time Gaussian data of one element and variant."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from rhosr.core.elements import standard_symbol, unsupported_reason

VARIANTS = ("paper", "worsened")


@lru_cache(maxsize=1)
def tables() -> dict:
    path = resources.files("rhosr") / "data" / "sad_tables.npz"
    with resources.as_file(path) as p, np.load(p) as npz:
        return {k: npz[k] for k in npz.files}


def table_elements() -> list[str]:
    """Elements with shipped SAD tables, in order of atomic number."""
    return [str(s) for s in tables()["elements"]]


def table_key(symbol: str, variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown SAD variant {variant!r}; expected one of {VARIANTS}")
    sym = standard_symbol(symbol)
    key = f"{variant}__{sym}"
    if f"rho__{key}" not in tables():
        reason = unsupported_reason(sym) or "no SAD table shipped"
        raise ValueError(f"element {sym} is not supported by the SAD density: {reason}")
    return key


def radial_table(symbol: str, variant: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """The shipped radial density of one atom (before the molecular scaling).

    Parameters
    ----------
    symbol : str
        Element symbol, e.g. ``"C"``.
    variant : {"paper", "worsened"}

    Returns
    -------
    r_bohr : (n,) float64 array
        Uniform radii ``0, dr, 2 dr, ...``, bohr; the last one is the cutoff radius.
    rho : (n,) float64 array
        Spherical density of the projected atomic density matrix at ``r_bohr``,
        e/bohr³ (integrates to :func:`projected_electrons` up to the tail
        beyond the cutoff, < 1e-7 relative).  Read-only.  Step ``dr`` = 0.005
        bohr: cubic interpolation (e.g. ``scipy.interpolate.CubicSpline``) is
        accurate to ~1e-9 relative; :func:`sad_density` itself evaluates the
        exact Gaussian expansion behind these values.
    """
    tab = tables()
    rho = tab[f"rho__{table_key(symbol, variant)}"]
    r = np.arange(rho.size) * float(tab["dr"])
    rho = rho.view()
    rho.flags.writeable = False
    return r, rho


def cutoff_radius(symbol: str, variant: str = "paper") -> float:
    """Cutoff radius of an atom's SAD density, bohr.

    Less than 1e-7 of the atom's electrons lie beyond it.  :func:`sad_density`
    evaluates each atom on the mesh points of a cube of this half-width around
    it (the whole period along the axes where the cube is longer than the
    cell)."""
    r, _ = radial_table(symbol, variant)
    return float(r[-1])


def projected_electrons(symbol: str, variant: str = "paper") -> float:
    """``tr(P S)`` of the atom's density matrix projected onto gth-tzv2p.

    Slightly below the valence charge: the projection loses some charge, which
    the molecular scaling restores."""
    return float(tables()[f"nelec__{table_key(symbol, variant)}"])


class SADAtom:
    """Run-time data of one element and variant (see :func:`sad_atom`).

    The atom's density is a sum over pairs of primitive Gaussians of its
    gth-tzv2p basis, ``sum_l sum_ee' D^l_ee' sum_m x_m^(2l)
    exp(-(a_e + a_e') |x|^2)``, which is separable in x, y and z."""

    def __init__(self, symbol: str, variant: str):
        from scipy.interpolate import CubicSpline

        tab = tables()
        key = table_key(symbol, variant)
        r, _ = radial_table(symbol, variant)
        self.cutoff = float(r[-1])
        self.nelec = float(tab[f"nelec__{key}"])
        ovl = tab[f"ovl__{key}"]
        d = np.arange(ovl.size) * float(tab["dd"])
        self.overlap_range = float(d[-1])
        self._overlap = CubicSpline(d, ovl)
        # pairs e <= e' of primitives, per l: exponent indices and coefficients
        self.exps = {}
        self.pairs = {}
        for l in (0, 1):
            if f"exp{l}__{key}" not in tab:
                continue
            exps = tab[f"exp{l}__{key}"]
            dmat = tab[f"dm{l}__{key}"]
            i, j = np.triu_indices(exps.size)
            coef = dmat[i, j] * np.where(i == j, 1.0, 2.0)
            keep = coef != 0
            self.exps[l] = exps
            self.pairs[l] = (i[keep], j[keep], coef[keep])
        # merged form for an atom that does not reach its own images:
        # sum_b (d0_b + d1_b |x|^2) exp(-b |x|^2)
        b = np.concatenate([self.exps[l][i] + self.exps[l][j] for l, (i, j, _) in self.pairs.items()])
        c = np.concatenate([cf for cf in (p[2] for p in self.pairs.values())])
        lval = np.concatenate([np.full(p[2].size, l) for l, p in self.pairs.items()])
        self.b, inverse = np.unique(b, return_inverse=True)
        self.d0 = np.bincount(inverse, weights=np.where(lval == 0, c, 0.0), minlength=self.b.size)
        self.d1 = np.bincount(inverse, weights=np.where(lval == 1, c, 0.0), minlength=self.b.size)
        self.has_p = bool(np.any(self.d1 != 0))
        self.min_exp = min(float(e.min()) for e in self.exps.values())

    def image_charge(self, cell: np.ndarray) -> float:
        """Sum over lattice vectors T != 0 of ``tr(P S(T))``: what the periodic
        images add to the atom's charge ``tr(P S_pbc)``."""
        k = np.floor(self.overlap_range / cell).astype(int)
        t = np.stack(np.meshgrid(*[np.arange(-ki, ki + 1) for ki in k], indexing="ij"), -1)
        dist = np.linalg.norm(t.reshape(-1, 3) * cell, axis=1)
        dist = dist[(dist > 0) & (dist <= self.overlap_range)]
        return float(self._overlap(dist).sum()) if dist.size else 0.0


@lru_cache(maxsize=None)
def sad_atom(symbol: str, variant: str) -> SADAtom:
    return SADAtom(symbol, variant)


