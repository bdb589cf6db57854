"""scripts/widen_model.py: a narrow sad-residual network continued as a wider one."""

import pytest
import torch
from conftest import load_script

from rhosr.nn.modelfile import load_model, read_model_file, save_model
from rhosr.nn.nets import build, count_parameters


@pytest.fixture(scope="module")
def widen_mod():
    return load_script("widen_model")


def _trained_like(channels=4, seed=3):
    """A tiny network whose every weight is non-zero (the output conv starts at zero)."""
    torch.manual_seed(seed)
    model = build("tiny", channels=channels)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, 6, 7, 8, generator=gen) * 0.3,
            torch.rand(1, 1, 12, 14, 16, generator=gen) * 0.3)


def test_widened_network_predicts_the_same_and_can_learn(widen_mod):
    narrow = _trained_like()
    wide = widen_mod.widen(narrow, 10, seed=1)
    assert wide.config.channels == 10 and wide.config.blocks == narrow.config.blocks
    assert count_parameters(wide) > 3 * count_parameters(narrow)
    coarse, fine = _inputs()
    with torch.no_grad():
        a, b = narrow(coarse, fine), wide(coarse, fine)
    assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())
    assert float((a - fine).abs().max()) > 1e-3  # the check is not trivial: the net corrects the SAD
    # the new channels carry signal, and the zero weights out of them receive gradients
    wide.train()
    loss = wide(coarse, fine).square().sum()
    loss.backward()
    assert float(wide.tail.weight.grad[:, 4:].abs().max()) > 0
    assert float(wide.blocks[0].body[3].weight.grad[:4, 4:].abs().max()) > 0


def test_widen_refuses_other_networks(widen_mod):
    with pytest.raises(ValueError, match="sad-residual"):
        widen_mod.widen(build("tiny-paper"), 8)
    with pytest.raises(ValueError, match="fewer"):
        widen_mod.widen(_trained_like(channels=8), 4)


def test_widen_command_writes_a_loadable_model(widen_mod, tmp_path, capsys):
    src = save_model(tmp_path / "narrow.pt", _trained_like(channels=8), {"phases": [{"steps": 5}]})
    out = tmp_path / "wide.pt"
    assert widen_mod.main([str(src), str(out), "--channels", "12"]) == 0
    assert "8 -> 12 channels" in capsys.readouterr().out
    wide = load_model(out)
    assert wide.config.channels == 12
    assert read_model_file(out)["extra"]["widened_from_channels"] == 8
    coarse, fine = _inputs(1)
    with torch.no_grad():
        assert torch.allclose(load_model(src)(coarse, fine), wide(coarse, fine), rtol=1e-5, atol=0)
    with pytest.raises(SystemExit):  # tiny differs from sr in depth, not only width
        widen_mod.main([str(src), str(tmp_path / "x.pt"), "--preset", "sr"])
