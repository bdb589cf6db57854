"""The refinement (rhosr.dft.refine): converges to the SCF's density and energy, stays stable on
an ion, stops at --tol, and says when it did not converge."""

import json

import numpy as np
import pytest

from rhosr.cli.main import main
from rhosr.core.density import nmae
from rhosr.core.grid import box_for
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.dft.refine import refine
from rhosr.dft.scf import run_dft
from rhosr.errors import InputError


def _case(spec):
    mol = load_molecule(spec)
    _, fine, pos = box_for(mol.positions)
    ref = run_dft(mol.symbols, pos, fine, charge=mol.charge, threads=2)
    assert ref.converged
    return mol, fine, pos, ref


@pytest.fixture(scope="module")
def ammonia():
    return _case("smiles:N")


def test_converges_to_the_scf_from_a_perturbed_start(ammonia):
    mol, fine, pos, ref = ammonia
    sad = sad_density(mol.symbols, pos, fine)
    start = 0.7 * ref.density + 0.3 * sad
    assert 100 * nmae(start, ref.density) > 1.0
    for method in ("pulay", "newton", "diis"):
        res = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=30, method=method)
        assert res.converged and res.steps < 30
        assert 100 * nmae(res.density, ref.density) <= 0.01
        assert abs(res.energy - ref.energy) <= 1e-6
        assert res.residuals[-1] <= 1e-7
        assert set(res.timings) >= {"setup", "fock", "diagonalise", "density", "pointwise"}


def test_newton_steps_reach_the_same_fixed_point_in_fewer_steps(ammonia):
    """The Newton-preconditioned mixing of density matrices (rhosr.dft.newton) ends where
    Pulay mixing of densities ends, in fewer steps; each step past the second falls by
    more than the 0.4 of mixing without it."""
    mol, fine, pos, ref = ammonia
    start = 0.7 * ref.density + 0.3 * sad_density(mol.symbols, pos, fine)
    newton = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=30, method="newton")
    pulay = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=30)
    assert newton.converged and pulay.converged and newton.steps < pulay.steps
    assert 100 * nmae(newton.density, pulay.density) <= 1e-4
    assert abs(newton.energy - pulay.energy) <= 1e-8
    r = newton.residuals
    assert all(b < 0.4 * a for a, b in zip(r[1:], r[2:]))


def test_newton_step_inverts_the_fitted_hartree_response(ammonia):
    """HartreeNewton solves δ − χ₀ K_H δ = R in its basis: for δ its output, R + χ₀ V[fit(δ)]
    gives δ back (to the fitted response's rounding)."""
    from rhosr.dft.newton import HartreeNewton, newton_fits
    from rhosr.dft.physics import scf_object

    mol, fine, pos, ref = ammonia
    mf = scf_object(mol.symbols, pos, fine)
    dm = mf.get_init_guess()
    e, c = mf.eig(mf.get_hcore() + mf.get_veff(dm=dm), mf.get_ovlp())
    occ = mf.get_occ(e, c)
    assert newton_fits(mf)
    step = HartreeNewton(mf.cell, e, c, occ)
    rng = np.random.default_rng(0)
    r = rng.normal(size=dm.shape)
    r = 1e-3 * (r + r.T)
    delta = step(r)
    # χ₀ V[y] for the fit y of δ, by the class's own pieces
    import scipy.linalg as sla
    from pyscf import lib

    fit = sla.cho_solve(step.metric, step.lpq @ lib.pack_tril(2 * delta - np.diag(np.diag(delta))))
    u = (2.0 * (fit @ step.lia) / step.gap).reshape(step.co.shape[1], step.cv.shape[1])
    x = step.cv @ u.T @ step.co.T
    assert np.abs(r + x + x.T - delta).max() <= 1e-8 * np.abs(delta).max()
    assert np.abs(delta - r).max() > 1e-2 * np.abs(r).max()  # the response is not negligible
    smeared = scf_object(mol.symbols, pos, fine, smearing=0.01)
    assert not newton_fits(smeared)  # fractional occupations: "pulay" instead


