"""Reference Kohn–Sham labels (rhosr.dft.scf) against the published data."""

from pathlib import Path

import numpy as np
import pytest

from rhosr.core.grid import Grid, box_for
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.dft.scf import DFTResult, build_cell, evaluate_density, level_of_theory, run_dft

DATA = Path(__file__).parent / "data"


def read_xyz(path):
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    rows = [line.split() for line in lines[2:2 + n]]
    symbols = [r[0] for r in rows]
    pos = np.array([[float(x) for x in r[1:4]] for r in rows]) * ANGSTROM_TO_BOHR
    return symbols, pos


def nmae(rho, ref):
    return float(np.abs(rho - ref).sum() / ref.sum())


def molecule(symbols, pos_angstrom):
    _, fine, pos = box_for(np.asarray(pos_angstrom, dtype=float) * ANGSTROM_TO_BOHR)
    return symbols, pos, fine


@pytest.fixture(scope="module", params=["qm9_000001", "qm9_000002"])
def published(request):
    name = request.param
    symbols, pos = read_xyz(DATA / f"{name}.xyz")
    _, fine, centred = box_for(pos)
    ref = np.load(DATA / f"{name}_dft.npz")
    assert tuple(ref["fine_mesh"]) == fine.mesh
    res = run_dft(symbols, centred, fine)
    return name, fine, res, ref


def test_published_density_and_energy(published):
    name, fine, res, ref = published
    assert isinstance(res, DFTResult)
    assert res.converged and res.reason == ""
    assert res.density.shape == fine.mesh and res.density.dtype == np.float64
    assert res.nelectron == 8
    assert nmae(res.density, ref["rho_dft"].astype(np.float64)) <= 1e-4  # 0.01 %
    assert abs(res.energy - float(ref["energy_hartree"])) <= 1e-5
    assert fine.integrate(res.density) == pytest.approx(8.0, abs=1e-3)
    assert set(res.timings) >= {"scf", "density"}
    assert res.seconds >= res.timings["scf"] + res.timings["density"] - 1e-6
    assert res.iterations > 0


# CH3 radical (planar), spin 2S = 1: UKS
CH3 = (["C", "H", "H", "H"],
       [[0, 0, 0], [1.079, 0, 0], [-0.5395, 0.93444, 0], [-0.5395, -0.93444, 0]])
# hydroxide, charge -1
OH = (["O", "H"], [[0, 0, 0], [0, 0, 0.97]])


def test_open_shell_radical():
    symbols, pos, fine = molecule(*CH3)
    res = run_dft(symbols, pos, fine, spin=1)
    assert res.converged, res.reason
    assert res.nelectron == 7
    assert fine.integrate(res.density) == pytest.approx(7.0, abs=1e-3)
    assert res.density.min() > -1e-8
    assert np.isfinite(res.energy) and res.energy < 0


def test_charged_anion():
    """A charged restricted cell: PySCF's Makov–Payne report must be skipped."""
    symbols, pos, fine = molecule(*OH)
    res = run_dft(symbols, pos, fine, charge=-1)
    assert res.converged, res.reason
    assert res.nelectron == 8
    assert fine.integrate(res.density) == pytest.approx(8.0, abs=1e-3)


def test_charged_anion_with_smearing():
    symbols, pos, fine = molecule(*OH)
    res = run_dft(symbols, pos, fine, charge=-1, smearing=0.01, threads=1)
    assert res.converged, res.reason
    assert fine.integrate(res.density) == pytest.approx(8.0, abs=1e-3)


def test_not_converged_is_reported_not_raised():
    symbols, pos, fine = molecule(*OH)
    res = run_dft(symbols, pos, fine, charge=-1, max_cycle=2)
    assert not res.converged
    assert res.density is None
    assert "not converged" in res.reason and "2" in res.reason
    assert res.iterations == 2
    assert np.isnan(res.energy)


def test_coarse_grid_is_refused():
    symbols, pos, fine = molecule(*OH)
    res = run_dft(symbols, pos, fine.coarsen(), charge=-1)
    assert not res.converged and res.density is None and "coarser" in res.reason


