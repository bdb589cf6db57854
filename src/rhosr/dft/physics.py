"""Physics from a density: one Kohn–Sham step, energies, dipoles, an SCF start.

From a valence density ρ on the fine mesh (predicted, or any
:class:`rhosr.core.density.Density`) at exactly the labels' level of theory
(:mod:`rhosr.dft.scf`: periodic Γ-point PBE, GTH-PBE, ``gth-tzv2p``, multigrid):

- the Kohn–Sham matrix F[ρ] = h_core + V_H[ρ] + V_loc,long + V_xc[ρ].  ρ goes to
  reciprocal space by FFT (ρ(G) and iGρ(G) for the PBE gradient); the Hartree
  potential drops G = 0 (the cell is neutralised by a uniform background, as
  in PySCF's SCF, which makes charged molecules consistent with their SCF
  energies); the long-range part of the local pseudopotential is PySCF
  multigrid's ``vpplocG_part1``, added to the Hartree potential; V_xc is
  evaluated on the mesh; the potential becomes matrix elements with
  multigrid's own integration (``_get_j_pass2``).  When ρ is the multigrid
  density of a density matrix D this is ``mf.get_veff(D)`` to rounding.
- one diagonalisation, occupations from the SCF object (aufbau, or Fermi
  smearing), and the density matrix D₁;
- the Harris–Foulkes energy E_H[ρ] = Tr D₁F[ρ] − ∫ρ v_eff[ρ] + E_Hxc[ρ] + E_nn
  (stationary: errors second order in the density error) and the Kohn–Sham
  energy E_KS[D₁];
- the refined density ρ₁ of D₁'s orbitals, point by point on the fine mesh
  (as the labels), and the dipole moment of ρ and of ρ₁ with the pseudo-ions'
  valence charges, about the box centre.

Closed shells only: the step needs spin densities for an open shell, and a
predicted density is the total one.  PySCF and torch must not share a process
(two OpenMP runtimes): every public function here that runs PySCF is
:func:`rhosr.dft.isolation.isolated` and runs in a fresh process when torch is loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rhosr.core.density import Density
from rhosr.core.elements import valence_charge
from rhosr.core.grid import Grid
from rhosr.core.molecule import valence_electrons
from rhosr.core.units import AU_TO_DEBYE
from rhosr.dft.isolation import isolated
from rhosr.dft.scf import CONV_TOL, build_cell, evaluate_density, make_scf
from rhosr.errors import InputError

#: Largest accepted |∫ρ dV − N| (electrons) of an input density.
ELECTRON_TOLERANCE = 1e-2
#: Values below −this × max ρ count as negative densities (a band-limited
#: density rings a little below zero far from the atoms).
NEGATIVE_TOLERANCE = 1e-4
GUESSES = ("rhosr", "atom", "minao")
#: Default refinement of the commands (``--steps``, ``--mixing``): two damped steps.  Chosen
#: on QM9 validation molecules of the bank (docs/benchmarks.md): one undamped step takes the
#: bundled model's NMAE from ~1.25 % to ~0.95 %, two steps mixed by one half to ~0.28 %.
REFINE_STEPS = 2
REFINE_MIXING = 0.5


@dataclass
class StepResult:
    """Outcome of :func:`ks_step` (energies in Hartree, dipoles in debye)."""

    energy_harris: float
    energy_ks: float
    dm1: np.ndarray
    mo_energy: np.ndarray
    mo_occ: np.ndarray
    dipole_debye: np.ndarray
    dipole_refined_debye: np.ndarray | None
    density: np.ndarray | None
    electrons: float
    seconds: float
    timings: dict = field(default_factory=dict)
    harris_history: list = field(default_factory=list)  # Harris energy of each step's input
    mixing: float = 1.0


@dataclass
class SCFResult:
    """Outcome of :func:`run_scf` (Hartree, seconds)."""

    energy: float
    cycles: int
    converged: bool
    seconds: float
    #: per cycle: {"energy": E_tot, "delta_e": ΔE, "grad": |g|, "seconds": since the start}
    trace: list = field(default_factory=list)
    mo_coeff: np.ndarray | None = None
    mo_occ: np.ndarray | None = None

    @property
    def energies(self) -> list:
        return [t["energy"] for t in self.trace]

    def cycles_to(self, conv_tol: float) -> int | None:
        """Cycles this run took to meet PySCF's test at ``conv_tol`` (|ΔE| < tol, |g| < √tol)."""
        for i, t in enumerate(self.trace):
            if abs(t["delta_e"]) < conv_tol and t["grad"] < conv_tol ** 0.5:
                return i + 1
        return None


# --------------------------------------------------------------------------
# checks


