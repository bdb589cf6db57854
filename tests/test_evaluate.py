"""Evaluation: per-molecule NMAE against the SAD baseline, splits, JSON and table output."""

import json
import sys
from pathlib import Path

import pytest

from rhosr.cli.main import main as cli_main
from rhosr.core.splits import split_ids
from rhosr.errors import InputError
from rhosr.inference.evaluate import evaluate, format_table
from rhosr.nn.modelfile import save_model
from rhosr.nn.nets import build

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A fresh sad-residual model: it returns the SAD (renormalised)."""
    return save_model(tmp_path_factory.mktemp("model") / "m.pt", build("tiny"), {"preset": "tiny"})


def test_split_ids():
    ids = ["qm9_000001", "qm9_110001", "qm9_120001", "other"]
    assert split_ids(ids, "test") == ["qm9_120001"]
    assert split_ids(ids, "all") == ids
    assert split_ids(ids, "val", 0.0) == ["qm9_110001"]
    with pytest.raises(InputError):
        split_ids(ids, "train")


def test_evaluate_untrained_equals_sad(store, untrained):
    res = evaluate(untrained, store, split="all", device="cpu")
    assert [m["id"] for m in res["molecules"]] == store.ids()
    for m in res["molecules"]:
        assert set(m) == {"id", "atoms", "nmae_percent", "sad_nmae_percent", "electron_error", "seconds"}
        assert m["atoms"] == len(store.read(m["id"]).symbols)
        # the untrained model is the SAD rescaled to the exact electron count
        assert m["nmae_percent"] == pytest.approx(m["sad_nmae_percent"], rel=0.02)
        assert abs(m["electron_error"]) < 1e-4
    s = res["summary"]
    assert set(s) == {"n", "mean_nmae_percent", "median_nmae_percent", "max_nmae_percent",
                      "mean_sad_nmae_percent", "groups"}
    assert s["groups"]["qm9"]["n"] == 4
    assert s["n"] == 4 and s["max_nmae_percent"] >= s["median_nmae_percent"] > 0
    text = format_table(res)
    assert "qm9_120001" in text and "4 molecules" in text


def test_cli_evaluate_json_and_errors(store, untrained, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert cli_main(["evaluate", str(store.path), "--model", str(untrained), "--split", "test",
                     "--json", str(out), "--device", "cpu"]) == 0
    assert "NMAE" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert {"molecules", "summary", "model", "store", "split"} <= data.keys()
    assert [m["id"] for m in data["molecules"]] == ["qm9_120001"] and data["summary"]["n"] == 1
    # val split of this store: the QM9 validation id only
    assert evaluate(untrained, store)["summary"]["n"] == 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert cli_main(["evaluate", str(store.path), "--model", str(bad)]) == 2
    assert cli_main(["evaluate", str(store.path), "--model", str(tmp_path / "none.pt")]) == 2
    empty = make_store(tmp_path / "empty", [("mol_a", "C")])
    assert cli_main(["evaluate", str(empty.path), "--model", str(untrained), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("rhosr evaluate: error:") for e in err)
