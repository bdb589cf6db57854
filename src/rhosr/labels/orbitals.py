"""Densities from orbital records, with NumPy alone.

An orbital record keeps the occupied Kohn–Sham orbitals of a label (float32
coefficients in the ``gth-tzv2p`` basis, PySCF's basis-function order, and
their occupations) instead of the density on the fine mesh: some 30 KB per
QM9 molecule instead of megabytes.  This module turns such a record back into
the label density, ``ρ(r) = Σ_i n_i |Σ_L Σ_μ φ_μ(r - L) C_μi|²`` with the
lattice-summed basis functions, evaluated point by point on the fine mesh.

It needs no PySCF: the basis (per element: shells, exponents, contraction
coefficients with PySCF's normalisation, and the Cartesian-to-real-spherical
matrices) ships as ``rhosr/data/basis_gth-tzv2p.npz``, built from PySCF by
``python scripts/build_basis_table.py``; the tests check the evaluation
against PySCF's own route (:func:`rhosr.dft.scf.evaluate_density` and
``cell.pbc_eval_gto``).

Evaluated densities are cached under ``~/.cache/rhosr/densities`` (or
``$RHOSR_CACHE/densities``), one float32 ``.npy`` per record, named by a hash
of everything the density depends on (symbols, positions, cell, mesh,
coefficients, occupations, evaluator settings), so a changed record never
reads a stale cache.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from rhosr.core.elements import LABEL_BASIS, PSEUDOPOTENTIAL, supported_elements
from rhosr.core.files import atomic_path
from rhosr.core.grid import Grid

#: Default bound on the value of a neglected Gaussian term (× orbital
#: coefficient) in the density evaluation; see :func:`density_on_grid`.
DENSITY_EPS = 1e-12
#: Edge of the mesh brick, points, on which orbitals are built at once.
BRICK = (16, 16, 16)
#: Memory cap (bytes) for the largest temporary of the density evaluation.
DENSITY_MAX_BYTES = 64 * 1024**2
#: The shipped basis table.
BASIS_FILE = "basis_gth-tzv2p.npz"
#: Bumped whenever the evaluation changes what it returns (part of the cache key).
EVALUATOR_VERSION = 1


def cart_powers(l: int) -> list[tuple[int, int, int]]:
    """PySCF's order of Cartesian components of angular momentum ``l``."""
    return [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]


@lru_cache(maxsize=1)
def basis_table() -> dict:
    """{symbol: [(l, exponents (nprim,), coefficients (nprim, nctr)), ...], "c2s": {l: (ncart, nsph)}}."""
    with resources.files("rhosr").joinpath("data", BASIS_FILE).open("rb") as fh:
        data = np.load(fh)
        arrays = {k: data[k] for k in data.files}
    out = {"c2s": {}}
    for key, value in arrays.items():
        if key.startswith("c2s_"):
            out["c2s"][int(key[4:])] = value
    for sym in str(arrays["symbols"]).split():
        ls, nprim, nctr = arrays[f"{sym}_l"], arrays[f"{sym}_nprim"], arrays[f"{sym}_nctr"]
        exps, coefs = arrays[f"{sym}_exp"], arrays[f"{sym}_coef"]
        shells, e0, c0 = [], 0, 0
        for l, npr, nct in zip(ls, nprim, nctr):
            shells.append((int(l), exps[e0:e0 + npr], coefs[c0:c0 + npr * nct].reshape(npr, nct)))
            e0, c0 = e0 + npr, c0 + npr * nct
        out[sym] = shells
    return out


def build_basis_arrays() -> dict:
    """The arrays of the shipped basis table, from the installed PySCF (see the build script)."""
    from pyscf import gto as mol_gto
    from pyscf.pbc import gto

    arrays, lmax = {}, 0
    symbols = supported_elements()
    for sym in symbols:
        cell = gto.Cell()
        cell.atom = [(sym, (2.0, 2.0, 2.0))]
        cell.a = np.eye(3) * 4.0
        cell.basis, cell.pseudo, cell.unit = LABEL_BASIS, PSEUDOPOTENTIAL, "Bohr"
        cell.spin = None  # any parity of the electron count
        cell.verbose = 0
        cell.build(dump_input=False, parse_arg=False)
        ls = [cell.bas_angular(i) for i in range(cell.nbas)]
        coefs = [cell._libcint_ctr_coeff(i) for i in range(cell.nbas)]
        arrays[f"{sym}_l"] = np.array(ls, dtype=np.int64)
        arrays[f"{sym}_nprim"] = np.array([c.shape[0] for c in coefs], dtype=np.int64)
        arrays[f"{sym}_nctr"] = np.array([c.shape[1] for c in coefs], dtype=np.int64)
        arrays[f"{sym}_exp"] = np.concatenate([cell.bas_exp(i) for i in range(cell.nbas)])
        arrays[f"{sym}_coef"] = np.concatenate([c.ravel() for c in coefs])
        lmax = max([lmax, *ls])
    for l in range(lmax + 1):
        arrays[f"c2s_{l}"] = np.asarray(mol_gto.cart2sph(l), dtype=float)
    arrays["symbols"] = np.array(" ".join(symbols))
    return arrays