@pytest.mark.parametrize("kwargs, text", [
    ({"spin": 1}, "spin"),  # 8 electrons cannot have one unpaired
    ({"charge": 8}, "electrons"),
])
def test_invalid_input_is_reported_not_raised(kwargs, text):
    symbols, pos, fine = molecule(*OH)
    res = run_dft(symbols, pos, fine, **{"charge": -1, **kwargs})
    assert not res.converged and res.density is None and text in res.reason
    assert np.isnan(res.energy)


def test_exception_is_reported_not_raised():
    symbols, pos, fine = molecule(*OH)
    res = run_dft(["O", "Xx"], pos, fine)
    assert not res.converged and res.density is None and res.reason


@pytest.mark.parametrize("unrestricted", [False, True])
def test_density_matches_pyscf_pointwise(unrestricted):
    """The fast evaluator equals AO values (pbc_eval_gto) times the density matrix."""
    symbols, pos, fine = molecule(*CH3)
    coarse = fine.coarsen()  # any mesh of the same cell will do; fewer points
    cell = build_cell(symbols, pos, fine, spin=1)
    rng = np.random.default_rng(7)
    nao = cell.nao
    if unrestricted:
        mo = rng.normal(scale=0.3, size=(2, nao, 6))
        occ = np.array([[1, 1, 1, 1, 0.5, 0], [1, 1, 1, 0.25, 0, 0]], dtype=float)
        dm = sum(c @ np.diag(o) @ c.T for c, o in zip(mo, occ))
    else:
        mo = rng.normal(scale=0.3, size=(nao, 6))
        occ = np.array([2, 2, 2, 0.5, 1e-3, 0])
        dm = mo @ np.diag(occ) @ mo.T
    ao = cell.pbc_eval_gto("GTOval_sph", coarse.coords())
    ref = np.einsum("pi,ij,pj->p", ao, dm, ao).reshape(coarse.mesh)
    rho = evaluate_density(cell, coarse, mo, occ)
    assert rho.shape == coarse.mesh
    assert nmae(rho, ref) < 1e-8
    assert np.abs(rho - ref).max() < 1e-8 * ref.max()
    # a small memory cap (bricks and orbital groups split) gives the same numbers
    small = evaluate_density(cell, coarse, mo, occ, max_bytes=20000)
    np.testing.assert_allclose(small, rho, rtol=1e-12, atol=1e-14)


def test_level_of_theory_is_json():
    import json

    lot = level_of_theory()
    assert json.loads(json.dumps(lot)) == lot
    assert lot["xc"] == "PBE" and lot["basis"] == "gth-tzv2p" and lot["pseudo"] == "gth-pbe"
    assert lot["ke_cutoff_hartree"] == 200.0 and lot["smearing"] is None
    assert level_of_theory(0.01)["smearing"]["sigma_hartree"] == 0.01
    assert "pyscf" in lot["versions"]


def test_cell_mesh_is_the_fine_mesh():
    symbols, pos, fine = molecule(*OH)
    cell = build_cell(symbols, pos, fine, charge=-1)
    assert tuple(cell.mesh) == fine.mesh
    np.testing.assert_allclose(np.diag(cell.lattice_vectors()), fine.cell)
    with pytest.raises(ValueError):
        evaluate_density(cell, Grid((1.0, 1.0, 1.0), (4, 4, 4)), np.eye(cell.nao), np.ones(cell.nao))


def test_torch_loaded_after_pyscf_still_converges(tmp_path):
    """torch brings a second OpenMP runtime that breaks threaded PySCF in-process."""
    import subprocess
    import sys

    code = (
        "import pyscf.lib, torch\n"
        "from rhosr.core.sources import load_molecule\n"
        "from rhosr.core.grid import box_for\n"
        "from rhosr.dft.isolation import mixed_openmp\n"
        "from rhosr.dft.scf import run_dft\n"
        "assert mixed_openmp()\n"
        "m = load_molecule('smiles:[H][H]'); c, f, p = box_for(m.positions)\n"
        "r = run_dft(m.symbols, p, f, threads=2)\n"
        "print(r.converged, round(f.integrate(r.density), 4))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "2.0"]
