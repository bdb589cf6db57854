"""Kohn–Sham steps from a density (rhosr.dft.physics, rhosr.dft.mesh, rhosr.dft.refine) and
the energy / scf / predict --refine commands."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rhosr.cli.main import main
from rhosr.core.grid import box_for
from rhosr.core.sources import load_molecules
from rhosr.dft import physics
from rhosr.dft.refine import refine, scf_from_density
from rhosr.dft.scf import run_dft


def _placed(spec):
    mol = load_molecules(spec)[0]
    _, fine, pos = box_for(mol.positions)
    return mol, fine, pos


@pytest.fixture(scope="module", params=["smiles:O", "smiles:[OH-]"])
def exact(request):
    """A converged label (point-wise density, energy) of water and of hydroxide."""
    mol, fine, pos = _placed(request.param)
    res = run_dft(mol.symbols, pos, fine, charge=mol.charge)
    assert res.converged
    return mol, fine, pos, res


def test_exact_density_gives_the_scf_energy(exact):
    mol, fine, pos, res = exact
    # the single undamped step of the converged density: the SCF's energy and density
    step = refine(mol.symbols, pos, fine, res.density, charge=mol.charge, tol=0, max_steps=1,
                  mixing=1.0, keep_orbitals=True, energy_ks=True)
    assert step.energy == pytest.approx(res.energy, abs=1e-8)
    assert step.energy_ks == pytest.approx(res.energy, abs=1e-8)
    assert step.electrons == pytest.approx(res.nelectron, abs=1e-10)
    assert physics.NEGATIVE_TOLERANCE > 0 and step.density.shape == fine.mesh
    assert np.abs(step.density - res.density).sum() / res.density.sum() < 1e-5
    scf = physics.run_scf(mol.symbols, pos, fine, charge=mol.charge, guess=step.dm)
    assert scf.converged and scf.cycles <= 3
    assert scf.energy == pytest.approx(res.energy, abs=1e-9)
    # the default refinement stops at once: the exact density is its fixed point
    ref = refine(mol.symbols, pos, fine, res.density, charge=mol.charge)
    assert ref.converged and ref.steps == 1 and ref.residuals[0] < 1e-4
    assert ref.energy == pytest.approx(res.energy, abs=1e-8)


def test_scf_from_a_refined_start_takes_one_cycle(exact):
    """rhosr scf --guess rhosr: the refinement to SCF_START_TOL from a perturbed density
    leaves PySCF one cycle (and its check) at conv_tol 1e-10, and the SCF's energy."""
    mol, fine, pos, res = exact
    x = np.linspace(0.0, 1.0, fine.mesh[0])[:, None, None]
    rho = res.density * (1.0 + 0.2 * (x - 0.5))  # 20 % tilt: a dipole error
    rho *= res.density.sum() / rho.sum()
    ref, scf = scf_from_density(mol.symbols, pos, fine, rho, charge=mol.charge)
    assert ref.converged and ref.steps >= 3
    assert scf.converged and scf.cycles <= 2
    assert scf.energy == pytest.approx(res.energy, abs=1e-9)
    # the handed-over potential stands in for PySCF's first: the same cycles as from D alone,
    # to rounding
    assert ref.start.veff.shape == ref.start.dm.shape
    alone = physics.run_scf(mol.symbols, pos, fine, charge=mol.charge, guess=ref.start.dm)
    assert alone.cycles == scf.cycles
    assert np.allclose(alone.energies, scf.energies, rtol=0, atol=1e-10)
    assert max(abs(a["grad"] - b["grad"]) for a, b in zip(alone.trace, scf.trace)) < 1e-9


FOCK_AND_DIPOLE = """
import json, sys
import numpy as np
from pyscf.pbc import tools
from pyscf.pbc.dft.multigrid import multigrid_pair
from pyscf.pbc.scf.hf import dip_moment
from rhosr.dft import mesh, physics
from rhosr.dft.refine import refine
from rhosr.core.grid import box_for
from rhosr.core.sources import load_molecules
mol = load_molecules(sys.argv[1])[0]
_, fine, pos = box_for(mol.positions)
mf = physics.scf_object(mol.symbols, pos, fine, charge=mol.charge)
mf.max_cycle = 3
mf.kernel()
dm = mf.make_rdm1()
ni = mf._numint
rho_g = multigrid_pair._eval_rhoG(ni, dm, 1, np.zeros((1, 3)), 0)[0, 0]
weight = mf.cell.vol / np.prod(ni.mesh)
rho = (tools.ifft(rho_g.reshape(1, -1), ni.mesh).real / weight).reshape(ni.mesh)
terms = mesh.fock_terms(mf, rho)
ref = mf.get_veff(mf.cell, dm)
out = {"veff": float(np.abs(terms["veff"] - ref).max()),
       "ecoul": terms["e_coul"] - float(ref.ecoul), "exc": terms["e_xc"] - float(ref.exc),
       "edc": terms["e_dc"] - float(np.einsum("ij,ji->", dm, ref).real)}
out["density"] = float(np.abs(mesh.mesh_density(mf, dm) - rho).max())
step = refine(mol.symbols, pos, fine, rho, charge=mol.charge, tol=0, max_steps=1, mixing=1.0,
              keep_orbitals=True)
pyscf_dip = dip_moment(mf.cell, step.dm, unit="Debye", verbose=0, origin=np.asarray(fine.cell) / 2)
out["dipole"] = float(np.abs(step.dipole_refined_debye - pyscf_dip).max())
out["dipole_norm"] = float(np.linalg.norm(pyscf_dip))
print(json.dumps(out))
"""


