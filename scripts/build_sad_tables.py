"""Rebuild ``src/rhosr/data/sad_tables.npz``: the radial SAD densities.

The published SAD recipe (see the reference README), per element and per variant:

1. One neutral isolated atom, GTH-PBE pseudopotential, minimal ``gth-szv`` basis.
   The "worsened" variant first doubles every primitive exponent of ``gth-szv``
   (contraction coefficients unchanged, normalisation redone by PySCF).
2. Its density matrix is the core-Hamiltonian ("1e") guess of the spherically
   averaged atomic calculation with the standard non-relativistic ground-state
   shell occupations: ``pyscf.scf.atom_hf_pp.AtomSCFPP(mol).get_init_guess(key='1e')``.
   One-electron atoms (H) use ``AtomHF1ePP``, whose 1e guess is the exact
   one-electron solution in the basis (this is what PySCF's own atomic guess does).
3. The density matrix is projected onto ``gth-tzv2p`` with
   ``pyscf.scf.addons.project_dm_nr2nr`` (least-squares projection
   ``P = S22^-1 S21 D S12 S22^-1``), which loses a little charge.
4. The projected density is spherical; it is tabulated on a uniform radial grid
   ``r_i = i * dr`` up to the cutoff radius beyond which less than ``TAIL``
   (relative) of the atom's electrons lie.  The projected electron count
   ``tr(P S22)`` is stored too: the molecular density is scaled by one global
   factor ``(N_valence - charge) / sum_atoms tr(P S22)`` (the "whole density
   matrix scaled to the exact valence count" of the recipe).

Run (a few seconds)::

    PYTHONPATH=src python scripts/build_sad_tables.py [output.npz]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyscf  # noqa: E402
from pyscf import gto  # noqa: E402
from pyscf.scf import addons, atom_hf_pp  # noqa: E402

from rhosr.elements import (  # noqa: E402
    LABEL_BASIS,
    PSEUDOPOTENTIAL,
    SAD_BASIS,
    supported_elements,
    valence_charge,
)

#: Radial step of the stored tables, bohr.
DR = 0.005
#: Radial extent used to find the cutoff, bohr.
R_SEARCH = 40.0
#: Fraction of an atom's electrons allowed outside its cutoff radius.
TAIL = 1e-7
VARIANTS = ("paper", "worsened")
DEFAULT_OUT = ROOT / "src" / "rhosr" / "data" / "sad_tables.npz"


def sad_basis(symbol: str, variant: str):
    """The gth-szv basis of ``symbol`` in PySCF's internal format, exponents
    doubled for the worsened variant."""
    basis = gto.basis.load(SAD_BASIS, symbol)
    if variant == "worsened":
        basis = [[shell[0]] + [[prim[0] * 2.0] + list(prim[1:]) for prim in shell[1:]]
                 for shell in basis]
    elif variant != "paper":
        raise ValueError(f"unknown variant {variant!r}")
    return basis


def atomic_density_matrix(symbol: str, variant: str):
    """Projected atomic density matrix on gth-tzv2p.

    Returns
    -------
    mol : pyscf.gto.Mole
        The atom at the origin with the gth-tzv2p basis (bohr).
    dm : (nao, nao) array
        The 1e-guess density matrix projected onto ``mol``'s basis.
    """
    q = valence_charge(symbol)
    atom = [[symbol, (0.0, 0.0, 0.0)]]
    small = gto.M(atom=atom, basis={symbol: sad_basis(symbol, variant)},
                  pseudo=PSEUDOPOTENTIAL, spin=q % 2, unit="Bohr", verbose=0)
    if small.nelectron == 1:
        mf = atom_hf_pp.AtomHF1ePP(small)
    else:
        mf = atom_hf_pp.AtomSCFPP(small)
    dm = np.asarray(mf.get_init_guess(key="1e"))
    if dm.ndim == 3:  # ROHF-type (alpha, beta) for one-electron atoms
        dm = dm[0] + dm[1]
    big = gto.M(atom=atom, basis=LABEL_BASIS, pseudo=PSEUDOPOTENTIAL,
                spin=q % 2, unit="Bohr", verbose=0)
    return big, addons.project_dm_nr2nr(small, dm, big)


def radial_density(mol, dm, r):
    """Spherical density of ``dm`` on radii ``r`` (bohr), e/bohr³.

    Evaluated along two directions; the result must not depend on direction."""
    out = []
    for direction in ((1.0, 0.0, 0.0), (0.36, 0.48, 0.8)):
        ao = mol.eval_gto("GTOval_sph", np.outer(r, direction))
        out.append(np.einsum("pi,ij,pj->p", ao, dm, ao))
    scale = np.abs(out[0]).max()
    if np.abs(out[0] - out[1]).max() > 1e-10 * scale:
        raise RuntimeError("atomic density is not spherical")
    return out[0]


def build(out_path: Path = DEFAULT_OUT) -> dict:
    t0 = time.time()
    r = np.arange(int(round(R_SEARCH / DR)) + 1) * DR
    data: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        for sym in supported_elements():
            mol, dm = atomic_density_matrix(sym, variant)
            nelec = float(np.trace(dm @ mol.intor("int1e_ovlp")))
            rho = radial_density(mol, dm, r)
            # electrons outside r: nelec - integral_0^r 4 pi r'^2 rho dr'
            shell = 4 * np.pi * r**2 * rho
            inside = np.concatenate([[0.0], np.cumsum(0.5 * (shell[1:] + shell[:-1]) * DR)])
            tail = nelec - inside
            i_cut = int(np.argmax(tail < TAIL * nelec))
            if i_cut == 0:
                raise RuntimeError(f"{sym}: radial search range too short")
            key = f"{variant}__{sym}"
            data[f"rho__{key}"] = rho[: i_cut + 1]
            data[f"nelec__{key}"] = np.float64(nelec)
            print(f"{variant:9s} {sym:2s} q={valence_charge(sym):2d} "
                  f"tr(PS)={nelec:.8f} cutoff={r[i_cut]:6.3f} bohr rho(0)={rho[0]:.4g}")
    data["dr"] = np.float64(DR)
    data["tail"] = np.float64(TAIL)
    data["elements"] = np.array(supported_elements())
    data["variants"] = np.array(VARIANTS)
    data["pyscf_version"] = np.array(pyscf.__version__)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **data)
    print(f"wrote {out_path} ({out_path.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s")
    return data


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
