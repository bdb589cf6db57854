import json
import os
import pickle
from dataclasses import asdict

import pytest
import torch

from rhosr.nn.config import DEFAULT_PRESET, PRESETS, TRAIN_PRESET, ModelConfig, make_config
from rhosr.nn.layers import normalize, pixel_shuffle_3d, pixel_unshuffle_3d
from rhosr.nn.modelfile import load_model, read_model_file, save_model
from rhosr.nn.nets import build, count_parameters, is_local, receptive_field

FAST = ["tiny", "tiny-paper"]


def inputs(coarse_mesh, batch=1, seed=0):
    """Positive random SAD-like inputs on a coarse and the fine mesh."""
    g = torch.Generator().manual_seed(seed)
    nx, ny, nz = coarse_mesh
    coarse = torch.rand((batch, 1, nx, ny, nz), generator=g) ** 2
    fine = torch.rand((batch, 1, 2 * nx, 2 * ny, 2 * nz), generator=g) ** 2
    return coarse, fine


def make(preset, seed=0, **overrides):
    """A model with a non-zero (random) last conv, so outputs depend on the input."""
    torch.manual_seed(seed)
    model = build(preset, **overrides)
    if model.uses_sad_fine:
        torch.nn.init.normal_(model.tail.weight, std=0.05)
        torch.nn.init.normal_(model.tail.bias, std=0.05)
    return model


# ---------------------------------------------------------------- sizes


def test_paper_parameter_count():
    n = count_parameters(build("paper"))
    assert abs(n - 9.35e6) <= 0.01 * 9.35e6, n


def test_preset_table():
    assert DEFAULT_PRESET == "sr-narrow"  # the base of configs recorded as dicts: never changes
    from rhosr.training.config import TrainConfig
    from rhosr.training.run import choose_network

    config, name, _ = choose_network(TrainConfig(), None)
    assert name == TRAIN_PRESET == "unet" and config == PRESETS["unet"]  # rhosr train, no --preset
    assert count_parameters(build("unet")) == 684_928
    assert abs(count_parameters(build("sr")) - 0.34e6) <= 0.01 * 0.34e6
    assert count_parameters(build("sr-narrow")) == count_parameters(build("sr", channels=16))
    assert receptive_field("sr") == 14 and receptive_field("tiny") == 6
    assert is_local("sr") and not is_local("paper")
    for name, config in PRESETS.items():
        assert ModelConfig(**json.loads(json.dumps(asdict(config)))) == config, name


SHAPES = [
    # (preset, overrides, coarse input shape, expected output shape)
    ("tiny", {}, (1, 1, 4, 4, 4), (1, 1, 8, 8, 8)),
    ("tiny", {}, (2, 1, 5, 6, 7), (2, 1, 10, 12, 14)),
    ("tiny", {"blocks": 0, "channels": 3}, (1, 1, 3, 1, 2), (1, 1, 6, 2, 4)),
    ("tiny", {"kernel_in": 5, "kernel": 1}, (1, 1, 5, 6, 7), (1, 1, 10, 12, 14)),
    ("tiny", {"output": "relu"}, (1, 1, 3, 4, 5), (1, 1, 6, 8, 10)),
    ("tiny-paper", {}, (2, 1, 5, 6, 7), (2, 1, 10, 12, 14)),
    ("tiny-paper", {"norm": "none", "output": "square"}, (1, 1, 4, 3, 2), (1, 1, 8, 6, 4)),
    ("sr", {}, (1, 1, 3, 4, 5), (1, 1, 6, 8, 10)),
    ("paper", {}, (1, 1, 4, 4, 4), (1, 1, 8, 8, 8)),
]


@pytest.mark.parametrize("preset, overrides, shape, expected", SHAPES)
def test_shapes_nonnegative_and_normalised(preset, overrides, shape, expected):
    model = make(preset, **overrides)
    coarse, fine = inputs(shape[2:], batch=shape[0])
    with torch.no_grad():
        raw = model(coarse, fine)
        n = torch.arange(1, shape[0] + 1, dtype=torch.float64) * 7.0
        dv = torch.full((shape[0],), 0.0037, dtype=torch.float64)
        out = model(coarse, fine, n_electrons=n, dv_fine=dv)
    assert raw.shape == out.shape == expected
    assert raw.dtype == torch.float32
    assert (out >= 0).all() and torch.isfinite(out).all()
    total = out.double().sum(dim=(1, 2, 3, 4)) * dv
    torch.testing.assert_close(total, n, rtol=1e-6, atol=0)
    # normalising afterwards (tiled inference) gives the same
    torch.testing.assert_close(model.normalize(raw, n, dv), out, rtol=1e-6, atol=0)


