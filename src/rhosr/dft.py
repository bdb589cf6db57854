"""Reference Kohn–Sham labels at the published level of theory.

Periodic Γ-point Kohn–Sham DFT in PySCF (``pyscf.pbc``): PBE, GTH-PBE
pseudopotentials (valence electrons only), the ``gth-tzv2p`` basis, a 200 Ha
kinetic-energy cutoff for the density, multigrid integration
(``MultiGridNumInt2``), SCF converged to 1e-10 Ha.  The cell is the published
orthorhombic box and ``cell.mesh`` is set to the fine (label) mesh, whose step
π/20 bohr is that of the 200 Ha cutoff (PySCF would pick a mesh one point
larger on some axes by itself).

Closed shells (``spin == 0``) use restricted KS, open shells unrestricted KS;
the returned density is always the total (α + β) valence density.

The label density is the converged density evaluated point by point on the
fine mesh, ``ρ(r) = Σ_i n_i |ψ_i(r)|²`` with the periodic (lattice-summed)
orbitals -- mathematically the "AO values times density matrix" of the
published recipe, not the band-limited FFT density of the SCF.  It is computed
here by :func:`evaluate_density`, which exploits that the fine mesh is a
product grid: every Cartesian Gaussian primitive factorises into x, y and z
factors, so on a small brick of the mesh the orbitals are a single matrix
product of per-axis tables (no per-point exponentials), and terms whose value
can nowhere in the brick exceed ``eps`` are skipped.  It agrees with PySCF's
``cell.pbc_eval_gto`` route to ~1e-10 % NMAE and is some 20x faster.

Charged cells: PySCF ends a restricted SCF of a charged periodic cell by
reporting a Makov–Payne correction, and that report fails under multigrid; the
published scripts skipped it, and so does :class:`_RKS` here (the density and
the energy are unaffected; the correction is only printed, never applied).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np

from .elements import LABEL_BASIS, PSEUDOPOTENTIAL, standard_symbol, valence_charge
from .grid import DFT_CUTOFF_HARTREE, Grid

XC = "PBE"
#: Default SCF energy convergence (Hartree).
CONV_TOL = 1e-10
#: Default bound on the value of a neglected Gaussian term (× orbital
#: coefficient) in the density evaluation; see :func:`evaluate_density`.
DENSITY_EPS = 1e-12
#: Orbitals with an occupation at or below this are left out of the density.
OCC_DROP = 1e-14
#: Edge of the mesh brick, points, on which orbitals are built at once.
BRICK = (16, 16, 16)
#: Memory cap (bytes) for the largest temporary of the density evaluation.
DENSITY_MAX_BYTES = 64 * 1024**2
#: Coarsest mesh step accepted (bohr): that of the 200 Ha cutoff, pi/20, plus 1 %.
MAX_STEP_BOHR = 1.01 * math.pi / math.sqrt(2 * DFT_CUTOFF_HARTREE)


@dataclass
class DFTResult:
    """Outcome of :func:`run_dft`.

    Attributes
    ----------
    density : ndarray or None
        Valence density on the fine mesh, float64, e/bohr³; None if failed.
    energy : float
        Total energy, Hartree (nan if failed).  With smearing it is PySCF's
        ``e_tot`` (internal energy, not the free energy).
    converged : bool
    iterations : int
        SCF cycles.
    seconds : float
        Wall time of the whole call.
    timings : dict
        ``{"scf": s, "density": s}`` (``scf`` includes building the cell).
    reason : str
        ``""`` when converged, otherwise why not.
    nelectron : int
        Valence electrons in the cell.
    """

    density: np.ndarray | None
    energy: float
    converged: bool
    iterations: int
    seconds: float
    timings: dict = field(default_factory=dict)
    reason: str = ""
    nelectron: int = 0


def _versions() -> dict:
    import pyscf

    from . import __version__ as rhosr_version

    return {"pyscf": pyscf.__version__, "numpy": np.__version__, "rhosr": rhosr_version}


def level_of_theory(smearing: float | None = None, conv_tol: float = CONV_TOL) -> dict:
    """JSON-able description of how :func:`run_dft` labels a molecule."""
    from pyscf.pbc.dft.multigrid import multigrid_pair

    return {
        "code": "pyscf.pbc",
        "method": "Kohn-Sham DFT, periodic, Gamma point only",
        "scf": "RKS for closed shells (spin 0), UKS otherwise; density = alpha + beta",
        "xc": XC,
        "basis": LABEL_BASIS,
        "pseudo": PSEUDOPOTENTIAL,
        "ke_cutoff_hartree": DFT_CUTOFF_HARTREE,
        "mesh": "fine mesh of rhosr.grid (2x the 50 Ha coarse mesh, step pi/20 bohr), set as cell.mesh",
        "cell": "orthorhombic box of rhosr.grid.box_for (2 A vacuum each side)",
        "numint": "multigrid (MultiGridNumInt2, ntasks=%d, ke_ratio=%g, rel_cutoff=%g)"
        % (multigrid_pair.NTASKS, multigrid_pair.KE_RATIO, multigrid_pair.REL_CUTOFF),
        "init_guess": "minao",
        "conv_tol": float(conv_tol),
        "smearing": None if smearing is None else {"method": "fermi", "sigma_hartree": float(smearing)},
        "density": "point-wise on the fine mesh from the converged orbitals "
        "(sum_i n_i |psi_i|^2, lattice-summed AOs), valence, e/bohr^3; terms below %g skipped"
        % DENSITY_EPS,
        "makov_payne": "not applied (report skipped for charged cells)",
        "versions": _versions(),
    }


# --------------------------------------------------------------------------
# SCF
# --------------------------------------------------------------------------

def _rks_class():
    from pyscf.pbc.dft import rks
    from pyscf.scf import hf as mol_hf

    class _RKS(rks.RKS):
        """pbc RKS without the Makov–Payne report in ``_finalize``.

        ``pyscf.pbc.scf.hf.SCF._finalize`` calls ``makov_payne_correction`` for
        charged cells, which fails under multigrid (mismatched grid arrays) and
        only prints a correction; the molecular ``_finalize`` just logs.
        """

        def _finalize(self):
            mol_hf.SCF._finalize(self)
            return self

    return _RKS


def build_cell(symbols, positions_bohr, grid: Grid, charge: int = 0, spin: int = 0,
               verbose: int = 0):
    """PySCF cell of the published level of theory for the fine ``grid``."""
    from pyscf.pbc import gto

    cell = gto.Cell()
    cell.atom = [(s, tuple(float(x) for x in p)) for s, p in zip(symbols, positions_bohr)]
    cell.unit = "Bohr"
    cell.a = np.diag(np.asarray(grid.cell, dtype=float))
    cell.basis = LABEL_BASIS
    cell.pseudo = PSEUDOPOTENTIAL
    cell.ke_cutoff = DFT_CUTOFF_HARTREE
    cell.charge = int(charge)
    cell.spin = int(spin)
    cell.verbose = int(verbose)
    cell.build(dump_input=False, parse_arg=False)
    cell.mesh = [int(n) for n in grid.mesh]  # the published mesh, not PySCF's choice
    return cell


def make_scf(cell, spin: int = 0, smearing: float | None = None, conv_tol: float = CONV_TOL,
             max_cycle: int = 100):
    """The SCF object (RKS or UKS, multigrid, optionally Fermi smearing)."""
    from pyscf.pbc import dft

    if spin == 0:
        mf = _rks_class()(cell, xc=XC)
    else:
        mf = dft.UKS(cell, xc=XC)  # pbc UHF._finalize has no Makov–Payne step
    mf = mf.multigrid_numint()
    mf.conv_tol = float(conv_tol)
    mf.max_cycle = int(max_cycle)
    mf.init_guess = "minao"
    if smearing is not None:
        from pyscf.pbc.scf.addons import smearing_

        # open shells keep their 2S (separate Fermi levels for alpha and beta)
        mf = smearing_(mf, sigma=float(smearing), method="fermi", fix_spin=spin != 0)
    return mf


def _mixed_openmp() -> bool:
    """True when two OpenMP runtimes are loaded (PySCF's and torch's libgomp).

    Importing torch after PySCF loads a second libgomp; PySCF's threaded
    kernels then give wrong results (SCF that never converges), and limiting
    threads at run time does not help.  In that case :func:`run_dft` runs in a
    fresh process.  ``rhosr generate`` workers never import torch.
    """
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "libgomp" in line}
    except OSError:  # not Linux
        return False
    return len({os.path.realpath(p) for p in libs}) > 1


def _run_in_fresh_process(*args, **kwargs) -> DFTResult:
    """:func:`run_dft` in a spawned interpreter that has not loaded torch."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(run_dft, *args, **kwargs).result()