def basis_size(symbols) -> int:
    """Number of (spherical) basis functions of ``symbols`` in the shipped basis."""
    table = basis_table()
    return sum(c.shape[1] * (2 * l + 1) for s in symbols for l, _, c in _shells(table, s))


def _shells(table, symbol):
    try:
        return table[symbol]
    except KeyError:
        raise ValueError(f"{symbol}: not in the shipped {BASIS_FILE}") from None


def term_table(symbols, positions_bohr, orbitals: np.ndarray):
    """Every (shell, primitive, Cartesian component) of the molecule as a term.

    ``orbitals`` (nao, norb) are coefficients already scaled by √occupation.
    The orbitals are ``ψ_i(r) = Σ_t W[t, i] (x-X_t)^a (y-Y_t)^b (z-Z_t)^c
    exp(-α_t |r - R_t|²)`` (before the lattice sum).  Returns centres (T, 3)
    bohr, exponents (T,), powers (T, 3) and weights (T, norb).
    """
    table = basis_table()
    pos = np.asarray(positions_bohr, dtype=float).reshape(len(symbols), 3)
    orbitals = np.asarray(orbitals, dtype=float)
    nao, norb = orbitals.shape
    if nao != basis_size(symbols):
        raise ValueError(f"{nao} orbital coefficients per orbital, but the basis of "
                         f"{len(symbols)} atoms has {basis_size(symbols)} functions")
    cen, ex, pw, ww = [], [], [], []
    a0 = 0
    for sym, centre in zip(symbols, pos):
        for l, es, cf in _shells(table, sym):
            nctr, nsph = cf.shape[1], 2 * l + 1
            cs = orbitals[a0:a0 + nctr * nsph].reshape(nctr, nsph, norb)
            a0 += nctr * nsph
            w = np.einsum("pk,cm,kmi->pci", cf, table["c2s"][l], cs)  # (nprim, ncart, norb)
            pows = np.array(cart_powers(l), dtype=np.int64)
            nprim, ncart = len(es), len(pows)
            cen.append(np.broadcast_to(centre, (nprim * ncart, 3)))
            ex.append(np.repeat(es, ncart))
            pw.append(np.tile(pows, (nprim, 1)))
            ww.append(w.reshape(nprim * ncart, norb))
    return (np.concatenate(cen), np.concatenate(ex), np.concatenate(pw), np.concatenate(ww))


def orbital_density(symbols, positions_bohr, grid: Grid, mo_coeff, mo_occ,
                    eps: float = DENSITY_EPS) -> np.ndarray:
    """Valence density (fine mesh, float64, e/bohr³) of occupied orbitals.

    ``mo_coeff`` (nao, norb) in the shipped basis for ``symbols`` at
    ``positions_bohr`` (in the box of ``grid``), ``mo_occ`` (norb,).
    """
    occ = np.asarray(mo_occ, dtype=float)
    if np.any(occ < 0) or not np.all(np.isfinite(occ)):
        raise ValueError("occupations must be finite and non-negative")
    orbitals = np.asarray(mo_coeff, dtype=float) * np.sqrt(occ)[None, :]
    return density_on_grid(term_table(symbols, positions_bohr, orbitals), grid, eps=eps)


# --------------------------------------------------------------------------
# records and the density cache

#: Environment variable naming the cache folder (default ``~/.cache/rhosr``);
#: ``off`` evaluates every time and writes nothing.
CACHE_ENV = "RHOSR_CACHE"


