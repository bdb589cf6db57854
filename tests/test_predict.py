"""rhosr.inference.predict, rhosr.viz.plot and the predict/plot subcommands (tiny model, H2)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rhosr.cli.main import main
from rhosr.core.grid import box_for
from rhosr.core.density import nmae
from rhosr.core.molecule import Molecule
from rhosr.core.sources import load_molecule
from rhosr.core.symmetry import CUBE_SYMMETRIES, apply_symmetry, transform_positions
from rhosr.core.units import BOHR
from rhosr.inference.predict import max_relative_difference, net_fn, predict, predict_molecule, resolve_model
from rhosr.inference.tiling import symmetrized_apply, tiled_apply
from rhosr.nn.modelfile import save_model
from rhosr.nn.nets import build

REPO = Path(__file__).resolve().parents[1]


def _perturbed(preset="tiny", seed=0):
    torch.manual_seed(seed)
    net = build(preset)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    save_model(d / "m.pt", _perturbed())
    (d / "h2.xyz").write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    (d / "bad.pt").write_bytes(b"not a model at all")
    return d


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cube_round_trip_and_png(files, tmp_path, capsys):
    from ase.io.cube import read_cube_data

    out = tmp_path / "h2.cube"
    rc, stdout, err = _run(capsys, "predict", files / "h2.xyz", "--model", files / "m.pt",
                           "-o", out, "--png", "--device", "cpu")
    assert rc == 0, err
    assert "h2: 2 atoms" in stdout and "2.0000 electrons" in stdout
    data, atoms = read_cube_data(str(out))
    coarse, fine, pos = box_for(load_molecule(str(files / "h2.xyz")).positions)
    assert data.shape == fine.mesh
    assert np.allclose(np.diag(atoms.cell.array) / BOHR, fine.cell, rtol=1e-6)
    assert np.allclose(atoms.positions / BOHR, pos, atol=1e-6)
    assert data.sum() * fine.dv == pytest.approx(2.0, rel=1e-4)
    png = tmp_path / "h2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # rhosr plot with a reference (itself): difference row, NMAE 0
    rc, stdout, err = _run(capsys, "plot", out, "--reference", out, "-o", tmp_path / "p.png")
    assert rc == 0, err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG" and "NMAE 0.000 %" in stdout
    # a reference on another mesh (a longer H2 has a larger box) is refused with exit 2
    (tmp_path / "h2long.xyz").write_text("2\n\nH 0 0 0\nH 0 0 1.5\n")
    other = tmp_path / "h2long.cube"
    assert _run(capsys, "predict", tmp_path / "h2long.xyz", "--model", files / "m.pt",
                "-o", other, "--device", "cpu")[0] == 0
    rc, stdout, err = _run(capsys, "plot", out, "--reference", other, "-o", tmp_path / "q.png")
    assert rc == 2 and "reference mesh" in err and not (tmp_path / "q.png").exists()


def test_api_equals_cli_npy(files, tmp_path, capsys):
    out = tmp_path / "h2.npy"
    rc, _, err = _run(capsys, "predict", files / "h2.xyz", "--model", files / "m.pt",
                      "--format", "npy", "-o", out)
    assert rc == 0, err
    info = json.loads((tmp_path / "h2.json").read_text())
    for key in ("cell_bohr", "mesh", "atoms", "electrons", "model", "seconds", "charge", "spin"):
        assert key in info
    assert info["model"] == "m.pt" and info["electrons"] == pytest.approx(2.0)
    dens = predict(str(files / "h2.xyz"), model=str(files / "m.pt"), device="cpu")
    arr = np.load(out)
    assert arr.shape == tuple(info["mesh"]) == dens.grid.mesh
    assert np.array_equal(arr, dens.values)
    assert dens.electrons() == pytest.approx(2.0, rel=1e-12)
    assert dens.meta["model"] == "m.pt" and dens.meta["seconds"] > 0
    # the model is not the identity: the prediction differs from the SAD
    from rhosr.core.sad import sad_density

    sad = sad_density(dens.symbols, dens.positions, dens.grid)
    assert dens.nmae(sad) > 1e-3


def test_reference_from_a_label_store(files, tmp_path, capsys):
    """--reference takes a store (record by id) or a record file; NMAE as the API computes it."""
    from rhosr.core.sad import sad_density
    from rhosr.labels.store import Record, Store

    mol = load_molecule(str(files / "h2.xyz"))
    _, fine, pos = box_for(mol.positions)
    label = sad_density(mol.symbols, pos, fine).astype(np.float32)  # a stand-in DFT label
    store = Store(tmp_path / "store", "a")
    store.write(Record(mol.id, mol.symbols, pos, np.asarray(fine.cell), fine.mesh, 0, 0, "test", label))
    dens = predict(str(files / "h2.xyz"), model=str(files / "m.pt"), device="cpu")
    want = 100 * dens.nmae(label)
    assert want > 0.1
    out = tmp_path / "h2.npy"
    rc, stdout, err = _run(capsys, "predict", files / "h2.xyz", "--model", files / "m.pt", "-o", out,
                           "--format", "npy", "--reference", store.path, "--png")
    assert rc == 0, err
    assert f"NMAE {want:.3f} % vs reference" in stdout
    info = json.loads((tmp_path / "h2.json").read_text())
    assert info["reference_nmae_percent"] == pytest.approx(want, rel=1e-6)
    assert (tmp_path / "h2.png").read_bytes()[:4] == b"\x89PNG"
    # rhosr plot: the record file itself, and the store as reference (record named by the id)
    record = store.path / "records" / "h2.h5"
    for ref in (record, store.path):
        rc, stdout, err = _run(capsys, "plot", out, "--reference", ref, "-o", tmp_path / "p.png")
        assert rc == 0, err
        assert f"(NMAE {want:.3f} %)" in stdout
    rc, stdout, err = _run(capsys, "plot", record, "-o", tmp_path / "r.png")
    assert rc == 0 and (tmp_path / "r.png").is_file(), err
    # an id the store lacks, a store with several inputs' file reference: one-line errors
    (tmp_path / "h2b.xyz").write_text((files / "h2.xyz").read_text())
    rc, _, err = _run(capsys, "predict", tmp_path / "h2b.xyz", "--model", files / "m.pt",
                      "-o", tmp_path / "x.cube", "--reference", store.path)
    assert rc == 2 and "no record of h2b" in err and err.count("\n") == 1
    rc, _, err = _run(capsys, "predict", files / "h2.xyz", tmp_path / "h2b.xyz", "--model", files / "m.pt",
                      "-o", tmp_path / "several", "--reference", record)
    assert rc == 2 and "a single file compares one input" in err
    assert not (tmp_path / "x.cube").exists() and not (tmp_path / "several").exists()


def test_tiled_equals_whole_box(files):
    net, name = resolve_model(str(files / "m.pt"))
    mol = load_molecule(str(files / "h2.xyz"))
    whole = predict_molecule(mol, net, model_name=name, max_memory_gb=100.0)
    assert whole.meta["tile"] is None
    tiled = predict_molecule(mol, net, model_name=name, tile=(13, 25, 15))
    assert tiled.meta["tile"] == [13, 25, 15]
    assert max_relative_difference(tiled.values, whole.values) <= 1e-5
    # any callable, ragged tiles, halo wider than the tile
    rng = np.random.default_rng(1)
    c, f = rng.random((9, 10, 11)), rng.random((18, 20, 22))
    fn = net_fn(net, "cpu")
    ref = fn(c, f)
    assert max_relative_difference(tiled_apply(fn, c, f, net.receptive_field, 4), ref) <= 1e-5


def test_bundled_unet_tiles_reproduce_the_whole_box():
    """The bundled multi-scale network on a box whose coarse mesh is no multiple of its
    stride (4): aligned tiles of the padded box give the whole padded box's prediction,
    which the electron count and the padding's continuation pin down."""
    net, name = resolve_model("default")
    assert net.tile_stride == 4 and net.receptive_field == 28
    mol = load_molecule(str(REPO / "examples" / "ethanol.xyz"))
    coarse_mesh = [n // 2 for n in box_for(mol.positions)[1].mesh]
    assert any(n % 4 for n in coarse_mesh)
    whole = predict_molecule(mol, net, model_name=name, max_memory_gb=100.0)
    for tile in ((16, 100, 100), (100, 12, 24)):  # 3 and 8 tiles
        tiled = predict_molecule(mol, net, model_name=name, tile=tile)
        assert tiled.meta["tile"] == list(tile)
        assert 100 * nmae(tiled.values, whole.values) <= 1e-6  # % (goal 1e-4 %)
    # a budget below the box's needs, where no tile with its halo is smaller than the box
    with pytest.warns(RuntimeWarning, match="running it whole"):
        small = predict_molecule(mol, net, model_name=name, max_memory_gb=0.03)
    assert small.meta["tile"] is None
    np.testing.assert_array_equal(small.values, whole.values)


def test_choose_tile_fits_the_budget_with_the_least_work():
    from rhosr.inference.tiling import choose_tile, tile_options

    assert choose_tile((40, 40, 40), 8, 100.0, 1.0) is None  # 6.4 MB fits 1 GB
    tile = choose_tile((230, 312, 316), 28, 466.0, 5.0, stride=4)
    windows = [next(w for k, e, w in tile_options(n, 28, 4) if e == t) for n, t in zip((230, 312, 316), tile)]
    assert all(t % 4 == 0 or t == n for t, n in zip(tile, (230, 312, 316)))
    assert np.prod(windows, dtype=float) * 466.0 <= 5e9
    # slabs along one axis beat cubes here: fewer halo voxels computed
    assert sum(t < n for t, n in zip(tile, (230, 312, 316))) == 1
    with pytest.warns(RuntimeWarning, match="using them anyway"):
        assert choose_tile((400, 400, 400), 28, 466.0, 1e-6, stride=4) == (28, 28, 28)


def test_non_local_model_is_not_tiled():
    from rhosr.inference.predict import predict_arrays

    net = _perturbed("tiny-paper")
    rng = np.random.default_rng(2)
    c = rng.random((6, 6, 6))
    with pytest.warns(RuntimeWarning, match="not local"):
        rho, info = predict_arrays(net, c, None, 4.0, 0.01, tile=2)
    assert info["tile"] is None and rho.shape == (12, 12, 12)
    assert rho.sum() * 0.01 == pytest.approx(4.0)


def test_symmetrized_is_equivariant():
    net = _perturbed()
    fn = net_fn(net, "cpu")
    rng = np.random.default_rng(3)
    c, f = rng.random((6, 7, 8)), rng.random((12, 14, 16))
    mean, spread = symmetrized_apply(fn, c, f)
    assert spread > 0.01
    for op in (CUBE_SYMMETRIES[13], CUBE_SYMMETRIES[-1]):
        mean_t, spread_t = symmetrized_apply(fn, apply_symmetry(c, op), apply_symmetry(f, op))
        assert max_relative_difference(mean_t, apply_symmetry(mean, op)) <= 1e-6
        assert spread_t == pytest.approx(spread, rel=1e-5)


def test_transformed_molecule_has_permuted_box(files):
    mol = load_molecule(str(files / "h2.xyz"))
    coarse, _, pos = box_for(mol.positions)
    op = ((2, 0, 1), (True, False, False))
    pos_t, cell_t = transform_positions(pos, coarse.cell, op)
    coarse_t, _, _ = box_for(pos_t)
    assert coarse_t.mesh == tuple(np.asarray(coarse.mesh)[[2, 0, 1]])
    assert np.allclose(coarse_t.cell, cell_t)
    mol_t = Molecule("h2t", mol.symbols, pos_t)
    assert mol_t.natm == 2


def test_symmetrize_meta(files):
    net, name = resolve_model(str(files / "m.pt"))
    from rhosr.inference.predict import predict_arrays

    rng = np.random.default_rng(4)
    c, f = rng.random((5, 5, 6)), rng.random((10, 10, 12))
    rho, info = predict_arrays(net, c, f, 8.0, 0.05, symmetrize=True)
    assert info["spread_percent"] > 0
    assert rho.sum() * 0.05 == pytest.approx(8.0)


@pytest.mark.parametrize("case", ["structure", "missing_model", "corrupt_model", "default_model"])
def test_bad_inputs_exit_2(files, tmp_path, capsys, case, monkeypatch):
    args = {
        "structure": [tmp_path / "nope.xyz", "--model", files / "m.pt"],
        "missing_model": [files / "h2.xyz", "--model", tmp_path / "nope.pt"],
        "corrupt_model": [files / "h2.xyz", "--model", files / "bad.pt"],
        "default_model": [files / "h2.xyz"],
    }[case]
    if case == "default_model":  # an installation whose bundled model file went missing
        import importlib

        module = importlib.import_module("rhosr.inference.predict")
        monkeypatch.setattr(module, "default_model_path", lambda: tmp_path / "gone.pt")
    rc, stdout, err = _run(capsys, "predict", *args, "-o", tmp_path / "out.cube")
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("rhosr predict: error:")
    assert not (tmp_path / "out.cube").exists()


def test_unseen_element_or_charge_is_a_warning(tmp_path, capsys):
    """The bundled model (H B C N O F Si P S Cl; charges -1 0 +1) warns on Al and on a
    dianion, in the summary line, and still writes the density; not on what it has seen."""
    out = tmp_path / "x.cube"
    assert main(["predict", "smiles:[AlH2]Cl", "-o", str(out)]) == 0
    line = capsys.readouterr().out
    assert "warning: the model was never trained on element Al" in line and out.is_file()
    assert main(["predict", "smiles:[O-]C(=O)C(=O)[O-]", "-o", str(out)]) == 0
    assert "never trained on charge -2" in capsys.readouterr().out
    for smiles in ("CS", "C[O-]", "C[NH3+]", "CO"):
        assert main(["predict", "smiles:" + smiles, "-o", str(out)]) == 0
        assert "warning" not in capsys.readouterr().out, smiles

    net = build("tiny")
    save_model(tmp_path / "m.pt", net, extra={"training_data": {
        "elements": ["H", "C", "O", "S"], "charges": [-1, 0]}})
    for smiles in ("CS", "C[O-]"):
        assert main(["predict", "smiles:" + smiles, "--model", str(tmp_path / "m.pt"),
                     "-o", str(out)]) == 0
        assert "warning" not in capsys.readouterr().out
    dens = predict("smiles:CS", model=str(tmp_path / "m.pt"))
    assert "unseen" not in dens.meta
    assert predict("smiles:CCl", model=str(tmp_path / "m.pt")).meta["unseen"] == {"elements": ["Cl"]}


def test_element_input_and_unet_models_predict(tmp_path):
    """A net reading the per-element SAD channels predicts like any other: tiles give
    the whole box (local), the 48-op mean works; a U-Net's aligned tiles give its whole box."""
    torch.manual_seed(0)
    net = build("tiny", inputs="sad+elements")
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    mol = load_molecule("smiles:CO")
    whole = predict_molecule(mol, net)
    tiled = predict_molecule(mol, net, tile=9)
    np.testing.assert_allclose(tiled.values, whole.values, rtol=1e-5, atol=1e-7)
    assert whole.electrons() == pytest.approx(mol.nelectron, abs=1e-4)
    sym = predict_molecule(mol, net, symmetrize=True)
    assert sym.meta["spread_percent"] > 0
    assert sym.electrons() == pytest.approx(mol.nelectron, abs=1e-4)

    unet = build("tiny-unet")
    torch.nn.init.normal_(unet.tail.weight, std=0.05)
    whole_u = predict_molecule(mol, unet, max_memory_gb=100.0)
    out = predict_molecule(mol, unet, tile=9)  # rounded up to the stride: 12
    assert out.meta["tile"] == [12, 12, 12] and whole_u.meta["tile"] is None
    assert out.values.shape == whole.values.shape
    assert max_relative_difference(out.values, whole_u.values) <= 1e-6
    assert out.electrons() == pytest.approx(mol.nelectron, abs=1e-4)