def test_newton_where_it_cannot_apply_runs_pulay(ammonia):
    """With smearing there is no Newton step: "newton" runs Pulay mixing of densities, step for
    step, and says so."""
    mol, fine, pos, ref = ammonia
    start = 0.7 * ref.density + 0.3 * sad_density(mol.symbols, pos, fine)
    runs = [refine(mol.symbols, pos, fine, start, smearing=0.01, tol=1e-7, max_steps=5,
                   method=method, pointwise=False) for method in ("newton", "pulay")]
    assert [r.method for r in runs] == ["pulay", "pulay"]
    assert np.allclose(runs[0].residuals, runs[1].residuals, rtol=1e-8, atol=0)
    assert runs[0].residuals[-1] < 0.1 * runs[0].residuals[0]


def test_a_short_pulay_history_reaches_the_same_fixed_point(ammonia):
    """The history drops its oldest input and residual (kept inner products shifted) once
    full: history 2 still converges, to the default's density and energy."""
    mol, fine, pos, ref = ammonia
    start = 0.7 * ref.density + 0.3 * sad_density(mol.symbols, pos, fine)
    short = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=40, history=2)
    default = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=40)
    assert short.converged and default.converged and short.steps > 2
    assert 100 * nmae(short.density, default.density) <= 1e-4
    assert abs(short.energy - default.energy) <= 1e-8


def test_loose_steps_reach_the_full_steps_fixed_point(ammonia):
    """The default's cheap steps (a looser multigrid task list, corrected by the last full
    step) end where every-step-full ends; the first step is full, most later ones loose."""
    from rhosr.dft.mesh import loose_cache, mesh_density
    from rhosr.dft.physics import scf_object

    mol, fine, pos, ref = ammonia
    start = 0.7 * ref.density + 0.3 * sad_density(mol.symbols, pos, fine)
    cheap = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=30)
    full = refine(mol.symbols, pos, fine, start, tol=1e-7, max_steps=30, loose=None)
    kinds = [t["full"] for t in cheap.trace]
    assert kinds[0] and sum(kinds) < len(kinds) / 2 and all(t["full"] for t in full.trace)
    assert cheap.converged and 100 * nmae(cheap.density, full.density) <= 1e-4
    assert abs(cheap.energy - full.energy) <= 1e-8
    # the loose task list alone is off by far more than what the corrected steps leave
    mf = scf_object(mol.symbols, pos, fine)
    dm = mf.get_init_guess()
    exact = mesh_density(mf, dm)
    assert 1e-5 < nmae(mesh_density(mf, dm, loose_cache(mf, 1e-5)), exact) < 1e-2


def test_tol_stops_early_and_max_steps_says_not_converged(ammonia):
    mol, fine, pos, ref = ammonia
    start = 0.7 * ref.density + 0.3 * sad_density(mol.symbols, pos, fine)
    loose = refine(mol.symbols, pos, fine, start, tol=1e-2, max_steps=30)
    tight = refine(mol.symbols, pos, fine, start, tol=1e-6, max_steps=30)
    assert loose.converged and tight.converged
    assert loose.steps < tight.steps
    assert loose.residuals[-1] <= 1e-2 < max(loose.residuals[:-1], default=1.0)
    one = refine(mol.symbols, pos, fine, start, tol=1e-9, max_steps=1)
    assert not one.converged and one.steps == 1 and one.density is not None
    with pytest.raises(InputError, match="max steps"):
        refine(mol.symbols, pos, fine, start, max_steps=0)


def test_stable_on_an_anion_from_the_sad():
    mol, fine, pos, ref = _case("smiles:[OH-]")
    start = sad_density(mol.symbols, pos, fine, charge=mol.charge)
    before = 100 * nmae(start, ref.density)
    res = refine(mol.symbols, pos, fine, start, charge=mol.charge, tol=1e-6, max_steps=30)
    after = 100 * nmae(res.density, ref.density)
    assert res.converged and after < 0.01 < before
    assert abs(res.energy - ref.energy) <= 1e-6


def test_cli_says_converged_or_not(tmp_path, capsys):
    out = tmp_path / "nh3.npy"
    assert main(["predict", "smiles:N", "--refine", "--max-steps", "1", "--tol", "1e-9",
                 "-o", str(out), "--format", "npy"]) == 0
    assert "NOT converged, best iterate returned" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["refine_converged"] is False and meta["refine_steps"] == 1
    assert main(["predict", "smiles:N", "--refine", "-o", str(out), "--format", "npy"]) == 0
    line = capsys.readouterr().out
    assert "converged (" in line and "NOT" not in line
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["refine_converged"] is True and meta["refine_residual"] <= 1e-3
    assert np.isfinite(meta["energy_hartree"])
