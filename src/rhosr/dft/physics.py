"""The pieces of physics from a density at the labels' level of theory, for
:mod:`rhosr.dft.refine` (the refinement, ``rhosr energy``, ``rhosr scf``) and the benchmarks.

From a valence density ρ on the fine mesh (predicted, or any
:class:`rhosr.core.density.Density`) at exactly the labels' level of theory
(:mod:`rhosr.dft.scf`: periodic Γ-point PBE, GTH-PBE, ``gth-tzv2p``, multigrid):

- the SCF object of the molecule in its box (:func:`scf_object`) and checks of an input
  density (:func:`check_density`);
- the Kohn–Sham matrix F[ρ] = h_core + V_H[ρ] + V_loc,long + V_xc[ρ]
  (:func:`rhosr.dft.mesh.fock_terms`: ρ(G) and iGρ(G) by real FFTs for the PBE
  gradient; the Hartree potential drops G = 0, the cell neutralised by a uniform
  background as in PySCF's SCF, which makes charged molecules consistent with
  their SCF energies; the long-range local pseudopotential of multigrid; matrix
  elements by multigrid's integration).  When ρ is the multigrid density of a
  density matrix D this is ``mf.get_veff(D)`` to rounding (1e-14);
- the Harris–Foulkes energy E_H[ρ] = Tr D F[ρ] − ∫ρ v_eff[ρ] + E_Hxc[ρ] + E_nn of the D
  that diagonalises F[ρ] (stationary: errors second order in the density error);
- the dipole moment of a density with the pseudo-ions' valence charges, about the box
  centre;
- the labels' SCF from a start (:func:`run_scf`: 'minao', 'atom' or a density matrix),
  every cycle traced.

PySCF and torch must not share a process (two OpenMP runtimes): every public function here
that runs PySCF is :func:`rhosr.dft.isolation.isolated` and runs in a fresh process when
torch is loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rhosr.core.elements import valence_charge
from rhosr.core.grid import Grid
from rhosr.core.molecule import valence_electrons
from rhosr.core.units import AU_TO_DEBYE
from rhosr.dft.isolation import isolated
from rhosr.dft.scf import CONV_TOL, build_cell, make_scf
from rhosr.dft.start import kernel_from
from rhosr.errors import InputError

#: Largest accepted |∫ρ dV − N| (electrons) of an input density.
ELECTRON_TOLERANCE = 1e-2
#: Values below −this × max ρ count as negative densities (a band-limited
#: density rings a little below zero far from the atoms).
NEGATIVE_TOLERANCE = 1e-4
GUESSES = ("rhosr", "atom", "minao")
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


# --------------------------------------------------------------------------
# SCF from a start


@isolated
def run_scf(symbols, positions_bohr, grid: Grid, charge: int = 0, guess="minao",
            conv_tol: float = CONV_TOL, max_cycle: int = 100,
            smearing: float | None = None) -> SCFResult:
    """The labels' SCF from ``guess``: 'minao', 'atom', a density matrix (nao, nao) or an
    :class:`rhosr.dft.start.SCFStart`."""
    t0 = time.perf_counter()
    mf = scf_object(symbols, positions_bohr, grid, charge=charge, smearing=smearing,
                    conv_tol=conv_tol)
    return traced_kernel(mf, guess, max_cycle, t0)


def traced_kernel(mf, guess="minao", max_cycle: int = 100, t0: float | None = None,
                  hcore=None) -> SCFResult:
    """PySCF's SCF of ``mf`` (an :func:`scf_object`, possibly used before, e.g. by a
    refinement whose start it continues: ``hcore`` its core Hamiltonian, as
    :func:`rhosr.dft.start.kernel_from`) from ``guess`` as in :func:`run_scf`, every cycle
    traced; seconds counted from ``t0`` (default: now)."""
    t0 = time.perf_counter() if t0 is None else t0
    mf.max_cycle = int(max_cycle)
    trace = []
    mf.callback = lambda env: trace.append({
        "energy": float(env["e_tot"]), "delta_e": float(env["e_tot"] - env["last_hf_e"]),
        "grad": float(env["norm_gorb"]), "seconds": time.perf_counter() - t0})
    if isinstance(guess, str):
        if guess not in ("minao", "atom"):
            raise InputError(f"guess must be 'minao', 'atom' or a density matrix, not {guess!r}")
        mf.init_guess = guess
        guess = None
    energy = kernel_from(mf, guess, hcore)
    return SCFResult(energy=float(energy), cycles=int(getattr(mf, "cycles", len(trace))),
                     converged=bool(mf.converged), seconds=time.perf_counter() - t0,
                     trace=trace, mo_coeff=mf.mo_coeff, mo_occ=mf.mo_occ)