@contextmanager
def _thread_limit(threads: int | None):
    """Limit PySCF's OpenMP threads (and BLAS too when threadpoolctl is installed)."""
    if threads is None:
        yield
        return
    from pyscf import lib

    threads = max(1, int(threads))
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # OpenMP only; BLAS keeps its own setting
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads))
        stack.enter_context(lib.with_omp_threads(threads))
        yield


def _occupied_orbitals(mo_coeff, mo_occ) -> np.ndarray:
    """Orbital columns scaled by sqrt(occupation): ρ = Σ_i |(AO · C)_i|²."""
    mo_coeff = np.asarray(mo_coeff)
    mo_occ = np.asarray(mo_occ)
    if mo_coeff.ndim == 3:  # UKS: (2, nao, nmo)
        parts = [_occupied_orbitals(c, o) for c, o in zip(mo_coeff, mo_occ)]
        return np.hstack(parts)
    keep = mo_occ > OCC_DROP
    return mo_coeff[:, keep] * np.sqrt(mo_occ[keep])


def run_dft(symbols, positions_bohr, grid: Grid, charge: int = 0, spin: int = 0,
            smearing: float | None = None, conv_tol: float = CONV_TOL, max_cycle: int = 100,
            threads: int | None = None, verbose: int = 0) -> DFTResult:
    """Kohn–Sham label of one molecule in the box of the fine ``grid``.

    Parameters
    ----------
    symbols : sequence of str
    positions_bohr : (natm, 3) array, bohr, already centred in the box
        (:func:`rhosr.grid.box_for`).
    grid : Grid
        The FINE grid: the cell (bohr) and the label mesh.
    charge : int
    spin : int
        2S, the number of unpaired electrons; 0 gives RKS, otherwise UKS.
    smearing : float or None
        Fermi smearing width, Hartree.
    conv_tol : float
        SCF energy convergence, Hartree.
    max_cycle : int
    threads : int or None
        Limit PySCF (OpenMP) threads during the call.
    verbose : int
        PySCF verbosity (0 silent).

    Never raises for a failed calculation: returns ``converged=False``,
    ``density=None`` and a ``reason``.
    """
    if _mixed_openmp():
        return _run_in_fresh_process(symbols, positions_bohr, grid, charge=charge, spin=spin,
                                     smearing=smearing, conv_tol=conv_tol, max_cycle=max_cycle,
                                     threads=threads, verbose=verbose)
    t_start = time.perf_counter()
    timings = {"scf": 0.0, "density": 0.0}
    nelectron = 0
    iterations = 0

    def failed(reason):
        return DFTResult(density=None, energy=math.nan, converged=False,
                         iterations=int(iterations), seconds=time.perf_counter() - t_start,
                         timings=timings, reason=reason, nelectron=int(nelectron))

    try:
        symbols = [standard_symbol(s) for s in symbols]
        pos = np.asarray(positions_bohr, dtype=float).reshape(len(symbols), 3)
        nelectron = sum(valence_charge(s) for s in symbols) - int(charge)
        if nelectron <= 0:
            return failed(f"no valence electrons left (charge {charge})")
        if spin < 0 or spin > nelectron or (nelectron - int(spin)) % 2:
            return failed(f"spin 2S={spin} is inconsistent with {nelectron} valence electrons")
        if not np.all(np.isfinite(pos)):
            return failed("non-finite coordinates")
        step = np.asarray(grid.cell) / np.asarray(grid.mesh)
        if step.max() > MAX_STEP_BOHR:
            return failed(f"grid step {step.max():.4f} bohr is coarser than the "
                          f"{DFT_CUTOFF_HARTREE:g} Ha mesh ({MAX_STEP_BOHR:.4f} bohr): pass the fine grid")
        with _thread_limit(threads):
            t0 = time.perf_counter()
            cell = build_cell(symbols, pos, grid, charge=charge, spin=spin, verbose=verbose)
            mf = make_scf(cell, spin=spin, smearing=smearing, conv_tol=conv_tol,
                          max_cycle=max_cycle)
            energy = mf.kernel()
            iterations = int(getattr(mf, "cycles", 0) or 0)
            timings["scf"] = time.perf_counter() - t0
            if not mf.converged:
                return failed(f"SCF not converged after {iterations} cycles")
            if not np.isfinite(energy):
                return failed("SCF energy is not finite")
            t0 = time.perf_counter()
            density = evaluate_density(cell, grid, mf.mo_coeff, mf.mo_occ)
            timings["density"] = time.perf_counter() - t0
        if not np.all(np.isfinite(density)):
            return failed("density is not finite")
    except Exception as err:  # noqa: BLE001 -- a failed label is reported, not raised
        return failed(f"{type(err).__name__}: {err}")
    return DFTResult(density=density, energy=float(energy), converged=True,
                     iterations=iterations, seconds=time.perf_counter() - t_start,
                     timings=timings, reason="", nelectron=int(nelectron))


