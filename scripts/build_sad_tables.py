"""Rebuild ``src/rhosr/data/sad_tables.npz``: the atomic SAD densities.

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

Stored per element and variant (key suffix ``__<variant>__<symbol>``):

- ``rho``: the projected (spherical) density on the radial grid ``r_i = i * dr``
  up to the cutoff radius beyond which less than ``TAIL`` of the atom's
  electrons lie (e/bohr³);
- ``exp<l>``, ``dm<l>`` (l = 0, 1): the same density over the primitive
  Gaussians of gth-tzv2p, ``rho(x) = sum_l sum_ee' dm<l>_ee' sum_m x_m^(2l)
  exp(-(a_e + a_e')|x|^2)`` (what :func:`rhosr.core.sad.sad_density` evaluates);
- ``nelec``: the projected charge ``tr(P S)``;
- ``ovl``: ``tr(P S(d))``, the overlap with a copy of the atom at distance
  ``d = i * dd`` (bohr): the periodic images' share of ``tr(P S_pbc)``.

The molecular density is scaled by the one factor ``(N_valence - charge) /
tr(P S_pbc)`` (the "whole density matrix scaled to the exact valence count" of
the recipe), computed from ``nelec`` and ``ovl``.

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

from rhosr.core.elements import (  # noqa: E402
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
#: Distance step of the self-overlap tables, bohr.
DD = 0.05
#: Largest distance of the self-overlap tables, bohr (must reach ~0).
OVL_RANGE = 60.0
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


def _ao_l_m(mol):
    """Angular momentum and m index of every spherical AO of ``mol``."""
    ls, ms = [], []
    for ib in range(mol.nbas):
        l = mol.bas_angular(ib)
        for _ in range(mol.bas_nctr(ib)):
            ls += [l] * (2 * l + 1)
            ms += list(range(2 * l + 1))
    return np.array(ls), np.array(ms)


def primitive_density(mol, dm, r_fit):
    """The spherical density matrix ``dm`` over primitive Gaussians.

    Returns a dict ``l -> (exponents (n,), D (n, n))`` such that the density is

        rho(x) = sum_l sum_ee' D^l_ee' sum_m x_m^(2l) exp(-(a_e + a_e') |x|^2)

    (``sum_m x_m^0 = 1`` for ``l = 0``; ``sum_m x_m^2 = |x|^2`` for ``l = 1``),
    i.e. the components of an ``l = 1`` function are ``x_m g(|x|)``.  ``D``
    includes the angular factor ``(2l+1)/(4 pi)``.  The contracted radial
    functions are fitted (exactly: they are sums of these primitives) on the
    radii ``r_fit``."""
    ao_l, ao_m = _ao_l_m(mol)
    out = {}
    for l in range(int(ao_l.max()) + 1):
        first = np.where((ao_l == l) & (ao_m == 0))[0]
        # spherical: the block of every m component is the same, no m-m' mixing
        for m in range(1, 2 * l + 1):
            idx = np.where((ao_l == l) & (ao_m == m))[0]
            if np.abs(dm[np.ix_(idx, idx)] - dm[np.ix_(first, first)]).max() > 1e-12:
                raise RuntimeError("density matrix is not spherical")
        p_l = dm[np.ix_(first, first)]
        if np.abs(p_l).max() < 1e-14:
            continue
        if l > 1:
            raise NotImplementedError("SAD densities with l > 1")
        exps = np.unique(np.concatenate([mol.bas_exp(ib) for ib in range(mol.nbas)
                                         if mol.bas_angular(ib) == l]))
        rr = np.where(r_fit == 0, 1e-7, r_fit)
        ao = mol.eval_gto("GTOval_sph", np.outer(rr, (0.0, 0.0, 1.0)))
        if l == 0:
            g = ao[:, first] * np.sqrt(4 * np.pi)
        else:
            # PySCF's real p order is (px, py, pz): pz lies on the z axis
            g = ao[:, first + 2] / (rr[:, None] * np.sqrt(3 / (4 * np.pi)))
        basis = np.exp(-np.outer(r_fit**2, exps))
        coeff, *_ = np.linalg.lstsq(basis, g, rcond=None)  # (n_exp, n_ao)
        resid = np.abs(basis @ coeff - g).max() / np.abs(g).max()
        if resid > 1e-9:
            raise RuntimeError(f"primitive fit of l={l} misses by {resid:.1e}")
        out[l] = (exps, (2 * l + 1) / (4 * np.pi) * coeff @ p_l @ coeff.T)
    return out


def density_from_primitives(prim, r):
    """Radial density (e/bohr³) at radii ``r`` from :func:`primitive_density`."""
    rho = np.zeros_like(r)
    for l, (exps, d) in prim.items():
        g = np.exp(-np.outer(r**2, exps))
        rho += r ** (2 * l) * np.einsum("pe,ef,pf->p", g, d, g)
    return rho


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


def self_overlap(mol, dm, d):
    """``tr(P S(d))``: charge shared between the atom and a copy of itself at
    distance ``d`` (bohr), for each ``d``; ``d = 0`` gives ``tr(P S)``.

    This is what a periodic image at lattice vector T adds to ``tr(P S_pbc)``."""
    pair = gto.M(atom=[[mol.atom_symbol(0), (0, 0, 0)], [mol.atom_symbol(0), (0, 0, 1.0)]],
                 basis=mol.basis, pseudo=mol.pseudo, spin=0,
                 unit="Bohr", verbose=0)
    nbas = mol.nbas
    ptr = pair._atm[1, gto.PTR_COORD] + 2  # z coordinate of the second atom
    out = np.empty(len(d))
    for i, di in enumerate(d):
        pair._env[ptr] = di
        s12 = pair.intor("int1e_ovlp", shls_slice=(0, nbas, nbas, 2 * nbas))
        out[i] = np.sum(dm * s12)  # dm symmetric, so this is tr(dm s12) = tr(dm s21)
    return out


def build(out_path: Path = DEFAULT_OUT) -> dict:
    t0 = time.time()
    r = np.arange(int(round(R_SEARCH / DR)) + 1) * DR
    data: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        for sym in supported_elements():
            mol, dm = atomic_density_matrix(sym, variant)
            nelec = float(np.trace(dm @ mol.intor("int1e_ovlp")))
            rho = radial_density(mol, dm, r)
            prim = primitive_density(mol, dm, r[::20])
            err = np.abs(density_from_primitives(prim, r) - rho).max() / np.abs(rho).max()
            if err > 1e-9:
                raise RuntimeError(f"{sym}: primitive expansion misses the density by {err:.1e}")
            # electrons outside r: integral_r^R_SEARCH 4 pi r'^2 rho dr' (from outside in)
            shell = 4 * np.pi * r**2 * rho
            steps = 0.5 * (shell[1:] + shell[:-1]) * DR
            tail = np.concatenate([np.cumsum(steps[::-1])[::-1], [0.0]])
            i_cut = int(np.argmax(tail < TAIL * nelec))
            if i_cut == 0:
                raise RuntimeError(f"{sym}: radial search range too short")
            rc = r[i_cut]
            d = np.arange(int(np.ceil(OVL_RANGE / DD)) + 1) * DD
            ovl = self_overlap(mol, dm, d)
            if abs(ovl[0] - nelec) > 1e-10 or abs(ovl[-1]) > 1e-11 * nelec:
                raise RuntimeError(f"{sym}: self-overlap table {ovl[0]} .. {ovl[-1]}")
            ovl = ovl[: int(np.nonzero(np.abs(ovl) > 1e-11 * nelec)[0][-1]) + 2]
            key = f"{variant}__{sym}"
            data[f"rho__{key}"] = rho[: i_cut + 1]
            data[f"nelec__{key}"] = np.float64(nelec)
            data[f"ovl__{key}"] = ovl
            for l, (exps, dmat) in prim.items():
                data[f"exp{l}__{key}"] = exps
                data[f"dm{l}__{key}"] = dmat
            print(f"{variant:9s} {sym:2s} q={valence_charge(sym):2d} "
                  f"tr(PS)={nelec:.8f} cutoff={rc:6.3f} bohr rho(0)={rho[0]:.4g} "
                  f"l={sorted(prim)} overlap range {d[ovl.size - 1]:.2f} bohr")
    data["dr"] = np.float64(DR)
    data["dd"] = np.float64(DD)
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