def test_untrained_sad_residual_returns_the_sad():
    coarse, fine = inputs((3, 4, 5))
    out = build("tiny")(coarse, fine)
    torch.testing.assert_close(out, fine)


def test_normalize_accepts_scalars():
    out = torch.rand(2, 1, 4, 4, 4)
    y = normalize(out, 10, 0.5)
    torch.testing.assert_close(y.double().sum(dim=(1, 2, 3, 4)) * 0.5,
                               torch.full((2,), 10.0, dtype=torch.float64))


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "bad",
    [
        {"kernel": 4},
        {"kernel_in": 0},
        {"channels": 0},
        {"channels": 2.5},
        {"channels": True},
        {"blocks": -1},
        {"norm": "batch"},
        {"arch": "unet"},
        {"output": "softplus"},  # a softplus floor would fill the vacuum for sad-residual
        {"input_scale": 0.0},
        {"input_scale": float("nan")},
        {"widht": 3},
    ],
)
def test_bad_hyper_parameters_raise_value_error(bad):
    with pytest.raises(ValueError):
        build("tiny", **bad)


def test_bad_inputs_raise_value_error():
    model = make("tiny")
    coarse, fine = inputs((2, 3, 4))
    with pytest.raises(ValueError, match="unknown model preset"):
        build("nope")
    with pytest.raises(ValueError, match="needs sad_fine"):
        model(coarse)
    with pytest.raises(ValueError, match="sad_fine must be"):
        model(coarse, fine[..., :-1])
    with pytest.raises(ValueError, match="sad_coarse"):
        model(coarse[0], fine)
    with pytest.raises(ValueError, match="both"):
        model(coarse, fine, n_electrons=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="one value per sample"):
        model(coarse, fine, n_electrons=torch.tensor([1.0, 2.0]), dv_fine=torch.tensor([1.0, 1.0]))
    # a model that does not use sad_fine ignores it
    paper = make("tiny-paper")
    assert not paper.uses_sad_fine and model.uses_sad_fine
    torch.testing.assert_close(paper(coarse), paper(coarse, fine))


def test_make_config_from_dict_and_preset():
    assert make_config({"preset": "tiny", "blocks": 1}) == ModelConfig(channels=8, blocks=1)
    assert make_config({}) == PRESETS["sr-narrow"]
    assert build(PRESETS["tiny"]).config is PRESETS["tiny"]


# ---------------------------------------------------------------- pixel shuffle


def test_pixel_shuffle_order_and_round_trip():
    x = torch.arange(2 * 16 * 2 * 3 * 1, dtype=torch.float32).reshape(2, 16, 2, 3, 1)
    y = pixel_shuffle_3d(x)
    assert y.shape == (2, 2, 4, 6, 2)
    # channel 8c + 4i + 2j + k -> voxel (2x+i, 2y+j, 2z+k)
    for c, i, j, k, vx, vy in [(0, 0, 0, 0, 0, 0), (1, 1, 0, 1, 1, 2), (0, 1, 1, 1, 0, 1)]:
        assert y[1, c, 2 * vx + i, 2 * vy + j, k] == x[1, 8 * c + 4 * i + 2 * j + k, vx, vy, 0]
    assert torch.equal(pixel_unshuffle_3d(y), x)
    z = torch.randn(1, 3, 6, 4, 2)
    assert torch.equal(pixel_shuffle_3d(pixel_unshuffle_3d(z)), z)
    z9 = z.repeat(1, 9, 1, 1, 1)
    assert torch.equal(pixel_unshuffle_3d(pixel_shuffle_3d(z9, 3), 3), z9)


# ---------------------------------------------------------------- symmetry and locality


@pytest.mark.parametrize(
    "preset, mesh", [("tiny", (5, 6, 7)), ("sr", (4, 3, 5)), ("tiny-paper", (4, 5, 3))]
)
def test_periodic_shift_equivariance(preset, mesh):
    model = make(preset)
    coarse, fine = inputs(mesh)
    shift = (2, -1, 3)
    with torch.no_grad():
        out = model(coarse, fine, torch.tensor([5.0]), torch.tensor([0.01]))
        rolled = model(
            torch.roll(coarse, shift, dims=(2, 3, 4)),
            torch.roll(fine, tuple(2 * s for s in shift), dims=(2, 3, 4)),
            torch.tensor([5.0]),
            torch.tensor([0.01]),
        )
    torch.testing.assert_close(rolled, torch.roll(out, tuple(2 * s for s in shift), dims=(2, 3, 4)))


