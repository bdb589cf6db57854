"""A convergent refinement of a predicted density: Kohn–Sham iterations with Pulay mixing of
densities, from the prediction to the SCF's fixed point; and the SCF started from it.

Step k builds F[ρ_in] from the input density on the fine mesh (:func:`rhosr.dft.mesh.fock_terms`;
ρ_in of step 1 is the prediction), diagonalises it (D_k), evaluates ρ_out = ρ[D_k] the fast
way (:func:`rhosr.dft.mesh.mesh_density`, the same mesh) and takes as the next input the
Pulay combination of the inputs so far plus β times their residuals ρ_out − ρ_in.  The
residual of step k is ``r_k = ‖ρ_out − ρ_in‖₁ / N`` (N the electrons), the NMAE of the
output against the input.  The iteration stops at ``r_k ≤ tol`` (converged) or after
``max_steps``; it returns the iterate with the smallest residual (the last when it
converged), its density evaluated point by point from its orbitals as the labels are
(:func:`rhosr.dft.scf.evaluate_density`), the Harris energy of its input density and
dipoles.  ``method="diis"`` (PySCF's CDIIS on Fock matrices from D₁) and ``"plain"`` (no
mixing) are there to be measured against it.

Each step costs less than an SCF cycle (one collocated density, one potential by real FFTs,
one integration, one diagonalisation); the cell, core Hamiltonian, overlap, Coulomb kernel
and multigrid task lists are built once.  Most steps are loose: the change since the last
full step at a looser multigrid precision, about half the work (:class:`_Solver`; ``loose``,
``refresh``).  The mixed densities are not clipped at zero: a collocated density rings a little
below zero in the vacuum, and a clipped input could never meet it (the residual stalled at
3e-8–5e-7).  :func:`scf_from_density` runs the labels' SCF from the D of a tightly
converged refinement (``rhosr scf --guess rhosr``, ``rhosr generate --guess rhosr``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from rhosr.core.density import Density
from rhosr.core.grid import Grid
from rhosr.dft.isolation import isolated
from rhosr.dft.mesh import fock_terms, integrate, loose_cache, mesh_density, mesh_potential
from rhosr.dft.mixing import PulayMixer
from rhosr.dft.newton import newton_fits, newton_iterate
from rhosr.dft.physics import (check_density, dipole_debye, harris_energy, scf_object,
                                traced_kernel)
from rhosr.dft.scf import CONV_TOL, evaluate_density
from rhosr.dft.start import SCFStart
from rhosr.errors import InputError

#: Default stopping rule of ``rhosr predict --refine`` and ``rhosr energy`` (chosen on
#: validation molecules, docs/benchmarks.md "Refinement"): ‖ρ_out − ρ_in‖₁ / N ≤ REFINE_TOL,
#: at most REFINE_MAX_STEPS steps.
REFINE_TOL = 1e-3
REFINE_MAX_STEPS = 12
#: Pulay β (chosen on 9 validation molecules, docs/benchmarks.md "Refinement": 0.4 reaches
#: 0.10 % NMAE in 3.0 steps on average against 3.6 at 0.5, and 2e-7 in the same 12.3).
REFINE_MIXING = 0.4
#: Pulay history: input densities and residuals kept (chosen on 9 validation molecules,
#: docs/benchmarks.md "Refinement": 10 reaches 2e-7 in 11.8 steps on average against 12.3
#: with 6; the first 6 steps are the same), fewer where they would hold more than
#: REFINE_HISTORY_BYTES (meshes above ~12 M points).
REFINE_HISTORY = 10
REFINE_HISTORY_BYTES = 2e9
#: Tolerance of the refinement that starts an SCF (``rhosr scf --guess rhosr``, ``rhosr
#: generate --guess rhosr``): tight enough that PySCF's SCF at conv_tol 1e-10 accepts the
#: start after one cycle (chosen on validation molecules, docs/benchmarks.md "SCF start":
#: at 2e-7 all 8 took one cycle with |g| ≤ 6e-6; at 5e-7 two took four, |g| just over 1e-5).
SCF_START_TOL = 2e-7
SCF_START_MAX_STEPS = 20
#: Its iteration: the Newton-preconditioned mixing of density matrices reaches SCF_START_TOL
#: in about half the steps of "pulay" (docs/benchmarks.md "SCF start").
SCF_START_METHOD = "newton"
#: Cheap steps (docs/benchmarks.md "Refinement"): every step but the first and those where
#: the residual has fallen REFINE_REFRESH-fold since the last full one collocates and
#: integrates with a task list at multigrid precision REFINE_LOOSE (the labels': 1e-8),
#: corrected by the last full step's difference; None: every step full.
REFINE_LOOSE = 1e-5
REFINE_REFRESH = 10.0


@dataclass
class RefineResult:
    """Outcome of :func:`refine` (Hartree, debye, seconds)."""

    density: np.ndarray | None
    #: Hartree: the Harris energy of the returned iterate's input density ("pulay"), or
    #: E_KS of its density matrix ("diis", "plain"); both equal E_SCF at the fixed point
    energy: float
    converged: bool
    steps: int
    best_step: int
    residuals: list
    dipole_debye: np.ndarray
    dipole_refined_debye: np.ndarray | None
    electrons: float
    #: Hartree: E_KS[D] of the returned iterate (nan unless asked for: one more Fock build)
    energy_ks: float
    seconds: float
    timings: dict = field(default_factory=dict)
    #: per step: {"residual", "energy", "seconds"} (seconds since the start)
    trace: list = field(default_factory=list)
    mo_coeff: np.ndarray | None = None
    mo_occ: np.ndarray | None = None
    dm: np.ndarray | None = None
    #: the returned D with its potential, for the SCF (``handover``)
    start: SCFStart | None = None
    #: the iteration that ran (:data:`METHODS`; "newton" runs "pulay" where it cannot apply)
    method: str = "pulay"


class _Solver:
    """The state of one refinement: the SCF object, fixed matrices, DIIS, and the loose
    task list with its corrections (:func:`rhosr.dft.mesh.loose_cache`).

    A full step evaluates F[ρ] and ρ[D] at the labels' precision and keeps, when loose steps
    are on, its potential and D with their results.  A loose step evaluates only the change
    since then at the loose precision and adds it to them (a defect correction: integration
    and collocation are linear), so its error is about 1e-3 of the *change* at precision
    1e-5.  ``refresh``: the residual's fall that calls for the next full step (:func:`_pulay`)."""

    def __init__(self, mf, timings: dict, loose: float | None = None,
                 refresh: float = REFINE_REFRESH):
        self.mf, self.timings, self.refresh = mf, timings, refresh
        t0 = time.perf_counter()
        self.h, self.s = mf.get_hcore(), mf.get_ovlp()
        # PySCF's SCF drops the overlap's eigenvectors below 1e-6 (canonical
        # orthogonalisation); the same basis here, or the fixed point lies a little lower.
        # Where none is dropped the generalized eigensolver spans the same space, 2-4x faster
        x = mf.check_linear_dependency(self.s)
        self.x = x if x.shape[1] < x.shape[0] else None
        self.e_nuc = mf.energy_nuc()
        # PySCF loads here, not at import: `rhosr --help` reads this module's defaults
        from pyscf.scf import diis as scf_diis

        self.diis = scf_diis.CDIIS(mf)
        self.diis.space = 8
        self.diis.Corth = self.x
        self.loose = None if loose is None else loose_cache(mf, loose)
        self.base = {}  # name: (argument, result) of the last full step
        timings["setup"] += time.perf_counter() - t0

    def _corrected(self, evaluate, name: str, arg, full: bool, keep: bool = True):
        """``evaluate(arg, cache)`` at the labels' precision (cache None) when ``full`` or
        when there are no loose steps, keeping argument and result as ``name`` (unless
        ``keep`` is False: no later step needs them); else that result plus the loose
        evaluation of the change of the argument since then."""
        if self.loose is None or full:
            out = evaluate(arg, None)
            if self.loose is not None and keep:
                self.base[name] = (arg, out)
            return out
        arg_full, out_full = self.base[name]
        return out_full + evaluate(arg - arg_full, self.loose)

    def fock(self, rho, full: bool = True, keep: bool = True):
        """F[ρ] and its terms (:func:`rhosr.dft.mesh.fock_terms`); ``full=False``: the
        corrected loose evaluation; ``keep=False``: a full one after the last step."""
        t0 = time.perf_counter()
        v_G, terms = mesh_potential(self.mf, rho)
        terms["veff"] = self._corrected(lambda v, c: integrate(self.mf, v, c), "veff", v_G,
                                        full, keep)
        self.timings["fock"] += time.perf_counter() - t0
        return self.h + terms["veff"], terms

    def diagonalise(self, fock):
        t0 = time.perf_counter()
        mo_energy, mo_coeff = self.mf.eig(fock, self.s, x=self.x)
        self.mo_energy = mo_energy
        mo_occ = self.mf.get_occ(mo_energy, mo_coeff)
        dm = self.mf.make_rdm1(mo_coeff, mo_occ)
        self.timings["diagonalise"] += time.perf_counter() - t0
        return dm, mo_coeff, mo_occ

    def density(self, dm, full: bool = True, keep: bool = True):
        """ρ[D] on the mesh; ``full=False``: the corrected loose collocation."""
        t0 = time.perf_counter()
        rho = self._corrected(lambda d, c: mesh_density(self.mf, d, c), "rho", dm, full, keep)
        self.timings["density"] += time.perf_counter() - t0
        return rho

    def extrapolate(self, fock, dm):
        t0 = time.perf_counter()
        out = self.diis.update(self.s, dm, fock)
        self.timings["diis"] += time.perf_counter() - t0
        return out