def cache_dir() -> Path | None:
    """Folder of evaluated densities, or None when caching is off."""
    root = os.environ.get(CACHE_ENV, "").strip()
    if root.lower() == "off":
        return None
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "rhosr"
    return base / "densities"


def density_key(rec) -> str:
    """Hash of everything an orbital record's density depends on (hex, 32 digits)."""
    h = hashlib.sha256()
    h.update(f"v{EVALUATOR_VERSION} eps{DENSITY_EPS!r} {' '.join(rec.symbols)} "
             f"{tuple(int(n) for n in rec.fine_mesh)}".encode())
    for arr, dtype in ((rec.positions, np.float64), (rec.cell, np.float64),
                       (rec.mo_coeff, np.float32), (rec.mo_occ, np.float64)):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h.hexdigest()[:32]


def cache_path(rec) -> Path | None:
    """Where the density of orbital record ``rec`` is cached (None: caching off)."""
    folder = cache_dir()
    return None if folder is None else folder / f"{rec.id}-{density_key(rec)}.npy"


def density_from_record(rec, cache: bool = True) -> np.ndarray:
    """The fine-mesh density (float32, e/bohr³) of an orbital record, cached.

    A cached file is used only if its name (the :func:`density_key`) and its
    shape match; otherwise the density is evaluated and written atomically.
    """
    path = cache_path(rec) if cache else None
    if path is not None and path.is_file():
        try:
            rho = np.load(path)
            if rho.shape == tuple(rec.fine_mesh):
                return rho
        except (OSError, ValueError):
            pass  # damaged cache file: evaluate again and replace it
    grid = Grid(tuple(float(x) for x in rec.cell), tuple(int(n) for n in rec.fine_mesh))
    rho = orbital_density(rec.symbols, rec.positions, grid, rec.mo_coeff, rec.mo_occ)
    rho = rho.astype(np.float32)
    if path is not None:
        _save_cached(path, rho)
    return rho


def _save_cached(path: Path, rho: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, rho)
    except OSError:
        pass  # a read-only or full cache costs time, not correctness


# --------------------------------------------------------------------------
# the point-wise evaluation

def _term_radius(wmax, ex, l, eps):
    """Distance beyond which ``wmax r^l exp(-α r²) < eps`` (0 if nowhere above)."""
    r = np.sqrt(np.maximum(l, 1) / (2 * ex)) + 1.0
    for _ in range(40):
        arg = np.log(np.maximum(wmax, 1e-300) * np.maximum(r, 1e-6) ** l / eps)
        r = np.sqrt(np.maximum(arg, 0.0) / ex)
    return r


def _periodic_images(cell_len, cen, r):
    """Shifts of term centres (by whole cells) that reach the box within r."""
    L = np.asarray(cell_len, dtype=float)
    nimg = np.ceil(r.max(initial=0.0) / L).astype(int) + 1
    rows, shifted = [], []
    for i in range(-nimg[0], nimg[0] + 1):
        for j in range(-nimg[1], nimg[1] + 1):
            for k in range(-nimg[2], nimg[2] + 1):
                c = cen + np.array([i, j, k]) * L
                d = np.maximum(0.0, np.maximum(-c, c - L))
                idx = np.nonzero(np.einsum("ij,ij->i", d, d) <= r * r)[0]
                if len(idx):
                    rows.append(idx)
                    shifted.append(c[idx])
    return np.concatenate(rows), np.concatenate(shifted)


