"""A Newton step for the refinement: the Hartree part of the Kohn–Sham response, exact in a
density-fitting basis, as the preconditioner of Pulay mixing of density matrices.

Near the fixed point the Kohn–Sham map D_in → D_out responds to a change δ of its input
density as χ₀ K δ: K the Hartree-exchange-correlation kernel, χ₀ the independent-particle
response of the current orbitals.  Mixing a fraction β of the residual R = D_out − D_in
converges at the rate of χ₀K's largest eigenvalues (~0.4 per step on QM9 molecules); the
Newton step δ = (1 − χ₀K)⁻¹ R converges in one.  Here K is its Hartree part and densities
are fitted in an auxiliary basis (Coulomb metric, molecular integrals of the cell's atoms):
with B[ia, Q] = (ia|Q), Λ_ia = 4 / (ε_i − ε_a) and J = (P|Q) the fitted response is the
naux × naux matrix M = J⁻¹ Bᵀ Λ B, and

    y = (1 − M)⁻¹ J⁻¹ (Q|R),   δ = R + χ₀ V[y],
    χ₀ V[y] = Σ_ia 2 (B y)_ia / (ε_i − ε_a) (C_a C_iᵀ + C_i C_aᵀ),

exact for a residual whose density the basis fits.  What it leaves out (exchange-correlation,
what the fit misses, the periodic images) the Pulay combination absorbs: on qm9_110109 the
residual falls ~10× per step against ~2.5× with β = 0.4 (docs/benchmarks.md, "SCF start").
Built once, from the orbitals of the first input density matrix; closed shells with integer
occupations, and only where the three-index integrals fit in :data:`NEWTON_MAX_BYTES`
(elsewhere the refinement mixes densities, "pulay").
"""

from __future__ import annotations

import time

import numpy as np

from rhosr.dft.mesh import mesh_density
from rhosr.dft.mixing import PulayMixer
from rhosr.dft.physics import harris_energy

#: Auxiliary basis of the fit (Weigend's universal Coulomb-fitting basis, H–Rn): as good a
#: preconditioner as an even-tempered basis 2.7× the size on qm9_110109.
NEWTON_AUXBASIS = "def2-universal-jfit"
#: Largest three-index integral tensor (bytes, float64, packed) held; larger molecules are
#: refined by "pulay" (qm9_110109, 21 atoms: 0.22 GB; drug-test-000, 33 atoms: 0.91 GB).
NEWTON_MAX_BYTES = 2e9


def aux_molecule(cell):
    """The molecule of ``cell``'s atoms and basis, and its auxiliary molecule."""
    from pyscf.df import addons

    mol = cell.to_mol()
    return mol, addons.make_auxmol(mol, NEWTON_AUXBASIS)


def newton_fits(mf) -> bool:
    """Whether :class:`HartreeNewton` applies to the SCF object ``mf``: integer occupations
    (no smearing: PySCF's smearing sets ``sigma``) and three-index integrals within
    :data:`NEWTON_MAX_BYTES`."""
    if getattr(mf, "sigma", None):
        return False
    _, auxmol = aux_molecule(mf.cell)
    nao = mf.cell.nao_nr()
    return nao * (nao + 1) // 2 * auxmol.nao_nr() * 8 <= NEWTON_MAX_BYTES