#: Iterations of :func:`refine`: "pulay" (Pulay mixing of densities, the prediction the first
#: input), "newton" (Pulay mixing of density matrices from D₁ with a Newton step,
#: :mod:`rhosr.dft.newton`; "pulay" where it cannot apply), "diis" (PySCF's CDIIS on Fock
#: matrices from D₁), "plain" (no mixing).
METHODS = ("pulay", "newton", "diis", "plain")


@isolated
def refine(symbols, positions_bohr, grid: Grid, rho, charge: int = 0,
           smearing: float | None = None, tol: float = REFINE_TOL,
           max_steps: int = REFINE_MAX_STEPS, method: str = "pulay", mixing: float = REFINE_MIXING,
           history: int = REFINE_HISTORY, pointwise: bool = True, keep_orbitals: bool = False,
           energy_ks: bool = False, handover: bool = False, callback=None,
           loose: float | None = REFINE_LOOSE, refresh: float = REFINE_REFRESH) -> RefineResult:
    """Refine ``rho`` (fine mesh, e/bohr³) towards the SCF's fixed point; see the module
    docstring.  ``method``: :data:`METHODS`; ``mixing`` β and ``history`` (densities kept)
    of the Pulay mixing.  ``pointwise=False`` skips the point-wise density of the result
    (``density`` None), e.g. for an SCF start; ``energy_ks`` adds E_KS[D] of the result;
    ``handover`` adds ``start``, what the SCF from D needs (:mod:`rhosr.dft.start`: V_eff[D],
    one more potential, which the SCF's first energy would compute anyway).
    ``callback(step, mo_coeff, mo_occ, trace_row)`` sees every iterate (benchmarks).
    ``max_steps=1, mixing=1``: the single Kohn–Sham step (the Harris energy of ``rho``).
    ``loose``: multigrid precision of the cheap steps (None: every step full); ``refresh``:
    the residual's fall that calls for the next full step ("pulay" only).  Closed shells
    only."""
    _check(rho, grid, symbols, charge, tol, max_steps, method, mixing)
    t_start = time.perf_counter()
    mf = scf_object(symbols, positions_bohr, grid, charge=charge, smearing=smearing)
    return _refine_on(mf, t_start, symbols, positions_bohr, grid, rho, tol=tol,
                      max_steps=max_steps, method=method, mixing=mixing, history=history,
                      pointwise=pointwise, keep_orbitals=keep_orbitals, energy_ks=energy_ks,
                      handover=handover, callback=callback, loose=loose, refresh=refresh)[0]