def _periodic_distance(index, centre, n):
    d = (index - centre).abs()
    return torch.minimum(d, n - d)


@pytest.mark.parametrize("preset", ["tiny", "sr"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_locality_within_receptive_field(preset, axis):
    model = make(preset)
    r = receptive_field(preset)
    mesh = [3, 3, 3]
    mesh[axis] = 2 * r + 5  # long along the tested axis, short (periodic) across
    coarse, fine = inputs(mesh)
    centre = mesh[axis] // 2
    index = [1, 1, 1]
    index[axis] = centre
    bumped = coarse.clone()
    bumped[(0, 0, *index)] += 1.0
    with torch.no_grad():
        change = (model(bumped, fine) - model(coarse, fine)).abs()
    parent = torch.arange(2 * mesh[axis]) // 2
    inside = _periodic_distance(parent, centre, mesh[axis]) <= r
    profile = change.amax(dim=tuple(d for d in range(5) if d != axis + 2))
    assert (profile[~inside] == 0).all()
    assert (profile[inside] > 0).all()  # the bound is tight

    # sad_fine acts voxel by voxel
    bumped_fine = fine.clone()
    bumped_fine[0, 0, 2, 3, 1] += 1.0
    with torch.no_grad():
        change = (model(coarse, bumped_fine) - model(coarse, fine)) != 0
    assert change.sum() == 1 and change[0, 0, 2, 3, 1]


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("preset", FAST)
def test_save_load_round_trip(tmp_path, preset):
    model = make(preset, seed=3)
    with torch.no_grad():  # non-default values in every parameter
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_model(tmp_path / "m.pt", model, extra={"step": 12, "note": "x", "shape": (1, 2)})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left
    old_mask = os.umask(0o022)
    try:  # the atomic write keeps the usual mode, not the temp file's owner-only 0600
        assert os.stat(save_model(tmp_path / "mode.pt", model)).st_mode & 0o777 == 0o644
    finally:
        os.umask(old_mask)
    (tmp_path / "mode.pt").unlink()
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    coarse, fine = inputs((3, 4, 5))
    with torch.no_grad():
        assert torch.equal(loaded(coarse, fine), model.eval()(coarse, fine))
    record = read_model_file(path)
    assert record["format"] == "rhosr-model"
    assert record["extra"] == {"step": 12, "note": "x", "shape": [1, 2]}
    assert set(record["versions"]) >= {"rhosr", "torch"}
    with pytest.raises(ValueError, match="JSON"):
        save_model(tmp_path / "n.pt", model, extra={"bad": object()})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Evil(marker)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"format": "rhosr-model", "x": payload}, protocol=2))
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": "rhosr-model", "config": {}, "state_dict": {}, "x": payload}, zipped)
    for path in (raw, zipped):
        with pytest.raises(ValueError, match="not a rhosr model file"):
            load_model(path)
    assert not marker.exists()

    # safe but foreign or mismatched contents are refused too
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a rhosr model file"):
        load_model(other)
    model = make("tiny")
    path = save_model(tmp_path / "m.pt", model)
    record = read_model_file(path)
    record["config"]["blocks"] = 1
    torch.save(record, path)
    with pytest.raises(ValueError, match="do not match"):
        load_model(path)


def test_periodic_conv_takes_onednn_and_matches_the_reference_kernel():
    """Small 16-channel boxes, where PyTorch itself would pick its slow kernel: the
    same result as a plain circular Conv3d, forwards and backwards."""
    import torch

    from rhosr.nn.layers import PeriodicConv3d

    torch.manual_seed(0)
    conv = PeriodicConv3d(16, 8, 3, padding=1, padding_mode="circular")
    plain = torch.nn.Conv3d(16, 8, 3, padding=1, padding_mode="circular")
    plain.load_state_dict(conv.state_dict())
    x = torch.rand(1, 16, 9, 7, 8, requires_grad=True)
    y, ref = conv(x), plain(x)
    assert y.shape == ref.shape == (1, 8, 9, 7, 8)
    assert torch.allclose(y, ref, rtol=1e-5, atol=1e-6)
    gx, = torch.autograd.grad(y.square().sum(), x)
    gref, = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(gx, gref, rtol=1e-4, atol=1e-5)
    # periodic: shifting the input by whole voxels shifts the output
    shifted = conv(torch.roll(x, shifts=(2, -3), dims=(2, 4)))
    assert torch.allclose(shifted, torch.roll(y, shifts=(2, -3), dims=(2, 4)), atol=1e-5)


