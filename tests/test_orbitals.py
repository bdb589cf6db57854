"""Orbital records: NumPy density evaluation (rhosr.labels.orbitals) against PySCF and the density route."""

import numpy as np
import pytest

from rhosr.core.density import nmae
from rhosr.core.grid import Grid, box_for
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.dft import scf as dft
from rhosr.labels.orbitals import basis_size, cache_path, density_from_record, orbital_density, term_table
from rhosr.labels.store import Record, Store

WATER = (["O", "H", "H"], [[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]])
OH = (["O", "H"], [[0, 0, 0], [0, 0, 0.97]])
# one atom of each element beyond H C N O F that the data sets use
MIXED = (["B", "Si", "P", "S", "Cl", "H", "C", "N", "O", "F", "Al", "Mg"],
         [[i * 1.6, (i % 3) * 1.1, (i % 2) * 0.9] for i in range(12)])


def _placed(symbols, pos_ang):
    _, fine, pos = box_for(np.asarray(pos_ang, dtype=float) * ANGSTROM_TO_BOHR)
    return symbols, pos, fine


def test_shipped_basis_equals_pyscf():
    symbols, pos, fine = _placed(*MIXED)
    nel = sum(dft.valence_charge(s) for s in symbols)
    cell = dft.build_cell(symbols, pos, fine, spin=nel % 2)
    assert basis_size(symbols) == cell.nao_nr()
    orbitals = np.random.default_rng(0).normal(size=(cell.nao_nr(), 3))
    mine = term_table(symbols, pos, orbitals)
    ref = dft._term_table(cell, orbitals)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


def test_numpy_density_equals_pyscf_pbc_eval_gto():
    symbols, pos, fine = _placed(*WATER)
    grid = fine.coarsen()  # any periodic mesh of the box; fewer points
    cell = dft.build_cell(symbols, pos, fine)
    rng = np.random.default_rng(1)
    coeff = rng.normal(size=(cell.nao_nr(), 4)) * 0.3
    occ = np.array([2.0, 2.0, 1.5, 0.5])
    rho = orbital_density(symbols, pos, grid, coeff, occ)
    ao = np.asarray(cell.pbc_eval_gto("GTOval", grid.coords().reshape(-1, 3)))
    ref = np.einsum("pi,i->p", (ao @ coeff) ** 2, occ).reshape(grid.mesh)
    assert nmae(rho, ref) <= 1e-10


def test_wrong_coefficient_count_is_refused():
    symbols, pos, fine = _placed(*WATER)
    with pytest.raises(ValueError, match="basis"):
        orbital_density(symbols, pos, fine, np.ones((5, 2)), np.ones(2))


@pytest.fixture(scope="module", params=["closed", "open", "smeared"])
def label(request):
    """(kind, symbols, positions, grid, DFTResult with density) of a small SCF."""
    kind = request.param
    symbols, pos, fine = _placed(*(OH if kind == "open" else WATER))
    res = dft.run_dft(symbols, pos, fine, spin=1 if kind == "open" else 0,
                      smearing=0.01 if kind == "smeared" else None)
    assert res.converged, res.reason
    return kind, symbols, pos, fine, res


def test_orbital_record_gives_the_density_route(label, tmp_path, monkeypatch):
    kind, symbols, pos, fine, res = label
    monkeypatch.setenv("RHOSR_CACHE", str(tmp_path / "cache"))
    if kind == "open":  # every spin channel is kept
        assert set(res.mo_spin) == {0, 1} and res.mo_occ.max() == 1.0
    if kind == "smeared":  # fractional occupations above 1e-8 are kept
        assert res.mo_occ.min() < 1e-3 and res.mo_occ.min() > dft.RECORD_OCC_MIN
    store = Store(tmp_path / "s", mode="a")
    store.write(Record(id="m", symbols=tuple(symbols), positions=pos, cell=np.asarray(fine.cell),
                       fine_mesh=fine.mesh, spin=1 if kind == "open" else 0,
                       mo_coeff=res.mo_coeff.astype(np.float32), mo_occ=res.mo_occ,
                       mo_spin=res.mo_spin))
    rec = store.read("m")
    assert rec.rho_dft.dtype == np.float32 and rec.rho_dft.shape == fine.mesh
    # the density route (PySCF's basis, point-wise) on the same float32 coefficients
    cell = dft.build_cell(symbols, pos, fine, spin=rec.spin)
    route = dft.evaluate_density(cell, fine, rec.mo_coeff.astype(float), rec.mo_occ)
    assert nmae(rec.rho_dft, route.astype(np.float32)) <= 1e-8  # 1e-6 %
    # and within float32 rounding of the SCF's own (float64) density
    assert nmae(rec.rho_dft, res.density) <= 1e-7
    assert fine.integrate(rec.rho_dft) == pytest.approx(res.nelectron, abs=1e-3)
    assert cache_path(rec).is_file()  # evaluated once, then cached


def test_cache_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("RHOSR_CACHE", str(tmp_path))
    symbols, pos, fine = _placed(*WATER)
    grid = Grid(fine.cell, tuple(n // 2 for n in fine.mesh))
    coeff = np.random.default_rng(2).normal(size=(basis_size(symbols), 2)).astype(np.float32)
    rec = Record(id="w", symbols=tuple(symbols), positions=pos, cell=np.asarray(grid.cell),
                 fine_mesh=grid.mesh, mo_coeff=coeff, mo_occ=np.array([2.0, 2.0]))
    first = density_from_record(rec)
    path = cache_path(rec)
    np.save(path, np.zeros_like(first) + 7.0)  # a cached file is used as it is
    assert density_from_record(rec).max() == 7.0
    rec.mo_coeff = coeff * 1.01  # a changed record never reads the old cache
    assert cache_path(rec) != path
    assert density_from_record(rec).max() == pytest.approx(1.01**2 * first.max(), rel=1e-5)
    monkeypatch.setenv("RHOSR_CACHE", "off")
    assert cache_path(rec) is None
    np.testing.assert_allclose(density_from_record(rec), first * 1.01**2, rtol=1e-5)