def density_on_grid(terms, grid: Grid, eps: float = DENSITY_EPS, brick=BRICK,
                    max_bytes: int = DENSITY_MAX_BYTES) -> np.ndarray:
    """ρ(r) = Σ_i |Σ_L Σ_t W[t, i] g_t(r - L)|² on ``grid``, point by point (no FFT).

    ``terms`` = (centres (T, 3) bohr, exponents (T,), powers (T, 3), weights
    (T, norb)) from :func:`term_table`, occupations already folded into the
    weights as √n.  Works brick by brick; within a brick each Gaussian term is
    the outer product of per-axis factors, so the orbitals come from one
    matrix product.  A term is skipped in a brick where ``max_i |W_ti| r^l
    exp(-α r²) < eps`` everywhere, and the lattice sum takes every image
    within that radius of the box.  Memory is bounded by ``max_bytes``.
    Returns (nx, ny, nz) float64, e/bohr³.
    """
    cen0, ex0, pw0, w0 = terms
    nx, ny, nz = grid.mesh
    rho = np.zeros((nx, ny, nz))
    if w0.shape[1] == 0 or len(ex0) == 0:
        return rho
    r0 = _term_radius(np.abs(w0).max(axis=1), ex0, pw0.sum(axis=1), eps)
    rows, cen = _periodic_images(grid.cell, cen0, r0)
    ex, pw, r2 = ex0[rows], pw0[rows], r0[rows] ** 2
    w = np.ascontiguousarray(w0[rows])
    ax, ay, az = grid.axes()
    bx, by, bz = (int(b) for b in brick)

    for i0 in range(0, nx, bx):
        xs = ax[i0:i0 + bx]
        d2x = np.maximum(0.0, np.maximum(xs[0] - cen[:, 0], cen[:, 0] - xs[-1])) ** 2
        in_x = np.nonzero(d2x <= r2)[0]
        for j0 in range(0, ny, by):
            ys = ay[j0:j0 + by]
            cy = cen[in_x, 1]
            d2xy = d2x[in_x] + np.maximum(0.0, np.maximum(ys[0] - cy, cy - ys[-1])) ** 2
            keep = d2xy <= r2[in_x]
            in_xy, d2xy = in_x[keep], d2xy[keep]
            for k0 in range(0, nz, bz):
                zs = az[k0:k0 + bz]
                cz = cen[in_xy, 2]
                d2 = d2xy + np.maximum(0.0, np.maximum(zs[0] - cz, cz - zs[-1])) ** 2
                sel = in_xy[d2 <= r2[in_xy]]
                if len(sel) == 0:
                    continue
                rho[i0:i0 + bx, j0:j0 + by, k0:k0 + bz] = _brick_density(
                    xs, ys, zs, cen[sel], ex[sel], pw[sel], w[sel], max_bytes)
    return rho


def _axis_factor(x, c, a, p):
    """(x - c)^p exp(-a (x - c)²) for every term (rows) and point (columns)."""
    d = x[None, :] - c[:, None]
    f = np.exp(-a[:, None] * d * d)
    pmax = int(p.max(initial=0))
    if pmax:
        poly = np.ones_like(d)
        dp = np.ones_like(d)
        for n in range(1, pmax + 1):
            dp = dp * d
            m = p == n
            if m.any():
                poly[m] = dp[m]
        f *= poly
    return f


def _brick_density(xs, ys, zs, cen, ex, pw, w, max_bytes):
    nt, nocc = w.shape
    if nt * len(ys) * len(zs) * 8 > max_bytes and len(ys) * len(zs) > 1:
        # too many terms for one (T, sy*sz) table: halve the brick along y or z
        if len(zs) >= len(ys):
            h = len(zs) // 2
            parts = [_brick_density(xs, ys, zs[:h], cen, ex, pw, w, max_bytes),
                     _brick_density(xs, ys, zs[h:], cen, ex, pw, w, max_bytes)]
            return np.concatenate(parts, axis=2)
        h = len(ys) // 2
        parts = [_brick_density(xs, ys[:h], zs, cen, ex, pw, w, max_bytes),
                 _brick_density(xs, ys[h:], zs, cen, ex, pw, w, max_bytes)]
        return np.concatenate(parts, axis=1)
    X = _axis_factor(xs, cen[:, 0], ex, pw[:, 0])  # (T, sx)
    Y = _axis_factor(ys, cen[:, 1], ex, pw[:, 1])
    Z = _axis_factor(zs, cen[:, 2], ex, pw[:, 2])
    sx, sy, sz = len(xs), len(ys), len(zs)
    yz = (Y[:, :, None] * Z[:, None, :]).reshape(nt, sy * sz)
    out = np.zeros((sx, sy * sz))
    # orbitals in groups so that the (T, group, sx) and (group*sx, sy*sz) temporaries stay small
    per_orb = 8 * sx * max(nt, sy * sz)
    group = max(1, min(nocc, int(max_bytes // max(per_orb, 1))))
    for o0 in range(0, nocc, group):
        wx = (w[:, o0:o0 + group, None] * X[:, None, :]).reshape(nt, -1)  # (T, g*sx)
        psi = wx.T @ yz  # (g*sx, sy*sz): orbital values in the brick
        psi = psi.reshape(-1, sx, sy * sz)
        out += np.einsum("ixs,ixs->xs", psi, psi)
    return out.reshape(sx, sy, sz)