def _check(rho, grid, symbols, charge, tol, max_steps, method, mixing) -> None:
    """Raise :class:`InputError` for a density or options :func:`refine` cannot take."""
    check_density(rho, grid, symbols, charge, 0)
    if max_steps < 1 or not tol >= 0 or method not in METHODS or not 0 < mixing <= 1:
        raise InputError(f"refine: max steps >= 1, tol >= 0, method in {METHODS} and "
                         f"0 < mixing <= 1, not {max_steps}, {tol}, {method!r}, {mixing}")


def _refine_on(mf, t_start, symbols, positions_bohr, grid, rho, *, tol, max_steps, method,
               mixing, history, pointwise, keep_orbitals, energy_ks, handover, callback, loose,
               refresh) -> tuple:
    """:func:`refine` with the SCF object ``mf`` of the molecule (built since ``t_start``):
    ``(RefineResult, mf's core Hamiltonian)``."""
    timings = dict.fromkeys(("setup", "fock", "diagonalise", "density", "diis", "pointwise"), 0.0)
    timings["setup"] += time.perf_counter() - t_start
    sol = _Solver(mf, timings, loose, refresh)
    nelec = float(np.sum(rho) * grid.dv)
    rho = np.asarray(rho, dtype=np.float64)
    if method == "newton" and not newton_fits(mf):
        method = "pulay"
    if method == "newton":
        trace, best = newton_iterate(sol, rho, grid.dv, nelec, tol, max_steps, history, callback,
                                     t_start, _record)
    else:
        iterate = _pulay if method == "pulay" else _fock_diis
        trace, best = iterate(sol, rho, grid.dv, nelec, tol, max_steps, method, mixing, history,
                              callback, t_start)
    terms = None
    if energy_ks or handover:
        # a loose step's mesh density of D carries the loose error of the change: evaluate again
        rho_dm = best[6] if trace[best[1] - 1]["full"] else sol.density(best[3], keep=False)
        terms = sol.fock(rho_dm, keep=False)[1]
    e_ks = _energy_ks(sol, best[3], terms) if energy_ks else float("nan")
    result = _result(symbols, positions_bohr, grid, rho, mf, best, trace, timings, t_start,
                     pointwise, keep_orbitals, converged=best[0] <= tol, energy_ks=e_ks)
    result.method = method
    if handover:
        result.start = SCFStart(best[3], terms["veff"], terms["e_coul"], terms["e_xc"])
    return result, sol.h


