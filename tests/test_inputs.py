"""The one featurizer (rhosr.nn.inputs): what training, evaluation and prediction feed the
network is the same array, and a model's SAD variant travels with its file."""

import numpy as np
import pytest
import torch
from rhosr.training.run import train
from test_train import make_store

from rhosr.core.density import nmae
from rhosr.core.grid import box_for
from rhosr.core.molecule import valence_electrons
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.inference.evaluate import record_features
from rhosr.inference.predict import predict, predict_molecule
from rhosr.nn.inputs import ModelInputs, element_parts, features, model_inputs, normalize_density
from rhosr.nn.modelfile import load_model, save_model
from rhosr.nn.nets import build
from rhosr.training.data import DensityDataset


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("inputs"), [("qm9_000001", "C"), ("qm9_000003", "O")])


@pytest.mark.parametrize("inputs", ["sad", "sad+elements"])
def test_features_are_the_sad_and_its_parts(inputs):
    mol = load_molecule("smiles:CCO")
    coarse, fine, pos = box_for(mol.positions)
    f = features(mol.symbols, pos, fine, 0, ModelInputs(inputs, "paper", True))
    sad_c = sad_density(mol.symbols, pos, coarse, dtype=np.float32)
    assert f.coarse.dtype == np.float32 and f.coarse.shape[1:] == tuple(coarse.mesh)
    np.testing.assert_array_equal(f.coarse[0], sad_c)
    np.testing.assert_array_equal(f.sad_fine, sad_density(mol.symbols, pos, fine, dtype=np.float32))
    if inputs == "sad":
        assert f.coarse.shape[0] == 1
    else:
        assert f.coarse.shape[0] == 7
        np.testing.assert_array_equal(f.coarse[1:], element_parts(mol.symbols, pos, coarse))
    assert features(mol.symbols, pos, fine, 0, ModelInputs(inputs, "paper", False)).sad_fine is None


def test_training_and_evaluation_read_the_featurizer(store):
    spec = ModelInputs("sad+elements", "worsened", True)
    ds = DensityDataset(store, inputs=spec.inputs, sad_variant=spec.sad_variant)
    for i, mol_id in enumerate(ds.ids):
        rec = store.read(mol_id)
        want = features(rec.symbols, rec.positions, rec.grid, rec.charge, spec)
        got = ds.sample(i)
        np.testing.assert_array_equal(got["sad_coarse"].numpy(), want.coarse)
        np.testing.assert_array_equal(got["sad_fine"].numpy()[0], want.sad_fine)
        ev = record_features(rec, spec)
        np.testing.assert_array_equal(ev.coarse, want.coarse)
        np.testing.assert_array_equal(ev.sad_fine, want.sad_fine)


def test_model_trained_on_worsened_sad_predicts_with_it(store, tmp_path):
    result = train(store, tmp_path / "run", preset="tiny", steps=1, batch=1, lr=1e-6,
                   sad_variant="worsened", val_fraction=0.0, progress=False)
    net = load_model(result["best"])
    assert model_inputs(net).sad_variant == "worsened"
    mol = load_molecule("smiles:C")
    _, fine, pos = box_for(mol.positions)
    rho = predict(mol, model=result["best"], device="cpu").values
    worse = normalize_density(sad_density(mol.symbols, pos, fine, variant="worsened"), mol.nelectron, fine.dv)
    paper = normalize_density(sad_density(mol.symbols, pos, fine, variant="paper"), mol.nelectron, fine.dv)
    # one step at lr 1e-6 from a network that returns its fine SAD: the worsened SAD it read
    assert nmae(rho, worse) < 1e-3 < 0.1 * nmae(rho, paper)


def test_model_file_records_the_variant_and_predict_honours_it(tmp_path):
    torch.manual_seed(0)
    net = build("tiny")  # a SAD-correcting network: its untrained output is the fine SAD
    mol = load_molecule("smiles:O")
    _, fine, pos = box_for(mol.positions)
    outs = {}
    for variant in ("paper", "worsened"):
        path = save_model(tmp_path / f"{variant}.pt", net, extra={"sad_variant": variant})
        outs[variant] = predict_molecule(mol, load_model(path), device="cpu").values
        ref = normalize_density(sad_density(mol.symbols, pos, fine, variant=variant), mol.nelectron, fine.dv)
        assert nmae(outs[variant], ref) < 1e-5
    assert nmae(outs["paper"], outs["worsened"]) > 0.01


@pytest.mark.parametrize("spec,charge,q", [
    ("smiles:CC(=O)O", 0, 0.0), ("smiles:CC(=O)O", 1, 1.0), ("smiles:CC(=O)O", -1, -1.0),
    ("smiles:CC(=O)O", -2, -2.0),
    # 14 C, 2 O, 26 H: 94 valence electrons, 96 with the charge > 48: the charge per
    # electron, scaled
    ("smiles:CCCCCCCCCCCCC(=O)C(=O)", -2, -2 * 48 / 96)])
def test_charge_channels_carry_the_net_charge(spec, charge, q):
    """sad+charge: the SAD, then q⁺·SAD and q⁻·SAD, q = Q·min(1, 48/N) — zero for a neutral
    molecule, Q itself up to 48 electrons."""
    from rhosr.nn.inputs import charge_scale

    mol = load_molecule(spec)
    coarse, fine, pos = box_for(mol.positions)
    f = features(mol.symbols, pos, fine, charge, ModelInputs("sad+charge", "paper", True))
    sad_c = sad_density(mol.symbols, pos, coarse, charge=charge, dtype=np.float32)
    assert charge_scale(charge, valence_electrons(mol.symbols) - charge) == pytest.approx(q)
    assert f.coarse.shape == (3, *coarse.mesh)
    np.testing.assert_array_equal(f.coarse[0], sad_c)
    np.testing.assert_allclose(f.coarse[1], max(q, 0) * sad_c, rtol=1e-6, atol=0)
    np.testing.assert_allclose(f.coarse[2], max(-q, 0) * sad_c, rtol=1e-6, atol=0)
    assert (f.coarse[1:].max() > 0) == (charge != 0)


def test_unet_charge_trains_from_unet_weights(store, tmp_path):
    """--init a 'sad' model with preset unet-charge: the weights load where shapes allow,
    the new input weights start at zero (the same output as before), and the run trains."""
    from rhosr.nn.config import make_config
    from rhosr.nn.modelfile import read_model_file
    from rhosr.training.run import widen_inputs

    torch.manual_seed(0)
    old = build("unet")
    init = save_model(tmp_path / "unet.pt", old, extra={"preset": "unet"})
    wide = build("unet-charge")
    wide.load_state_dict(widen_inputs(read_model_file(init)["state_dict"], wide))
    x, f = torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        same = wide(torch.cat([x, torch.rand(1, 2, 8, 8, 8)], 1), f)
        np.testing.assert_allclose(same.numpy(), old(x, f).numpy(), rtol=0, atol=1e-6)
    result = train(store, tmp_path / "run", preset="unet-charge", init=str(init), steps=1,
                   batch=1, lr=1e-6, val_fraction=0.0, progress=False)
    net = load_model(result["best"])
    assert net.config == make_config("unet-charge") and model_inputs(net).inputs == "sad+charge"
    with pytest.raises(Exception, match="differs from preset"):
        train(store, tmp_path / "run2", preset="sr-narrow", init=str(init), steps=1, batch=1,
              progress=False)