def check_density(rho, grid: Grid, symbols, charge: int = 0, spin: int = 0) -> None:
    """Raise :class:`InputError` for a density the Kohn–Sham step cannot take."""
    rho = np.asarray(rho)
    if rho.shape != tuple(grid.mesh):
        raise InputError(f"density of shape {rho.shape} does not match the structure's fine "
                         f"mesh {tuple(grid.mesh)}")
    if not np.all(np.isfinite(rho)):
        raise InputError("density has NaN or infinite values")
    if rho.min() < -NEGATIVE_TOLERANCE * max(float(rho.max()), 0.0):
        raise InputError(f"density has negative values (min {rho.min():.3e} e/bohr^3)")
    nelectron = valence_electrons(symbols) - int(charge)
    if nelectron <= 0 or spin < 0 or spin > nelectron or (nelectron - spin) % 2:
        raise InputError(f"charge {charge} and spin 2S={spin} are inconsistent with "
                         f"{valence_electrons(symbols)} valence electrons")
    if spin != 0:
        raise InputError("the Kohn-Sham step needs a closed shell (spin 0): a density alone "
                         "does not give the spin densities of an open shell")
    electrons = float(rho.sum(dtype=np.float64) * grid.dv)
    if abs(electrons - nelectron) > ELECTRON_TOLERANCE:
        raise InputError(f"density integrates to {electrons:.4f} electrons, the structure has "
                         f"{nelectron} (charge {charge})")


# --------------------------------------------------------------------------
# the Kohn–Sham matrix of a density on the mesh


def scf_object(symbols, positions_bohr, grid: Grid, charge: int = 0,
               smearing: float | None = None, conv_tol: float = CONV_TOL):
    """The labels' SCF object (restricted) for a molecule in the box of ``grid``."""
    cell = build_cell(symbols, positions_bohr, grid, charge=charge)
    return make_scf(cell, smearing=smearing, conv_tol=conv_tol)


def _density_G(mf, rho):
    """(4, ngrids) ρ(G) and iGρ(G), scaled by the cell volume per point as multigrid's."""
    from pyscf.pbc import tools

    cell, mesh = mf.cell, mf._numint.mesh
    weight = cell.vol / int(np.prod(mesh))
    rho0 = tools.fft(np.asarray(rho, dtype=np.float64).reshape(1, -1), mesh) * weight
    gv = cell.get_Gv(mesh)
    return np.concatenate([rho0, (1j * gv.T) * rho0], axis=0)


def fock_terms(mf, rho) -> dict:
    """V_eff[ρ] and its energies for a density on the mesh of ``mf`` (e/bohr³).

    Returns ``{"veff": (nao, nao), "e_coul": E_H + ∫ρ v_loc,long, "e_xc": E_xc,
    "e_dc": ∫ρ v_eff}`` (Hartree; ``e_dc`` with the gradient terms of PBE).
    """
    from pyscf.pbc import tools
    from pyscf.pbc.dft.multigrid import multigrid_pair

    ni, cell = mf._numint, mf.cell
    mesh, ngrids = ni.mesh, int(np.prod(ni.mesh))
    weight = cell.vol / ngrids
    if ni.vpplocG_part1 is None:
        mf.get_hcore()  # sets the long-range local pseudopotential
    rho_g = _density_G(mf, rho)
    v_hartree = rho_g[0] * tools.get_coulG(cell, mesh=mesh)  # G = 0 dropped
    v_long = ni.vpplocG_part1
    e_hartree = 0.5 * np.vdot(rho_g[0], v_hartree).real / cell.vol
    e_long = np.vdot(rho_g[0], v_long).real / cell.vol
    rho_r = tools.ifft(rho_g, mesh).real / weight  # ρ and ∇ρ on the mesh
    exc, vxc = ni.eval_xc_eff(mf.xc, rho_r, deriv=1, xctype="GGA")[:2]
    e_xc = float(np.dot(rho_r[0], exc) * weight)
    e_xc_dc = float(np.einsum("xp,xp->", vxc, rho_r) * weight)
    wv = tools.fft(vxc, mesh).reshape(-1, ngrids)
    wv = multigrid_pair.backend.get_gga_vrho_gs(wv[:1], wv[1:4], cell.get_Gv(mesh), weight,
                                                ngrids, 1.0)
    wv[0] += v_hartree + v_long
    veff = np.asarray(multigrid_pair._get_j_pass2(ni, wv, kpts=np.zeros((1, 3))))
    veff = veff.reshape(cell.nao_nr(), cell.nao_nr()).real
    return {"veff": veff, "e_coul": e_hartree + e_long, "e_xc": e_xc,
            "e_dc": 2 * e_hartree + e_long + e_xc_dc}