# --------------------------------------------------------------------------
# Density on the fine mesh
# --------------------------------------------------------------------------

def _cart_powers(l: int) -> list[tuple[int, int, int]]:
    """PySCF's order of Cartesian components of angular momentum ``l``."""
    return [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]


def _term_table(cell, orbitals: np.ndarray):
    """Every (shell, primitive, Cartesian component) of the cell as a term.

    The orbitals are ``ψ_i(r) = Σ_t W[t, i] (x-X_t)^a (y-Y_t)^b (z-Z_t)^c
    exp(-α_t |r - R_t|²)`` (before the lattice sum).

    Returns centres (T, 3), exponents (T,), powers (T, 3) and weights (T, nocc).
    """
    from pyscf import gto

    ao_loc = cell.ao_loc_nr()
    coords = cell.atom_coords()
    nocc = orbitals.shape[1]
    cen, ex, pw, ww = [], [], [], []
    for ib in range(cell.nbas):
        l = cell.bas_angular(ib)
        nctr = cell.bas_nctr(ib)
        es = cell.bas_exp(ib)
        cf = cell._libcint_ctr_coeff(ib)  # (nprim, nctr), normalisation included
        c2s = gto.cart2sph(l)  # (ncart, nsph), PySCF's real solid harmonics
        cs = orbitals[ao_loc[ib]:ao_loc[ib + 1]].reshape(nctr, 2 * l + 1, nocc)
        w = np.einsum("pk,cm,kmi->pci", cf, c2s, cs)  # (nprim, ncart, nocc)
        pows = np.array(_cart_powers(l), dtype=np.int64)
        nprim, ncart = len(es), len(pows)
        cen.append(np.broadcast_to(coords[cell.bas_atom(ib)], (nprim * ncart, 3)))
        ex.append(np.repeat(es, ncart))
        pw.append(np.tile(pows, (nprim, 1)))
        ww.append(w.reshape(nprim * ncart, nocc))
    return (np.concatenate(cen), np.concatenate(ex), np.concatenate(pw),
            np.concatenate(ww))


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


