import numpy as np
import pytest

from rhosr.core.density import FORMATS, Density, nmae, read_density
from rhosr.core.grid import box_for
from rhosr.core.sources import load_molecule


@pytest.fixture
def density():
    mol = load_molecule("qm9:1")
    coarse, fine, pos = box_for(mol.positions)
    rng = np.random.default_rng(0)
    return Density(rng.random(coarse.mesh), coarse, mol.symbols, pos, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, density, fmt):
    path = tmp_path / f"m.{fmt}"
    density.write(path)
    if fmt == "npy":  # a bare array reads back with its JSON beside it
        import json
        (tmp_path / "m.json").write_text(json.dumps({
            "cell_bohr": list(density.grid.cell), "mesh": list(density.grid.mesh),
            "atoms": [[s, *map(float, x)] for s, x in zip(density.symbols, density.positions)]}))
    back = read_density(path)
    assert back.grid.mesh == density.grid.mesh
    np.testing.assert_allclose(back.grid.cell, density.grid.cell, rtol=1e-7)
    np.testing.assert_allclose(back.values, density.values, rtol=1e-6, atol=1e-12)
    assert back.symbols == density.symbols
    np.testing.assert_allclose(back.positions, density.positions, atol=1e-7)
    assert back.electrons() == pytest.approx(density.electrons(), rel=1e-6)


def test_cube_reads_in_ase_with_the_right_grid(tmp_path, density):
    from ase.io.cube import read_cube_data

    from rhosr.core.units import BOHR

    path = tmp_path / "m.cube"
    density.write(path)
    data, atoms = read_cube_data(str(path))
    assert data.shape == density.grid.mesh
    np.testing.assert_allclose(atoms.cell.lengths(), np.array(density.grid.cell) * BOHR, rtol=1e-7)
    # valence charges in the atom lines
    lines = path.read_text().splitlines()
    assert float(lines[6].split()[1]) == 4.0 and float(lines[7].split()[1]) == 1.0


@pytest.mark.parametrize("nz", [1, 5, 6, 13, 98])
def test_cube_values_match_percent_formatting(nz):
    """The vectorised cube writer gives the layout and digits of "%14.6E", 6 per line."""
    from rhosr.core.density import CUBE_TINY, _cube_rows

    rng = np.random.default_rng(nz)
    v = rng.random((40, nz)) * 10.0 ** rng.integers(-98, 4, (40, nz))
    v[0, 0], v[1, 0], v[2, 0] = 0.0, -2.5e-3, 9.9999996e-3  # zero, a sign, a carry to 1.0E-02
    v[3, 0] = 3e-101  # below CUBE_TINY: written as zero
    full, rest = divmod(nz, 6)
    fmt = ("%14.6E" * 6 + "\n") * full + ("%14.6E" * rest + "\n" if rest else "")
    want = "".join(fmt % tuple(row) for row in v)
    got = _cube_rows(v).decode()
    assert [len(line) for line in got.splitlines()] == [len(line) for line in want.splitlines()]
    expected = np.where(np.abs(v) < CUBE_TINY, 0.0, v).ravel()
    np.testing.assert_allclose(np.array(got.split(), dtype=float), expected, rtol=5e-7, atol=0)
    assert "1.000000E-02" in got and "-2.500000E-03" in got
    big = np.abs(v).ravel() >= CUBE_TINY
    pairs = [(a, b) for a, b, keep in zip(got.split(), want.split(), big) if keep]
    assert sum(a != b for a, b in pairs) <= 1  # the same digits, bar a rare last digit


def test_cube_values_three_digit_exponent_falls_back():
    """Values that round to 1E+100 or more are %-formatted rather than garbled."""
    from rhosr.core.density import _cube_rows

    v = np.array([[9.99999999e99, -0.0, 1.5, 2.0e-5, 7.0, 8.0]])
    got = _cube_rows(v).decode()
    assert got == "%14.6E%14.6E%14.6E%14.6E%14.6E%14.6E\n" % tuple(v[0])
    assert "1.000000E+100" in got and "-0.000000E+00" in got


def test_nmae():
    ref = np.ones((2, 2, 2))
    assert nmae(ref * 1.1, ref) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        nmae(np.ones(3), np.ones(4))