# --------------------------------------------------------------------------
# one step


def dipole_debye(symbols, positions_bohr, grid: Grid, rho) -> np.ndarray:
    """Dipole moment (debye, 3 components) of a valence density and its pseudo-ions.

    μ = Σ_A Z_A (R_A − c) − Σ_r ρ(r)(r − c) dV about the box centre c, with the
    GTH valence charges Z_A; the mesh plane on the box face (r − c = −L/2) counts
    at 0, so that no face weighs on one side only (PySCF's ``dip_moment`` rule).
    """
    centre = np.asarray(grid.cell, dtype=float) / 2
    z = np.array([valence_charge(s) for s in symbols], dtype=float)
    nuclear = z @ (np.asarray(positions_bohr, dtype=float) - centre)
    rho = np.asarray(rho, dtype=np.float64)
    arms = []
    for axis, c in zip(grid.axes(), centre):
        d = axis - c
        d[np.isclose(np.abs(d), c, rtol=0, atol=1e-8 * c)] = 0.0
        arms.append(d)
    electronic = np.array([np.einsum("ijk,i->", rho, arms[0]), np.einsum("ijk,j->", rho, arms[1]),
                           np.einsum("ijk,k->", rho, arms[2])]) * grid.dv
    return (nuclear - electronic) * AU_TO_DEBYE


def harris_energy(dm, fock, terms: dict, e_nuc: float) -> float:
    """Harris–Foulkes energy (Hartree) of an input density ρ: ``fock`` = F[ρ] and its
    ``terms`` (:func:`fock_terms`), ``dm`` the density matrix of F's orbitals."""
    return (float(np.einsum("ij,ji->", dm, fock).real) - terms["e_dc"] + terms["e_coul"]
            + terms["e_xc"] + e_nuc)


def _diagonalise(mf, h, s, rho):
    """D, orbital energies, coefficients and occupations of F[ρ], and the Harris energy."""
    terms = fock_terms(mf, rho)
    fock = h + terms["veff"]
    mo_energy, mo_coeff = mf.eig(fock, s)
    mo_occ = mf.get_occ(mo_energy, mo_coeff)
    dm = mf.make_rdm1(mo_coeff, mo_occ)
    return dm, mo_energy, mo_coeff, mo_occ, harris_energy(dm, fock, terms, mf.energy_nuc())


@isolated
def ks_step(symbols, positions_bohr, grid: Grid, rho, charge: int = 0, spin: int = 0,
            smearing: float | None = None, refine: bool = True, steps: int = 1,
            mixing: float = 1.0, energy: bool = True) -> StepResult:
    """Kohn–Sham step(s) from ``rho`` (fine mesh, e/bohr³); see the module docstring.

    One step (the default): F[ρ] → D₁ → ρ₁.  With ``steps`` > 1 the steps are
    damped: ρ ← ρ + ``mixing`` (ρ_out − ρ) after each, and the refined density is
    the last mixed one (``mixing`` 1 gives the last ρ_out).  ``energy_harris``
    is that of the last step's input density, ``energy_ks`` = E_KS[D_last],
    ``dm1`` = D_last.  ``refine`` evaluates the refined density point-wise and
    its dipole; ``energy=False`` skips E_KS[D_last] (one Fock build; nan then),
    as an SCF start does not need it.  Raises :class:`InputError` for a density
    it cannot take.
    """
    check_density(rho, grid, symbols, charge, spin)
    if steps < 1 or not 0 < mixing <= 1:
        raise InputError(f"steps must be >= 1 and 0 < mixing <= 1, not {steps}, {mixing}")
    t0 = time.perf_counter()
    mf = scf_object(symbols, positions_bohr, grid, charge=charge, smearing=smearing)
    h, s = mf.get_hcore(), mf.get_ovlp()
    t1 = time.perf_counter()
    rho_in, harris = np.asarray(rho, dtype=np.float64), []
    for k in range(steps):
        dm, mo_energy, mo_coeff, mo_occ, e_harris = _diagonalise(mf, h, s, rho_in)
        harris.append(e_harris)
        if refine or k < steps - 1:
            rho_out = evaluate_density(mf.cell, grid, mo_coeff, mo_occ)
            rho_in = rho_out if mixing == 1.0 else rho_in + mixing * (rho_out - rho_in)
    t2 = time.perf_counter()
    e_ks = float(mf.energy_tot(dm)) if energy else float("nan")
    t3 = time.perf_counter()
    return StepResult(
        energy_harris=float(harris[-1]), energy_ks=e_ks, dm1=dm, mo_energy=mo_energy,
        mo_occ=mo_occ, dipole_debye=dipole_debye(symbols, positions_bohr, grid, rho),
        dipole_refined_debye=dipole_debye(symbols, positions_bohr, grid, rho_in) if refine else None,
        density=rho_in if refine else None, electrons=float(np.sum(mo_occ)),
        seconds=t3 - t0, timings={"setup": t1 - t0, "steps": t2 - t1, "energy_ks": t3 - t2},
        harris_history=harris, mixing=float(mixing))


