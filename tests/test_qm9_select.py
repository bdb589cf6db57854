"""scripts/qm9_select.py: composition-filtered, seeded samples of a QM9 split."""

import json

import pytest
from conftest import load_script

from rhosr.core.qm9 import QM9_SPLIT


@pytest.fixture(scope="module")
def sel():
    return load_script("qm9_select")


@pytest.fixture(scope="module")
def comp(sel):
    return sel.compositions()


def _picked(sel, capsys, *argv):
    sel.main(list(argv))
    out = capsys.readouterr().out.strip()
    assert out.startswith("qm9:")
    return [int(i) for i in out[4:].split(",")]


def test_hydrogen_poor_sample(sel, comp, capsys):
    few = _picked(sel, capsys, "train", "--element", "H", "--at-most", "6", "--count", "8")
    more = _picked(sel, capsys, "train", "--element", "H", "--at-most", "6", "--count", "12")
    lo, hi = QM9_SPLIT["train"]
    assert len(few) == 8 and more[:8] == few  # a larger count extends the same list
    assert all(lo <= i <= hi and comp[i]["H"] <= 6 for i in more)
    rich = _picked(sel, capsys, "val", "--element", "N", "--count", "5")  # default: at least 2
    assert all(comp[i]["N"] >= 2 for i in rich)
    band = _picked(sel, capsys, "test", "--element", "O", "--at-least", "2", "--at-most", "2",
                   "--count", "5")
    assert all(comp[i]["O"] == 2 for i in band)
    with pytest.raises(SystemExit):
        sel.main(["train", "--element", "H", "--at-least", "7", "--at-most", "6"])


def test_eval_splits_by_composition(sel, comp, capsys, tmp_path):
    test = [i for i in sorted(comp) if i >= QM9_SPLIT["test"][0]]
    ids = [i for i in test if comp[i]["H"] <= 6][:3] + [i for i in test if comp[i]["H"] > 6][:3]
    rows = [{"id": f"qm9_{i:06d}", "nmae_percent": float(comp[i]["H"])} for i in ids]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"molecules": rows}))
    sel.main(["--eval", str(path), "--element", "H", "--at-most", "6"])
    out = capsys.readouterr().out
    poor = [comp[i]["H"] for i in ids if comp[i]["H"] <= 6]
    assert "r(NMAE, H) = 1.00" in out  # the error column is the H count itself
    assert f"H <= 6: {sum(poor) / len(poor):.2f} % ({len(poor)})" in out
