"""Training samples: cube symmetries and shifts against the SAD of the moved molecule,
crops with halos, the train/validation selection."""

import numpy as np
import pytest
import torch

from rhosr.core.grid import Grid, box_for
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.core.splits import hashed_fraction, role_of_id, select_ids
from rhosr.core.symmetry import (
    CUBE_SYMMETRIES,
    IDENTITY,
    apply_shift,
    apply_symmetry,
    invert_symmetry,
    periodic_window,
    transform_positions,
)
from rhosr.labels.store import Record, Store
from rhosr.nn.nets import build
from rhosr.training.data import DensityDataset


@pytest.fixture(scope="module")
def water():
    """H2O in its published box, on a reduced non-cubic mesh (fast, all axes distinct)."""
    mol = load_molecule("smiles:O")
    _, fine, pos = box_for(mol.positions)
    coarse = Grid(fine.cell, (10, 12, 14))
    return mol.symbols, pos, coarse


def test_48_distinct_ops_identity_first():
    assert len(CUBE_SYMMETRIES) == 48 and CUBE_SYMMETRIES[0] == IDENTITY
    a = np.random.default_rng(0).random((3, 4, 5))
    images = {apply_symmetry(a, op).tobytes() + bytes(str(apply_symmetry(a, op).shape), "ascii")
              for op in CUBE_SYMMETRIES}
    assert len(images) == 48


@pytest.mark.parametrize("op", CUBE_SYMMETRIES[::5])
def test_numpy_torch_inverse_and_coarse_fine_alignment(op):
    rng = np.random.default_rng(1)
    fine = rng.random((2, 8, 10, 12))
    out = apply_symmetry(fine, op)
    assert np.array_equal(apply_symmetry(torch.from_numpy(fine), op).numpy(), out)
    assert np.array_equal(apply_symmetry(out, invert_symmetry(op)), fine)
    # coarse point i sits at fine point 2i before and after the op
    assert np.array_equal(apply_symmetry(fine[..., ::2, ::2, ::2], op), out[..., ::2, ::2, ::2])
    shift = (1, -2, 3)
    assert np.array_equal(apply_shift(fine, shift, 2)[..., ::2, ::2, ::2],
                          apply_shift(fine[..., ::2, ::2, ::2], shift, 1))


# a sample of the 48 ops covering every permutation, with and without reflections
OPS = [CUBE_SYMMETRIES[i] for i in (1, 7, 10, 20, 27, 33, 38, 44, 47)]


@pytest.mark.parametrize("op", OPS)
def test_sad_of_moved_molecule_is_moved_sad(water, op):
    symbols, pos, coarse = water
    shift = (3, -1, 5)
    for grid, factor in ((coarse, 1), (coarse.refine(), 2)):
        rho = sad_density(symbols, pos, grid)
        moved = apply_shift(apply_symmetry(rho, op), shift, factor)
        new_pos, new_cell = transform_positions(pos, grid.cell, op, shift, coarse.mesh)
        new_grid = Grid(tuple(new_cell), moved.shape)
        direct = sad_density(symbols, new_pos, new_grid)
        assert new_grid.mesh == tuple(grid.mesh[p] for p in op[0])
        np.testing.assert_allclose(direct, moved, rtol=0, atol=1e-5 * rho.max())


def _synthetic_store(path, coarse=(6, 7, 8)):
    st = Store(path, "a")
    mol = load_molecule("smiles:O")
    _, fine, pos = box_for(mol.positions)
    grid = Grid(fine.cell, tuple(2 * n for n in coarse))
    sad = sad_density(mol.symbols, pos, grid)
    rho = (0.8 * sad + 0.2 * np.roll(sad, 1, axis=0)).astype(np.float32)
    st.write(Record("h2o", mol.symbols, pos, np.asarray(grid.cell), grid.mesh, 0, 0, "test", rho))
    return st


def test_dataset_sample_moves_input_and_target_together(tmp_path):
    st = _synthetic_store(tmp_path / "store")
    ds = DensityDataset(st, augment=True, seed=3)
    plain = ds.sample(0)
    assert plain["sad_coarse"].shape == (1, 6, 7, 8) and plain["sad_fine"].shape == (1, 12, 14, 16)
    assert plain["target"].shape == (1, 12, 14, 16) and plain["whole"] and plain["id"] == "h2o"
    # the same SAD on both meshes, to float32 rounding (computed apart: the last bit
    # depends on the CPU's vector width, AVX2 against AVX-512)
    torch.testing.assert_close(plain["sad_coarse"], plain["sad_fine"][:, ::2, ::2, ::2],
                               rtol=1e-6, atol=1e-12)
    assert float(plain["n_electrons"]) == 8.0
    assert float(plain["dv_fine"]) == pytest.approx(st.read("h2o").grid.dv)
    op, shift = CUBE_SYMMETRIES[29], (2, 1, 3)
    s = ds.sample(0, op, shift)
    for key, factor in (("sad_fine", 2), ("target", 2), ("sad_coarse", 1)):
        expect = apply_shift(apply_symmetry(plain[key], op), shift, factor)
        assert torch.equal(s[key], expect)
    a, b = ds[0], ds[0]
    assert torch.equal(a["target"], b["target"])  # seeded by (seed, epoch, index)
    seen = set()
    for e in range(6):
        ds.set_epoch(e)
        seen.add(ds[0]["sad_fine"].numpy().tobytes())
    assert len(seen) > 1


