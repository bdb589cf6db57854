import numpy as np
import pytest
from conftest import REFERENCE

from rhosr.core.grid import COARSE_STEP_BOHR, Grid, box_for
from rhosr.core.sources import load_molecule
from rhosr.core.units import BOHR


def test_meshes_of_all_reference_cases(cases):
    assert len(cases) == 8
    for name, case in cases.items():
        mol = load_molecule(str(REFERENCE / case["xyz"]), charge=case.get("charge", 0))
        coarse, fine, pos = box_for(mol.positions)
        assert fine.mesh == tuple(case["fine_mesh"]), name
        assert coarse.mesh == tuple(n // 2 for n in case["fine_mesh"])
        # the reference files are already centred in their box
        np.testing.assert_allclose(pos, mol.positions, atol=1e-9)
        if "box_angstrom" in case:
            np.testing.assert_allclose(np.array(fine.cell) * BOHR, case["box_angstrom"], rtol=1e-12)


def test_box_edge_is_whole_coarse_steps_minus_trim():
    mol = load_molecule("qm9:1")
    coarse, fine, _ = box_for(mol.positions)
    edge_ang = np.array(coarse.cell) * BOHR
    n = np.array(coarse.mesh)
    np.testing.assert_allclose(edge_ang, n * COARSE_STEP_BOHR * BOHR - 1e-4, rtol=0, atol=1e-12)
    # spacing is L/n and the fine mesh halves it
    np.testing.assert_allclose(fine.spacing * 2, coarse.spacing)
    assert coarse.spacing.max() < COARSE_STEP_BOHR


def test_grid_points_and_volume():
    g = Grid((2.0, 3.0, 4.0), (2, 3, 4))
    c = g.coords()
    assert c.shape == (24, 3)
    np.testing.assert_allclose(c[1], [0, 0, 1.0])  # z fastest
    np.testing.assert_allclose(c[-1], [1.0, 2.0, 3.0])  # no repeated end point
    assert g.dv == pytest.approx(1.0)
    assert g.integrate(np.ones(g.mesh)) == pytest.approx(24.0)
    assert g.coarsen().refine() == g if all(n % 2 == 0 for n in g.mesh) else True
    with pytest.raises(ValueError):
        Grid((1, 1, 1), (0, 1, 1))


def test_centring_moves_mean_to_box_centre():
    pos = np.array([[0.0, 0, 0], [3.0, 0, 0], [0, 5.0, 1.0]])
    coarse, fine, centred = box_for(pos)
    np.testing.assert_allclose(centred.mean(axis=0), np.array(fine.cell) / 2)
    np.testing.assert_allclose(centred - centred[0], pos - pos[0])
