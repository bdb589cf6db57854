"""SAD (superposition of atomic densities) input density on a periodic mesh.

The published recipe, per element: one neutral isolated atom with the GTH-PBE
pseudopotential in the minimal ``gth-szv`` basis; its density matrix is the
core-Hamiltonian ("1e") guess of PySCF's spherically averaged atomic
calculation (``pyscf.scf.atom_hf_pp.AtomSCFPP``, standard non-relativistic
shell occupations; for hydrogen the exact one-electron solution in the basis),
projected onto ``gth-tzv2p`` (``pyscf.scf.addons.project_dm_nr2nr``).  The
molecular density matrix is the block diagonal of the atomic ones, scaled as a
whole to the exact valence electron count, and evaluated on the mesh of the
periodic cell (Bloch-summed orbitals, as PySCF's ``pbc`` numerical
integration does).  The "worsened" variant doubles every primitive exponent
of ``gth-szv`` first.

``data/sad_tables.npz`` (built by ``scripts/build_sad_tables.py``) holds, per
element and variant, the atom's spherical density matrix over the primitive
Gaussians of gth-tzv2p (only ``s`` and ``p`` occur for H..Ar), its radial
density table (:func:`radial_table`), its projected charge and its overlap
with a copy of itself at a distance (for the periodic normalisation).  The
mesh density is evaluated from the primitive Gaussians, which is exact: it
matches PySCF's own evaluation of the recipe to ~1e-10 NMAE.  A product of
two Gaussians is separable in x, y and z, so each atom costs one thin matrix
product over its local box of mesh points.

Units: bohr for lengths, e/bohr³ for densities.
"""

from __future__ import annotations

import numpy as np

from rhosr.core.elements import standard_symbol, valence_charge
from rhosr.core.grid import Grid
from rhosr.core.sadatoms import VARIANTS, SADAtom, sad_atom

__all__ = ["VARIANTS", "sad_density"]


def _pieces(start: int, length: int, period: int) -> list[tuple[slice, slice]]:
    """Split the unwrapped index range ``start .. start+length-1`` into
    (destination slice in ``0..period-1``, source slice in ``0..length-1``)
    pairs."""
    out = []
    j = 0
    while j < length:
        d = (start + j) % period
        n = min(length - j, period - d)
        out.append((slice(d, d + n), slice(j, j + n)))
        j += n
    return out


def _add_periodic(out, val, lo, mesh):
    """``out[(lo + index) % mesh] += val`` for every index of ``val``."""
    pieces = [_pieces(lo[a], val.shape[a], mesh[a]) for a in range(3)]
    for dst_x, src_x in pieces[0]:
        for dst_y, src_y in pieces[1]:
            for dst_z, src_z in pieces[2]:
                out[dst_x, dst_y, dst_z] += val[src_x, src_y, src_z]


#: OpenBLAS runs a dgemm with m*n*k at most this on one thread.  Larger ones
#: are split so that it does: on a small, shared machine its threads cost far
#: more than they gain for these thin products (measured: 7x slower).
_GEMM_CHUNK = 65536 * 4
#: Gaussian factors below this are set to zero: products of such tiny numbers
#: would be subnormal, which makes the matrix products slow.
_TINY = 1e-60


#: The same for float32 products: three factors above it stay clear of
#: float32's subnormal range; what is dropped is below 1e-12 of an atom's peak.
_TINY32 = 1e-12
#: For float32 products of two factors (rows x columns of the Bloch sums):
#: two factors above it stay clear of the subnormal range.
_TINY32_PAIR = 1e-18


def _gaussians(b, t, tiny=_TINY):
    """``exp(-b t^2)`` for every ``b`` (rows) and ``t`` (columns), values below ``tiny`` 0."""
    e = np.exp(-np.multiply.outer(b, t * t))
    e[e < tiny] = 0.0
    return e