class HartreeNewton:
    """``(1 − χ₀K_H)⁻¹`` in the fitted basis for the orbitals ``mo_coeff`` (nao × nmo, energies
    ``mo_energy`` Hartree, occupations ``mo_occ`` 0 or 2) of ``cell``'s molecule; call it on
    a symmetric AO residual R (nao × nao) for the Newton step δ.  The three-index integrals
    are kept packed (naux × nao(nao+1)/2)."""

    def __init__(self, cell, mo_energy, mo_coeff, mo_occ):
        import scipy.linalg as sla
        from pyscf.ao2mo import _ao2mo
        from pyscf.df import incore

        mol, auxmol = aux_molecule(cell)
        occ = np.asarray(mo_occ) > 1.0
        nocc, nmo = int(occ.sum()), mo_coeff.shape[1]
        order = np.concatenate([np.flatnonzero(occ), np.flatnonzero(~occ)])
        mo = np.asarray(mo_coeff[:, order], order="F")
        self.co, self.cv = mo[:, :nocc], mo[:, nocc:]
        e = np.asarray(mo_energy)[order]
        self.gap = (e[:nocc, None] - e[None, nocc:]).ravel()  # ε_i − ε_a < 0, (i, a) C order
        # (naux, npair), C order: the transpose of PySCF's Fortran-ordered (npair, naux)
        self.lpq = incore.aux_e2(mol, auxmol, "int3c2e", aosym="s2ij").T
        self.lia = _ao2mo.nr_e2(self.lpq, mo, (0, nocc, nocc, nmo), aosym="s2", mosym="s1")
        self.metric = sla.cho_factor(auxmol.intor("int2c2e"))
        response = sla.cho_solve(self.metric, (self.lia * (4.0 / self.gap)) @ self.lia.T)
        self.lu = sla.lu_factor(np.eye(len(response)) - response)

    def __call__(self, residual):
        """The Newton step δ (nao × nao) for the symmetric AO residual ``residual``."""
        import scipy.linalg as sla
        from pyscf import lib

        r = np.asarray(residual)
        fit = sla.cho_solve(self.metric, self.lpq @ lib.pack_tril(2.0 * r - np.diag(np.diag(r))))
        y = sla.lu_solve(self.lu, fit)
        u = (2.0 * (y @ self.lia) / self.gap).reshape(self.co.shape[1], self.cv.shape[1])
        x = self.cv @ u.T @ self.co.T
        return r + x + x.T


def newton_iterate(sol, rho, dv, nelec, tol, max_steps, history, callback, t_start, record):
    """The refinement's "newton" iteration (:func:`rhosr.dft.refine.refine`): step 1 builds
    F[ρ_pred] and its D₁ as "pulay" does; every later step takes an input density matrix
    D_in, its mesh density (the labels' precision), F, D_out, and the residual
    ‖ρ[D_out − D_in]‖₁ / N (collocated at the loose precision where ``sol`` has one: the
    change only); the next D_in is the Pulay combination of the inputs plus the Newton step
    (:class:`HartreeNewton`, from step 2's orbitals) of the combined residual, in the
    overlap's metric tr(R_a S R_b S).  Only where :func:`newton_fits`: the refinement runs
    "pulay" elsewhere.  ``sol``: the refinement's solver; ``record``: its log of a step.
    Returns (trace, best)."""
    s = sol.s
    # β is never used: every mixing step has the Newton step as its preconditioner
    mixer = PulayMixer(history, 1.0, metric=lambda a, b: float(np.sum(a * b.T)),
                       weigh=lambda r: r @ s)
    trace, best, dm_in, newton, rho_in = [], None, None, None, rho
    for k in range(1, max_steps + 1):
        if dm_in is not None:
            rho_in = sol.density(dm_in)
        fock, terms = sol.fock(rho_in)
        dm, mo_coeff, mo_occ = sol.diagonalise(fock)
        e_harris = harris_energy(dm, fock, terms, sol.e_nuc)
        if dm_in is None:  # step 1: the prediction is a density, not a density matrix
            rho_out = sol.density(dm)
            res = rho_out - rho_in
        else:
            rho_out, res = None, mesh_density(sol.mf, dm - dm_in, sol.loose)
        residual = float(np.abs(res).sum() * dv / nelec)
        best = record(trace, best, callback, t_start, k, residual, e_harris, dm, mo_coeff,
                      mo_occ, rho_out, dm_in is None)
        if residual <= tol:
            break
        t0 = time.perf_counter()
        if dm_in is None:
            dm_in = dm
        else:
            if k == 2:
                newton = HartreeNewton(sol.mf.cell, sol.mo_energy, mo_coeff, mo_occ)
            dm_in = mixer.next(dm_in, dm - dm_in, precondition=newton)
        sol.timings["diis"] += time.perf_counter() - t0
    return trace, best
