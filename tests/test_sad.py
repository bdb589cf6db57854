"""SAD input density: the published references, normalisation, periodicity, tables."""

import ase.io
import numpy as np
import pytest
from conftest import DATA, REFERENCE
from scipy.interpolate import CubicSpline

from rhosr.core.elements import supported_elements, valence_charge
from rhosr.core.grid import Grid, box_for
from rhosr.core.sad import sad_density
from rhosr.core.sadatoms import VARIANTS, cutoff_radius, projected_electrons, radial_table
from rhosr.core.units import ANGSTROM_TO_BOHR

#: Acceptance: NMAE against the published densities (fine mesh).
TOLERANCE = {"paper": 1e-3, "worsened": 5e-3}
#: What this implementation reaches (measured 2e-6 to 1e-5, plus 2.2e-5 from
#: the rounding of the stored references): a regression guard.
ACHIEVED = 1e-4
KEYS = {"paper": "rho_sad", "worsened": "rho_sad_worsened"}


def nmae(pred, ref):
    return float(np.abs(pred - ref).sum() / ref.sum())


@pytest.fixture(scope="module")
def molecules():
    out = {}
    for name in ("qm9_000001", "qm9_000002"):
        atoms = ase.io.read(REFERENCE / f"{name}.xyz")
        coarse, fine, pos = box_for(atoms.positions * ANGSTROM_TO_BOHR)
        out[name] = (atoms.get_chemical_symbols(), pos, coarse, fine)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["qm9_000001", "qm9_000002"])
def test_matches_published_sad(molecules, name, variant):
    symbols, pos, coarse, fine = molecules[name]
    with np.load(DATA / f"{name}_sad.npz") as npz:
        ref = npz[KEYS[variant]].astype(np.float64)
    rho = sad_density(symbols, pos, fine, variant=variant)
    assert rho.shape == fine.mesh == ref.shape and rho.dtype == np.float64
    err = nmae(rho, ref)
    assert err <= TOLERANCE[variant]
    assert err <= ACHIEVED, f"NMAE {err:.2e}"
    # the coarse (network input) SAD is the fine one at every second point (to rounding:
    # OpenBLAS may sum the matrix products of the two meshes in a different order)
    np.testing.assert_allclose(sad_density(symbols, pos, coarse, variant=variant),
                               rho[::2, ::2, ::2], rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["qm9_000001", "qm9_000002"])
def test_float32_agrees_with_float64(molecules, name):
    """The float32 SAD that rhosr predict feeds the network: the same density to ~1e-6,
    with atoms both inside the box and reaching their periodic images (methane)."""
    symbols, pos, coarse, fine = molecules[name]
    for grid in (coarse, fine):
        ref = sad_density(symbols, pos, grid)
        rho = sad_density(symbols, pos, grid, dtype=np.float32)
        assert rho.dtype == np.float32 and rho.shape == ref.shape
        assert np.abs(rho - ref).max() <= 1e-6 * ref.max()
        assert grid.integrate(rho.astype(np.float64)) == pytest.approx(grid.integrate(ref), rel=1e-6)
    with pytest.raises(ValueError, match="dtype"):
        sad_density(symbols, pos, coarse, dtype=np.int32)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("charge", [0, 1, -2])
def test_electron_count(molecules, variant, charge):
    symbols, pos, coarse, fine = molecules["qm9_000002"]
    n = sum(valence_charge(s) for s in symbols) - charge
    rho = sad_density(symbols, pos, fine, charge=charge, variant=variant)
    assert fine.integrate(rho) == pytest.approx(n, rel=1e-8)
    # the coarse mesh integrates the same density less accurately
    assert coarse.integrate(sad_density(symbols, pos, coarse, charge=charge,
                                        variant=variant)) == pytest.approx(n, rel=1e-4)


def test_electron_count_other_elements():
    symbols = ["Mg", "O", "Cl", "Li", "H"]
    pos = np.array([[0, 0, 0], [3.3, 0, 0], [0, 4.2, 0], [0, 0, 5.0], [3, 3, 3.0]])
    _, fine, pos = box_for(pos)
    for variant in VARIANTS:
        rho = sad_density(symbols, pos, fine, charge=-1, variant=variant)
        # 10 + 6 + 7 + 3 + 1 valence electrons, plus one; Mg is sharp: fine-mesh
        # quadrature error ~1e-5
        assert fine.integrate(rho) == pytest.approx(28, rel=1e-4)


@pytest.mark.parametrize("cell", [(30.0, 28.0, 26.0), (9.0, 10.0, 8.5)])
def test_periodic_images(cell):
    """An atom across the box edge is the same atom shifted by whole cells, and
    moving it by whole mesh steps rolls the density (big cell: the atom does not
    reach its images; small cell: it does)."""
    mesh = tuple(int(round(c / 0.35)) for c in cell)
    grid = Grid(cell, mesh)
    h = grid.spacing
    inside = np.array([[0.3, 0.7, 0.55]]) * grid.cell
    for sym in ("O", "Mg"):
        for variant in VARIANTS:
            rho = sad_density([sym], inside, grid, variant=variant)
            shifted = sad_density([sym], inside + np.array([[1, -2, 3]]) * grid.cell, grid,
                                  variant=variant)
            np.testing.assert_allclose(shifted, rho, rtol=0, atol=1e-12 * rho.max())
            steps = np.array([-3, 2, 0]) + np.round(np.array(grid.cell) / 2 / h).astype(int)
            near_edge = inside + steps * h  # across the edge along x and beyond z/2
            moved = sad_density([sym], near_edge, grid, variant=variant)
            np.testing.assert_allclose(moved, np.roll(rho, tuple(steps), axis=(0, 1, 2)),
                                       rtol=0, atol=1e-10 * rho.max())