def _product(rows: np.ndarray, cols: np.ndarray, shape) -> np.ndarray:
    """``sum_q rows[q, x, y] * cols[q, z]``, shape ``(mx, my, mz)``; a matrix
    product, in chunks that OpenBLAS runs on one thread."""
    k = rows.shape[0]
    a = rows.reshape(k, -1).T  # (mx*my, k), a transposed view
    out = np.empty((a.shape[0], cols.shape[1]), dtype=np.result_type(a, cols))
    step = max(1, _GEMM_CHUNK // max(1, k * cols.shape[1]))
    for i in range(0, a.shape[0], step):
        np.matmul(a[i:i + step], cols, out=out[i:i + step])
    return out.reshape(shape)


def _atom_local(el: SADAtom, u, dtype=np.float64) -> np.ndarray:
    """Density of an atom that does not reach its own images, on the box
    whose points lie at displacements ``u[0] x u[1] x u[2]`` (bohr) from it.

    One matrix product: ``sum_b (d0_b + d1_b (x^2 + y^2)) E_b(x) E_b(y) E_b(z)
    + d1_b E_b(x) E_b(y) z^2 E_b(z)`` with ``E_b(t) = exp(-b t^2)``; the
    products in ``dtype`` (the factors are computed in float64)."""
    tiny = _TINY32 if np.dtype(dtype) == np.float32 else _TINY
    ex, ey, ez = (_gaussians(el.b, t, tiny).astype(dtype, copy=False) for t in u)
    exy = ex[:, :, None] * ey[:, None, :]  # (K, mx, my)
    mx, my, mz = ex.shape[1], ey.shape[1], ez.shape[1]
    if el.has_p:
        r2 = (u[0] * u[0])[:, None] + (u[1] * u[1])[None, :]
        rows = np.concatenate([exy * (el.d0[:, None, None] + el.d1[:, None, None] * r2).astype(dtype),
                               exy * el.d1[:, None, None].astype(dtype)])
        cols = np.concatenate([ez, ez * (u[2] * u[2]).astype(dtype)])
    else:
        rows = exy * el.d0[:, None, None].astype(dtype)
        cols = ez
    return _product(rows, cols, (mx, my, mz))


def _atom_bloch(el: SADAtom, u, periodic, cell, dtype=np.float64) -> np.ndarray:
    """Density of an atom whose orbitals reach their own periodic images.

    ``u[a]`` are the displacements (bohr) of the box points from the atom
    along axis ``a``; along the axes where ``periodic[a]``, the box is one
    whole period and every primitive is summed over the images (Bloch sums)
    before the products are taken, which gives the cross terms between the
    atom's orbitals and those of its images.  One matrix product over the
    separable terms ``coef * F_x(x) F_y(y) F_z(z)``."""
    factors = []  # per axis: l -> (plain pair products, moment pair products)
    for a in range(3):
        t = u[a]
        if periodic[a]:
            reach = np.sqrt(40.0 / el.min_exp)  # exp(-40): negligible
            k = int(np.ceil(reach / cell[a])) + 1
            t = t[None, :] - cell[a] * np.arange(-k, k + 1)[:, None]  # (images, m)
        else:
            t = t[None, :]
        per_l = {}
        for l, exps in el.exps.items():
            g = np.exp(-exps[:, None, None] * (t * t)[None])  # (n_exp, images, m)
            plain = g.sum(axis=1)
            moment = (g * t[None]).sum(axis=1) if l == 1 else None
            i, j, _ = el.pairs[l]
            pp = plain[i] * plain[j]
            pp[np.abs(pp) < _TINY] = 0.0
            if moment is not None:
                qq = moment[i] * moment[j]
                qq[np.abs(qq) < _TINY] = 0.0
            per_l[l] = (pp, None if moment is None else qq)
        factors.append(per_l)
    rows, cols = [], []
    for l, (_i, _j, coef) in el.pairs.items():
        px, qx = factors[0][l]
        py, qy = factors[1][l]
        pz, qz = factors[2][l]
        if l == 0:
            terms = [(px, py, pz)]
        else:
            terms = [(qx, py, pz), (px, qy, pz), (px, py, qz)]
        for fx, fy, fz in terms:
            rows.append(coef[:, None, None] * fx[:, :, None] * fy[:, None, :])
            cols.append(fz)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    if np.dtype(dtype) == np.float32:  # keep the products clear of subnormals
        rows[np.abs(rows) < _TINY32_PAIR] = 0.0
        cols[np.abs(cols) < _TINY32_PAIR] = 0.0
        rows, cols = rows.astype(np.float32), cols.astype(np.float32)
    return _product(rows, cols, (rows.shape[1], rows.shape[2], cols.shape[1]))


SAD_NOTES = """How :func:`sad_density` computes the published SAD.

What is computed is the published recipe's density, ``sum_ij P_ij
phi_i(r) phi_j(r)`` with Bloch-summed (periodic) atomic orbitals ``phi``
and the block-diagonal density matrix ``P`` of the atoms.  Where an atom
does not reach its own periodic images this is a sum of spherical atomic
densities, each of them equal to :func:`radial_table` (times the
normalisation factor below).  In small cells it does reach them, and the
products of an atom's orbitals with those of its own images matter (0.2 %
NMAE for methane in its published box): along such axes the primitives
are summed over the images before the products are taken.

Normalisation: as in the published recipe, the whole density matrix is
scaled by one factor, ``(N_valence - charge) / tr(P S_pbc)``, with
``tr(P S_pbc) = sum_atoms [tr(P_a S_a) + sum_{T != 0} tr(P_a S_a(T))]``
(projected atomic charges, :func:`projected_electrons`, plus the overlap
of each atom with its own periodic images).  The result is the continuous
density of the recipe: it does not depend on the mesh (the coarse-mesh SAD
is exactly the fine-mesh SAD at every second point), and its mesh integral
equals the electron count up to the mesh's quadrature error (~1e-9
relative on the published fine meshes; ~1e-6 to 1e-4 on the coarse ones,
larger for sharper atoms such as Mg).  Normalising the mesh integral
instead would match the reference densities no better (NMAE ~2e-6 either
way) and would break that coarse/fine identity.

Atoms are cut off at :func:`cutoff_radius` (< 1e-7 of their electrons
beyond); the cost is one small matrix product per atom (no loop over mesh
points).
"""


def sad_density(symbols, positions_bohr, grid: Grid, charge: int = 0,
                variant: str = "paper", dtype=np.float64, out=None) -> np.ndarray:
    """SAD density of a molecule on a periodic mesh.

    Parameters
    ----------
    symbols : sequence of str, length natm
        Element symbols.
    positions_bohr : (natm, 3) array
        Atomic positions, bohr (any position; periodic images are included).
    grid : Grid
        Periodic orthorhombic mesh; point ``(i, j, k)`` at ``(i, j, k) * cell / mesh``.
    charge : int
        Net charge of the molecule; the density integrates to
        ``sum(valence charges) - charge``.
    variant : {"paper", "worsened"}
        The paper's SAD, or the worsened one (``gth-szv`` exponents doubled).
    dtype : numpy.float64 or numpy.float32
        Precision of the mesh products and the result.  float32 (what the
        network reads; about twice as fast) agrees with float64 to ~1e-6
        relative, and drops contributions below 1e-12 of an atom's peak.
    out : zero-filled array of shape ``grid.mesh`` and ``dtype``, optional
        Where to add the density (e.g. the box's corner of a larger array).

    Returns
    -------
    rho : array of shape ``grid.mesh`` in ``dtype``, e/bohr³, C order (x slowest)

    See :data:`SAD_NOTES` for what exactly is computed and how it is normalised.
    """
    symbols = [standard_symbol(s) for s in symbols]
    pos = np.asarray(positions_bohr, dtype=np.float64).reshape(-1, 3)
    if len(symbols) != len(pos):
        raise ValueError(f"{len(symbols)} symbols but {len(pos)} positions")
    if variant not in VARIANTS:
        raise ValueError(f"unknown SAD variant {variant!r}; expected one of {VARIANTS}")
    mesh = np.asarray(grid.mesh)
    cell = np.asarray(grid.cell)
    h = np.asarray(grid.spacing)
    pos = pos - np.floor(pos / cell) * cell  # into the cell: same periodic density

    n_target = sum(valence_charge(s) for s in symbols) - charge
    if n_target <= 0:
        raise ValueError(f"no electrons left: charge {charge}")
    elements = {s: sad_atom(s, variant) for s in set(symbols)}
    n_projected = sum(el.nelec + el.image_charge(cell) for el in
                      (elements[s] for s in symbols))

    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    if out is None:
        out = np.zeros(grid.mesh, dtype=dtype)
    elif out.shape != tuple(grid.mesh) or out.dtype != dtype:
        raise ValueError(f"out must be {dtype} of shape {tuple(grid.mesh)}, got {out.dtype} {out.shape}")
    for i_atom, sym in enumerate(symbols):
        el = elements[sym]
        p = pos[i_atom]
        lo = np.ceil((p - el.cutoff) / h).astype(int)
        hi = np.floor((p + el.cutoff) / h).astype(int)
        # along an axis where the box is longer than the cell, the atom
        # reaches its own images: take the whole period there, Bloch-summed
        periodic = hi - lo + 1 > mesh
        lo = np.where(periodic, 0, lo)
        hi = np.where(periodic, mesh - 1, hi)
        u = [np.arange(lo[a], hi[a] + 1) * h[a] - p[a] for a in range(3)]
        if periodic.any():
            val = _atom_bloch(el, u, periodic, cell, dtype)
        else:
            val = _atom_local(el, u, dtype)
        _add_periodic(out, val, lo, mesh)
    out *= dtype.type(n_target / n_projected)
    return out