# ---------------------------------------------------------------- the bake-off's designs


def test_new_designs_shapes_untrained_sad_and_round_trip(tmp_path):
    """sad-unet (odd meshes too), the point-wise fine terms and element channels: the
    right shapes, an untrained net returns the SAD, and a file round trip."""
    for preset, channels in (("tiny-unet", 7), ("unet", 1), ("sr-fine", 1), ("sr-elements", 7)):
        config = make_config(preset)
        assert config.input_channels == channels
        g = torch.Generator().manual_seed(1)
        coarse = torch.rand((1, channels, 7, 6, 5), generator=g)
        fine = torch.rand((1, 1, 14, 12, 10), generator=g)
        net = build(preset)
        with torch.no_grad():
            out = net(coarse, fine, torch.tensor([9.0]), torch.tensor([0.01]))
        ref = fine * (9.0 / (fine.double().sum() * 0.01)).float()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        make(preset, seed=2)  # random tail: the path through the body is live
        with pytest.raises(ValueError, match=f"must be \\(B, {channels}"):
            net(torch.rand(1, channels + 1, 7, 6, 5), fine)
    assert not is_local("unet") and is_local("sr-fine") and is_local("sr-elements")
    net = make("tiny-unet", seed=4)
    save_model(tmp_path / "u.pt", net)
    back = load_model(tmp_path / "u.pt")
    assert back.config == net.config and back.config.widths == (8, 8)
    coarse = torch.rand((1, 7, 5, 5, 5))
    fine = torch.rand((1, 1, 10, 10, 10))
    with torch.no_grad():
        torch.testing.assert_close(back(coarse, fine), net(coarse, fine))
    with pytest.raises(ValueError, match="widths"):
        make_config("sr", widths=(8,))
    with pytest.raises(ValueError, match="widths"):
        make_config("unet", widths=())


def test_fine_terms_follow_the_fine_sad():
    """With fine_channels the correction is z0 + z1·sqrt(sad_fine) (+ z2·sad_fine ...), so
    it varies inside a coarse voxel with the fine SAD; without, sqrt(out) - sqrt(sad) is
    the same for any fine SAD."""
    torch.manual_seed(0)
    net = build("sr-fine")
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    coarse, fine = inputs((4, 4, 4))
    fine = fine + 1.0  # sqrt(sad) + correction > 0: sqrt(out) gives the sum back
    with torch.no_grad():
        a = net(coarse, fine).sqrt() - fine.sqrt()
        b = net(coarse, 4 * fine).sqrt() - (4 * fine).sqrt()
    assert (a - b).abs().max() > 1e-3
    plain = make("tiny")
    with torch.no_grad():
        a = plain(coarse, fine).sqrt() - fine.sqrt()
        b = plain(coarse, 4 * fine).sqrt() - (4 * fine).sqrt()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_circular_pad_backward_equals_pytorchs():
    """circular_pad: the same values as F.pad(mode='circular') and the same gradient
    (float64, to rounding), with its faster backward; PeriodicConv3d's gradients equal
    nn.Conv3d's with circular padding."""
    from rhosr.nn.layers import PeriodicConv3d, circular_pad

    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, 3, 6, 5, 4), dtype=torch.float64, generator=g, requires_grad=True)
    for pads in [(1,) * 6, (2,) * 6, (1, 1, 0, 0, 2, 2), (0, 1, 2, 0, 1, 1)]:
        ref = torch.nn.functional.pad(x, pads, mode="circular")
        out = circular_pad(x, pads)
        assert torch.equal(out, ref)
        w = torch.rand(ref.shape, dtype=torch.float64, generator=g)
        (a,) = torch.autograd.grad((ref * w).sum(), x)
        (b,) = torch.autograd.grad((out * w).sum(), x)
        torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-13)
    torch.manual_seed(1)
    conv = PeriodicConv3d(4, 5, 3, padding=1, padding_mode="circular")
    plain = torch.nn.Conv3d(4, 5, 3, padding=1, padding_mode="circular")
    plain.load_state_dict(conv.state_dict())
    x = torch.rand((1, 4, 7, 6, 5), requires_grad=True)
    grads = []
    for m in (conv, plain):
        m.zero_grad()
        (gx,) = torch.autograd.grad((m(x) ** 2).sum(), x)
        grads.append(gx)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