def evaluate_density(cell, grid: Grid, mo_coeff, mo_occ, eps: float = DENSITY_EPS,
                     brick=BRICK, max_bytes: int = DENSITY_MAX_BYTES) -> np.ndarray:
    """Valence density on ``grid`` from orbitals, point by point (no FFT).

    ``ρ(r) = Σ_i n_i |Σ_L Σ_μ φ_μ(r - L) C_μi|²``, the same as AO values
    (lattice-summed) times the density matrix.  Works brick by brick; within a
    brick each Gaussian term is the outer product of per-axis factors, so the
    orbitals come from one matrix product.  A term is skipped in a brick where
    ``max_i |W_ti| r^l exp(-α r²) < eps`` everywhere.  Memory is bounded by
    ``max_bytes`` (orbitals are processed in groups).

    Parameters
    ----------
    cell : pyscf.pbc.gto.Cell
        Orthorhombic, edges equal to ``grid.cell``.
    grid : Grid
    mo_coeff, mo_occ : arrays from the SCF (RKS: 2D/1D, UKS: 3D/2D).

    Returns
    -------
    (nx, ny, nz) float64 array, e/bohr³.
    """
    lat = cell.lattice_vectors()
    if np.abs(lat - np.diag(np.diag(lat))).max() > 1e-10 or \
            np.abs(np.diag(lat) - np.asarray(grid.cell)).max() > 1e-8:
        raise ValueError("cell and grid must be the same orthorhombic box")
    orbitals = _occupied_orbitals(mo_coeff, mo_occ)
    nx, ny, nz = grid.mesh
    rho = np.zeros((nx, ny, nz))
    if orbitals.shape[1] == 0:
        return rho
    cen0, ex0, pw0, w0 = _term_table(cell, orbitals)
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
