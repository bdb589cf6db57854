"""The labels' SCF from a given start: PySCF's own kernel, handed what the caller already has.

A refinement that ends at (nearly) the SCF's fixed point has, besides its density matrix D₀,
what PySCF's first energy needs: the Kohn–Sham potential V_eff[D₀] with its Coulomb and
exchange–correlation energies (:func:`rhosr.dft.mesh.fock_terms` of D₀'s mesh density, equal to
``mf.get_veff(D₀)`` to 1e-14).  :func:`kernel_from` runs ``mf.kernel(dm0=D₀)`` with PySCF's
first ``get_veff`` answered from the start instead of computed again; every later cycle, the
convergence test and the final check are PySCF's, so the converged result is the same as from
D₀ alone (to rounding), one potential cheaper.  When the SCF continues on the very SCF object
the start was made with, its core Hamiltonian can be handed over too (``hcore``): multigrid's
``get_hcore`` also sets the long-range local pseudopotential that every later potential adds,
which that object already holds, so only that object's own matrix will do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SCFStart:
    """A start for the labels' SCF (atomic units): the density matrix D₀ and, when known,
    V_eff[D₀] (nao, nao) with E_Coulomb and E_xc of D₀."""

    dm: np.ndarray
    veff: np.ndarray | None = None
    e_coul: float = float("nan")
    e_xc: float = float("nan")


def kernel_from(mf, start=None, hcore=None) -> float:
    """``mf.kernel()`` from ``start``: None (``mf.init_guess``), a density matrix, or an
    :class:`SCFStart`, whose potential answers PySCF's first ``get_veff``; ``hcore`` (with an
    SCFStart): ``mf``'s own core Hamiltonian, computed by ``mf`` before, which answers
    ``get_hcore``.  Returns the SCF energy (Hartree); ``mf`` is left as after any kernel,
    without the stand-ins."""
    if start is None:
        return mf.kernel()
    if not isinstance(start, SCFStart):
        return mf.kernel(dm0=np.asarray(start))
    from pyscf import lib

    pending = []
    if start.veff is not None:
        pending.append(lib.tag_array(np.asarray(start.veff), ecoul=start.e_coul,
                                     exc=start.e_xc, vj=None, vk=None))
    own_veff = mf.get_veff

    def get_veff(*args, **kwargs):
        return pending.pop() if pending else own_veff(*args, **kwargs)

    mf.get_veff = get_veff
    if hcore is not None:
        if mf._numint.vpplocG_part1 is None:
            raise ValueError("hcore: mf's own core Hamiltonian, computed before by mf")
        mf.get_hcore = lambda *args, **kwargs: hcore
    try:
        return mf.kernel(dm0=np.asarray(start.dm))
    finally:
        mf.__dict__.pop("get_veff", None)
        mf.__dict__.pop("get_hcore", None)