def _energy_ks(sol, dm, terms=None) -> float:
    """E_KS[D] (Hartree): Tr D h + E_H + E_loc,long + E_xc of D's mesh density + E_nn
    (``terms``: :func:`rhosr.dft.mesh.fock_terms` of that density, when at hand)."""
    if terms is None:
        terms = fock_terms(sol.mf, sol.density(dm, keep=False))
    return float(np.einsum("ij,ji->", dm, sol.h).real + terms["e_coul"] + terms["e_xc"]
                 + sol.e_nuc)


def _pulay(sol, rho_in, dv, nelec, tol, max_steps, method, mixing, history, callback, t_start):
    """Pulay mixing of densities: input ρ_in → F[ρ_in] → D → ρ_out; residual ρ_out − ρ_in;
    the next input the Pulay combination of the inputs plus ``mixing`` × residuals."""
    trace, best = [], None
    mixer = PulayMixer(min(history, max(2, int(REFINE_HISTORY_BYTES // (2 * rho_in.nbytes)))),
                       mixing)
    residual, r_full = np.inf, np.inf  # step 1 is a full step
    for k in range(1, max_steps + 1):
        full = sol.loose is None or residual <= r_full / sol.refresh
        fock, terms = sol.fock(rho_in, full)
        dm, mo_coeff, mo_occ = sol.diagonalise(fock)
        e_harris = harris_energy(dm, fock, terms, sol.e_nuc)
        rho_out = sol.density(dm, full)
        res = rho_out - rho_in
        residual = float(np.abs(res).sum() * dv / nelec)
        if full:
            r_full = residual
        best = _record(trace, best, callback, t_start, k, residual, e_harris, dm, mo_coeff, mo_occ,
                       rho_out, full)
        if residual <= tol:
            break
        t0 = time.perf_counter()
        rho_in = mixer.next(rho_in, res)
        sol.timings["diis"] += time.perf_counter() - t0
    return trace, best


def _record(trace, best, callback, t_start, k, residual, energy, dm, mo_coeff, mo_occ, rho_dm,
            full=True):
    """Log step ``k`` in ``trace``, show it to ``callback``; returns the best iterate so far
    (smallest residual) as (residual, step, energy, D, orbitals, occupations, D's mesh
    density)."""
    trace.append({"residual": residual, "energy": energy, "seconds": time.perf_counter() - t_start,
                  "full": bool(full)})
    if callback is not None:
        callback(k, mo_coeff, mo_occ, trace[-1])
    if best is None or residual < best[0]:
        return (residual, k, energy, dm, mo_coeff, mo_occ, rho_dm)
    return best


def _fock_diis(sol, rho, dv, nelec, tol, max_steps, method, mixing, history, callback, t_start):
    """D₁ from F[ρ_pred], then ρ_k = ρ[D_k], F[ρ_k] and CDIIS ("diis") or not ("plain")."""
    rho_prev = rho
    fock, _ = sol.fock(rho_prev)
    dm, mo_coeff, mo_occ = sol.diagonalise(fock)
    trace, best = [], None
    for k in range(1, max_steps + 1):
        rho_k = sol.density(dm)
        residual = float(np.abs(rho_k - rho_prev).sum() * dv / nelec)
        fock, terms = sol.fock(rho_k)
        e_ks = _energy_ks(sol, dm, terms)  # ρ_k is D_k's density
        best = _record(trace, best, callback, t_start, k, residual, e_ks, dm, mo_coeff, mo_occ,
                       rho_k)
        if residual <= tol:
            break
        rho_prev = rho_k
        dm, mo_coeff, mo_occ = sol.diagonalise(sol.extrapolate(fock, dm) if method == "diis"
                                               else fock)
    return trace, best


def _result(symbols, positions_bohr, grid, rho, mf, best, trace, timings, t_start,
            pointwise, keep_orbitals, converged, energy_ks) -> RefineResult:
    residual, best_step, energy, dm, mo_coeff, mo_occ = best[:6]
    density = None
    if pointwise:
        t0 = time.perf_counter()
        density = evaluate_density(mf.cell, grid, mo_coeff, mo_occ)
        timings["pointwise"] += time.perf_counter() - t0
    return RefineResult(
        density=density, energy=energy, converged=bool(converged),
        steps=len(trace), best_step=best_step, residuals=[t["residual"] for t in trace],
        dipole_debye=dipole_debye(symbols, positions_bohr, grid, rho),
        dipole_refined_debye=None if density is None else dipole_debye(symbols, positions_bohr,
                                                                       grid, density),
        electrons=float(np.sum(mo_occ)), energy_ks=energy_ks,
        seconds=time.perf_counter() - t_start,
        timings=timings, trace=trace, mo_coeff=mo_coeff if keep_orbitals else None,
        mo_occ=mo_occ if keep_orbitals else None, dm=dm if keep_orbitals else None)


def refined_density(density, result: RefineResult):
    """A new Density holding the refined density of ``result``, its meta saying so."""
    meta = dict(density.meta)
    how = f"{result.steps} Kohn-Sham step(s), {result.method!r} iteration (rhosr.dft.refine)"
    meta.update({"refined": how,
                 "refine_converged": result.converged, "refine_steps": result.steps,
                 "refine_residual": result.residuals[result.best_step - 1],
                 "energy_hartree": result.energy, "refine_seconds": result.seconds})
    values = np.asarray(result.density, dtype=density.values.dtype)
    meta["electrons"] = float(values.sum(dtype=np.float64) * density.grid.dv)
    return Density(values, density.grid, density.symbols, density.positions, density.charge, meta)


def summary(result: RefineResult) -> dict:
    """JSON-able figures of a refinement (``rhosr energy``): energies (Hartree), dipole
    (debye; of the refined density when it was evaluated, else of the input), electrons,
    steps, seconds."""
    dip = result.dipole_refined_debye if result.density is not None else result.dipole_debye
    return {
        "energy_harris_hartree": result.energy,
        "energy_ks_hartree": result.energy_ks,
        "dipole_debye": [float(x) for x in dip],
        "dipole_norm_debye": float(np.linalg.norm(dip)),
        "dipole_of": "refined density" if result.density is not None else "input density",
        "electrons": result.electrons,
        "refine_steps": result.steps,
        "refine_converged": result.converged,
        "refine_residual": result.residuals[result.best_step - 1],
        "seconds": result.seconds,
    }


@isolated
def scf_from_density(symbols, positions_bohr, grid: Grid, rho, charge: int = 0,
                     conv_tol: float = CONV_TOL, max_cycle: int = 100,
                     smearing: float | None = None, tol: float = SCF_START_TOL,
                     max_steps: int = SCF_START_MAX_STEPS, mixing: float = REFINE_MIXING,
                     loose: float | None = REFINE_LOOSE, method: str = SCF_START_METHOD):
    """``(RefineResult, SCFResult)``: the labels' SCF (:func:`rhosr.dft.physics.run_scf`)
    started from D of :func:`refine` of ``rho`` to ``tol`` and its potential
    (:class:`rhosr.dft.start.SCFStart`), on the refinement's own SCF object (cell, core
    Hamiltonian, overlap and multigrid task list built once).  A refinement that stops
    short of ``tol`` still hands over its best D; the SCF decides convergence."""
    _check(rho, grid, symbols, charge, tol, max_steps, method, mixing)
    t_start = time.perf_counter()
    mf = scf_object(symbols, positions_bohr, grid, charge=charge, smearing=smearing,
                    conv_tol=conv_tol)
    ref, hcore = _refine_on(mf, t_start, symbols, positions_bohr, grid, rho, tol=tol,
                            max_steps=max_steps, method=method, mixing=mixing,
                            history=REFINE_HISTORY, pointwise=False, keep_orbitals=False,
                            energy_ks=False, handover=True, callback=None, loose=loose,
                            refresh=REFINE_REFRESH)
    return ref, traced_kernel(mf, ref.start, max_cycle, hcore=hcore)