def test_crop_interior_matches_whole_box_prediction(tmp_path):
    """With a halo of the receptive field, the crop's interior sees no wrapped input."""
    st = _synthetic_store(tmp_path / "store", coarse=(20, 7, 20))
    torch.manual_seed(0)
    model = build("tiny", blocks=1).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # a non-trivial correction
    halo = model.receptive_field
    ds = DensityDataset(st, crop=4, halo=halo)
    whole = DensityDataset(st).sample(0)
    crop = ds.sample(0, crop_start=(17, 0, 5))
    assert not crop["whole"]
    # x and z cropped to 4 + 2*halo, y (7 <= 4 + 2*halo) taken whole
    assert crop["sad_coarse"].shape == (1, 4 + 2 * halo, 7, 4 + 2 * halo)
    (x0, x1), (y0, y1), (z0, z1) = crop["interior"].tolist()
    assert (x1 - x0, y1 - y0, z1 - z0) == (8, 14, 8)
    with torch.no_grad():
        full = model(whole["sad_coarse"][None], whole["sad_fine"][None])[0, 0]
        part = model(crop["sad_coarse"][None], crop["sad_fine"][None])[0, 0]
    ix = (np.arange(34, 42) % 40)  # fine x of coarse 17..20 (periodic)
    expect = full[ix][:, :, 10:18]
    torch.testing.assert_close(part[x0:x1, y0:y1, z0:z1], expect, rtol=1e-5, atol=1e-6)
    assert torch.equal(crop["target"], periodic_window(whole["target"], (17 - halo, 0, 5 - halo),
                                                       (4 + 2 * halo, 7, 4 + 2 * halo), 2))


def test_split_selection():
    ids = ["qm9_000001", "qm9_110000", "qm9_110001", "qm9_120000", "qm9_120001"]
    assert select_ids(ids, "train") == ids[:2]
    assert select_ids(ids, "val") == ids[2:4]
    assert select_ids(ids, "test") == ids[4:]
    others = [f"mol{i}" for i in range(2000)]
    val = select_ids(others, "val", 0.1)
    assert 150 < len(val) < 250
    assert val == select_ids(list(reversed(others)), "val", 0.1)[::-1]  # by id, not by position
    assert all(role_of_id(i, 0.0) == "train" for i in others[:50])
    assert 0.0 <= hashed_fraction("x") < 1.0


def test_element_channels_move_with_the_molecule(tmp_path):
    """inputs='sad+elements': channel 0 is the SAD, then the O and H parts (other
    channels zero); after a symmetry, a shift and a crop they are the parts of the moved
    molecule, cut like the SAD."""
    from rhosr.nn.inputs import element_parts

    st = _synthetic_store(tmp_path / "store", coarse=(20, 7, 20))
    ds = DensityDataset(st, inputs="sad+elements", crop=4, halo=3)
    plain = DensityDataset(st, inputs="sad+elements").sample(0)
    c = plain["sad_coarse"]
    assert c.shape == (7, 20, 7, 20)
    torch.testing.assert_close(c[0], plain["sad_fine"][0, ::2, ::2, ::2], rtol=1e-6, atol=1e-12)
    assert c[1].sum() > 0 and c[4].sum() > 0  # H and O
    assert c[2].sum() == c[3].sum() == c[5].sum() == c[6].sum() == 0
    # the parts add up to the SAD within its normalisation (each part is normalised alone)
    torch.testing.assert_close(c[1:].sum(0), c[0], rtol=1e-2, atol=1e-5)
    rec = st.read("h2o")
    op, shift = CUBE_SYMMETRIES[29], (2, 1, 3)
    moved = ds.sample(0, op, shift, crop_start=(5, 0, 11))
    coarse_mesh = (20, 7, 20)
    pos, cell = transform_positions(rec.positions, rec.grid.cell, op, shift, coarse_mesh)
    mesh = tuple(coarse_mesh[p] for p in op[0])
    direct = element_parts(rec.symbols, pos, Grid(tuple(cell), mesh))
    # the window: 4 + 2 halo from crop_start - halo, or the whole axis where that is longer
    size = [n if 4 + 6 >= n else 10 for n in mesh]
    start = [0 if 4 + 6 >= n else c - 3 for c, n in zip((5, 0, 11), mesh)]
    np.testing.assert_allclose(moved["sad_coarse"][1:].numpy(),
                               periodic_window(direct, start, size, 1), rtol=0, atol=1e-5)
    assert moved["sad_coarse"].shape[1:] == tuple(n // 2 for n in moved["sad_fine"].shape[1:])