@pytest.mark.parametrize("spec", ["smiles:O", "smiles:C[NH3+]"])
def test_fock_route_and_dipole_equal_pyscf(spec):
    """In a process without torch: F[ρ] = mf.get_veff(D) when ρ is D's multigrid density,
    and rhosr's real-FFT density of D is multigrid's; the dipole of ρ₁ = PySCF's dip_moment
    of D₁ about the box centre."""
    proc = subprocess.run([sys.executable, "-c", FOCK_AND_DIPOLE, spec], capture_output=True,
                          text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["veff"] <= 1e-10
    assert abs(out["ecoul"]) <= 1e-10 and abs(out["exc"]) <= 1e-10 and abs(out["edc"]) <= 1e-10
    assert out["density"] <= 1e-12
    assert out["dipole"] <= 1e-5 and out["dipole_norm"] > 0.1


def test_api_equals_cli(tmp_path, capsys):
    from rhosr import predict

    dens = predict("smiles:O")
    step = refine(dens.symbols, dens.positions, dens.grid, dens.values, charge=dens.charge,
                  pointwise=False, energy_ks=True)
    js = tmp_path / "e.json"
    assert main(["energy", "smiles:O", "--json", str(js)]) == 0
    row = json.loads(js.read_text())[0]
    assert row["energy_harris_hartree"] == pytest.approx(step.energy, abs=1e-8)
    assert row["energy_ks_hartree"] == pytest.approx(step.energy_ks, abs=1e-6)
    assert row["refine_steps"] == step.steps and row["refine_converged"] is True
    np.testing.assert_allclose(row["dipole_debye"], step.dipole_debye, atol=1e-6)
    assert row["seconds"] > 0 and row["electrons"] == pytest.approx(8.0)
    assert "E_Harris" in capsys.readouterr().out
    # --full-steps: every step at the labels' precision, the API's loose=None
    full = refine(dens.symbols, dens.positions, dens.grid, dens.values, charge=dens.charge,
                  pointwise=False, loose=None)
    assert all(t["full"] for t in full.trace) and not all(t["full"] for t in step.trace)
    assert main(["energy", "smiles:O", "--full-steps", "--json", str(js)]) == 0
    row = json.loads(js.read_text())[0]
    assert row["energy_harris_hartree"] == pytest.approx(full.energy, abs=1e-8)
    assert abs(full.energy - step.energy) < 2e-4
    # predict --refine: the written density is rhosr.dft.refine's, and the summary and sidecar say so
    res = refine(dens.symbols, dens.positions, dens.grid, dens.values, charge=dens.charge)
    out = tmp_path / "w.npy"
    assert main(["predict", "smiles:O", "--refine", "-o", str(out), "--format", "npy"]) == 0
    assert f"refined: {res.steps} step(s)" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out), res.density, rtol=0, atol=1e-6)
    side = json.loads((tmp_path / "w.json").read_text())
    assert side["kind"] == "refined" and side["refine_converged"] is True
    assert side["energy_hartree"] == pytest.approx(res.energy, abs=1e-8)
    js2 = tmp_path / "s.json"
    assert main(["scf", "smiles:O", "--guess", "minao", "--json", str(js2)]) == 0
    scf = json.loads(js2.read_text())[0]
    assert scf["cycles"] > 3 and scf["converged"] and scf["seconds"] > 0
    assert scf["energy_hartree"] == pytest.approx(step.energy, abs=1e-5)


def test_predict_without_refine_never_imports_pyscf(tmp_path):
    code = ("import sys; from rhosr.cli.main import main; "
            f"main(['predict', 'smiles:O', '-o', r'{tmp_path / 'w.cube'}']); "
            "print('pyscf' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False"


@pytest.fixture(scope="module")
def water_density():
    from rhosr import predict

    return predict("smiles:O")


@pytest.mark.parametrize("case", ["mesh", "nan", "inf", "negative", "electrons", "spin", "charge"])
def test_bad_input_exit_2_one_line_nothing_written(case, water_density, tmp_path, capsys):
    values = water_density.values.copy()
    args = ["energy", "smiles:O"]
    if case == "mesh":
        args = ["energy", "smiles:CO"]  # another molecule's box
    elif case == "nan":
        values[3, 3, 3] = np.nan
    elif case == "inf":
        values[0, 0, 0] = np.inf
    elif case == "negative":
        values[10, 10, 10] = -0.1
    elif case == "electrons":
        values *= 1.1
    elif case == "spin":
        args += ["--spin", "2"]
    elif case == "charge":
        args += ["--charge", "1", "--spin", "0"]
    path = tmp_path / "d.npy"
    type(water_density)(values, water_density.grid, water_density.symbols,
                        water_density.positions, water_density.charge).write(path, "npy")
    js = tmp_path / "out.json"
    assert main(args + ["--density", str(path), "--json", str(js)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rhosr energy: error:")
    assert not js.exists()


@pytest.mark.parametrize("command", ["predict", "energy", "scf"])
def test_bad_smearing_exit_2_before_any_work(command, tmp_path, capsys):
    """--smearing belongs to every refinement (predict --refine, energy, scf) and a width that
    is not positive stops at the command line, nothing written."""
    out = tmp_path / "w.npy"
    args = [command, "smiles:O", "--smearing", "0"]
    args += ["--refine", "-o", str(out)] if command == "predict" else ["--json", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--smearing must be a positive width" in err[0]
    assert not out.exists()