# --------------------------------------------------------------------------
# SCF from a start


@isolated
def run_scf(symbols, positions_bohr, grid: Grid, charge: int = 0, guess="minao",
            conv_tol: float = CONV_TOL, max_cycle: int = 100,
            smearing: float | None = None) -> SCFResult:
    """The labels' SCF from ``guess``: 'minao', 'atom', or a density matrix (nao, nao)."""
    t0 = time.perf_counter()
    mf = scf_object(symbols, positions_bohr, grid, charge=charge, smearing=smearing,
                    conv_tol=conv_tol)
    mf.max_cycle = int(max_cycle)
    trace = []
    mf.callback = lambda env: trace.append({
        "energy": float(env["e_tot"]), "delta_e": float(env["e_tot"] - env["last_hf_e"]),
        "grad": float(env["norm_gorb"]), "seconds": time.perf_counter() - t0})
    if isinstance(guess, str):
        if guess not in ("minao", "atom"):
            raise InputError(f"guess must be 'minao', 'atom' or a density matrix, not {guess!r}")
        mf.init_guess = guess
        energy = mf.kernel()
    else:
        energy = mf.kernel(dm0=np.asarray(guess))
    return SCFResult(energy=float(energy), cycles=int(getattr(mf, "cycles", len(trace))),
                     converged=bool(mf.converged), seconds=time.perf_counter() - t0,
                     trace=trace, mo_coeff=mf.mo_coeff, mo_occ=mf.mo_occ)


# --------------------------------------------------------------------------
# on Density objects


def step_density(density, spin: int = 0, smearing: float | None = None, refine: bool = True,
                 steps: int = 1, mixing: float = 1.0) -> StepResult:
    """:func:`ks_step` of a :class:`rhosr.core.density.Density` (its atoms, charge and mesh)."""
    if not len(density.symbols):
        raise InputError("the density carries no atoms: the Kohn-Sham step needs the structure")
    return ks_step(density.symbols, density.positions, density.grid, density.values,
                   charge=density.charge, spin=spin, smearing=smearing, refine=refine,
                   steps=steps, mixing=mixing)


def refined(density, result: StepResult):
    """A new Density holding ρ₁ of ``result``, its meta saying so (energies in Hartree)."""
    meta = dict(density.meta)
    steps = len(result.harris_history)
    meta.update({"refined": f"{steps} Kohn-Sham step(s), mixing {result.mixing:g} (rhosr.dft.physics)",
                 "energy_harris_hartree": result.energy_harris,
                 "energy_ks_hartree": result.energy_ks,
                 "refine_seconds": result.seconds})
    values = np.asarray(result.density, dtype=density.values.dtype)
    meta["electrons"] = float(values.sum(dtype=np.float64) * density.grid.dv)
    return Density(values, density.grid, density.symbols, density.positions, density.charge, meta)


def summary(result: StepResult, refine: bool = False) -> dict:
    """JSON-able figures of a step: energies (Hartree), dipole (debye), electrons, seconds."""
    dip = result.dipole_refined_debye if refine else result.dipole_debye
    return {
        "energy_harris_hartree": result.energy_harris,
        "energy_ks_hartree": result.energy_ks,
        "dipole_debye": [float(x) for x in dip],
        "dipole_norm_debye": float(np.linalg.norm(dip)),
        "dipole_of": "refined density" if refine else "input density",
        "electrons": result.electrons,
        "seconds": result.seconds,
    }


@isolated
def scf_from_density(symbols, positions_bohr, grid: Grid, rho, charge: int = 0,
                     conv_tol: float = CONV_TOL, max_cycle: int = 100,
                     smearing: float | None = None, steps: int = 1,
                     mixing: float = 1.0) -> tuple[StepResult, SCFResult]:
    """The SCF started from D_last of :func:`ks_step` from ``rho`` (one process)."""
    check_density(rho, grid, symbols, charge, 0)
    step = ks_step(symbols, positions_bohr, grid, rho, charge=charge, smearing=smearing,
                   refine=False, steps=steps, mixing=mixing, energy=False)
    scf = run_scf(symbols, positions_bohr, grid, charge=charge, guess=step.dm1,
                  conv_tol=conv_tol, max_cycle=max_cycle, smearing=smearing)
    return step, scf