def test_two_atoms_add_up():
    """In a big cell the SAD is the sum of the atoms' densities (one normalisation)."""
    grid = Grid((30.0, 30.0, 30.0), (60, 60, 60))
    pos = np.array([[10.0, 12.0, 14.0], [22.0, 3.0, 28.5]])
    both = sad_density(["N", "Cl"], pos, grid)
    scale = lambda syms: sum(valence_charge(s) for s in syms) / sum(  # noqa: E731
        projected_electrons(s) for s in syms)
    parts = sum(sad_density([s], p[None], grid) / scale([s]) for s, p in zip(["N", "Cl"], pos))
    np.testing.assert_allclose(both, parts * scale(["N", "Cl"]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("symbol", ["H", "C", "N", "O", "Li", "Mg", "P", "Cl"])
def test_radial_table_is_the_atom(symbol):
    """In a big cell, one atom's SAD is its radial table, scaled to its valence charge."""
    grid = Grid((40.0, 40.0, 40.0), (64, 64, 64))
    p = np.array([20.1, 19.7, 20.3])
    for variant in VARIANTS:
        rho = sad_density([symbol], p[None], grid, variant=variant)
        r_tab, rho_tab = radial_table(symbol, variant)
        d = grid.coords() - p
        r = np.linalg.norm(d, axis=1)
        inside = r < r_tab[-1]
        expect = CubicSpline(r_tab, rho_tab)(r[inside]) * (
            valence_charge(symbol) / projected_electrons(symbol, variant))
        got = rho.ravel()[inside]
        assert np.abs(got - expect).max() <= 1e-7 * expect.max()


def test_tables_cover_supported_elements():
    for variant in VARIANTS:
        for symbol in supported_elements():
            r, rho = radial_table(symbol, variant)
            assert r[0] == 0 and r[-1] == cutoff_radius(symbol, variant) > 4
            n = projected_electrons(symbol, variant)
            assert 0.8 * valence_charge(symbol) < n <= valence_charge(symbol) + 1e-9
            integral = np.sum(4 * np.pi * r**2 * rho) * (r[1] - r[0])
            assert integral == pytest.approx(n, rel=1e-5)
            assert not rho.flags.writeable


def _pyscf_sad(symbols, pos, grid, charge, variant):
    """The published recipe evaluated by PySCF itself (slow, small meshes only)."""
    import scipy.linalg
    from pyscf import gto
    from pyscf.pbc import dft as pbcdft
    from pyscf.pbc import gto as pbcgto
    from pyscf.scf import addons, atom_hf_pp

    blocks = {}
    for s in set(symbols):
        basis = gto.basis.load("gth-szv", s)
        if variant == "worsened":
            basis = [[b[0]] + [[p[0] * 2] + list(p[1:]) for p in b[1:]] for b in basis]
        q = valence_charge(s)
        small = gto.M(atom=[[s, (0, 0, 0)]], basis={s: basis}, pseudo="gth-pbe", spin=q % 2,
                      verbose=0)
        mf = atom_hf_pp.AtomHF1ePP(small) if q == 1 else atom_hf_pp.AtomSCFPP(small)
        dm = np.asarray(mf.get_init_guess(key="1e"))
        dm = dm.sum(axis=0) if dm.ndim == 3 else dm
        big = gto.M(atom=[[s, (0, 0, 0)]], basis="gth-tzv2p", pseudo="gth-pbe", spin=q % 2,
                    verbose=0)
        blocks[s] = addons.project_dm_nr2nr(small, dm, big)
    cell = pbcgto.Cell()
    cell.build(a=np.diag(grid.cell), unit="B", atom=[[s, tuple(x)] for s, x in zip(symbols, pos)],
               basis="gth-tzv2p", pseudo="gth-pbe", mesh=list(grid.mesh), charge=charge,
               spin=(sum(valence_charge(s) for s in symbols) - charge) % 2, verbose=0)
    dm = scipy.linalg.block_diag(*[blocks[s] for s in symbols])
    dm *= cell.nelectron / np.trace(dm @ cell.pbc_intor("int1e_ovlp"))
    ni = pbcdft.numint.NumInt()
    ao = ni.eval_ao(cell, cell.get_uniform_grids())
    return ni.eval_rho(cell, ao, dm).reshape(grid.mesh)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_pyscf_for_other_elements(variant):
    """Second- and third-row elements in a small cell (atoms reach their images),
    against PySCF's own evaluation of the recipe."""
    symbols = ["Na", "Cl", "Be", "Al", "S", "F"]
    pos = np.array([[0, 0, 0], [0, 0, 4.5], [3.5, 0, 0], [0, 4.6, 1], [4, 4, 3], [-2, 3, -2.0]])
    coarse, _, pos = box_for(pos)
    grid = Grid(coarse.cell, tuple(int(0.6 * n) for n in coarse.mesh))
    ref = _pyscf_sad(symbols, pos, grid, 1, variant)
    rho = sad_density(symbols, pos, grid, charge=1, variant=variant)
    assert nmae(rho, ref) < 1e-7


def test_bad_input():
    grid = Grid((10.0, 10.0, 10.0), (8, 8, 8))
    with pytest.raises(ValueError):
        sad_density(["C"], [[1, 2, 3]], grid, variant="better")
    with pytest.raises(ValueError):
        sad_density(["C", "H"], [[1, 2, 3]], grid)
    with pytest.raises(ValueError):
        sad_density(["Xx"], [[1, 2, 3]], grid)
    with pytest.raises(ValueError):
        sad_density(["Fe"], [[1, 2, 3]], grid)
    with pytest.raises(ValueError):
        sad_density(["H"], [[1, 2, 3]], grid, charge=1)
