"""Smoke tests of the experiment drivers benchmarks/bakeoff.py and benchmarks/finetune.py on
tiny synthetic stores (the figures themselves are measured on the banks)."""

import importlib.util
import json
from pathlib import Path

from test_train import MOLECULES, make_store

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bakeoff_rows_table_and_plot(tmp_path, capsys):
    qm9 = make_store(tmp_path / "q", MOLECULES)
    bakeoff = _load("bakeoff")
    assert bakeoff.main([str(qm9.path), "--out", str(tmp_path / "b"), "--minutes", "0.02",
                         "--rows", "tiny", "--val-every", "2", "--plot", str(tmp_path / "b.png")]) == 0
    rows = json.loads((tmp_path / "b" / "bakeoff.json").read_text())
    assert [r["row"] for r in rows] == ["tiny"] and rows[0]["steps"] >= 1
    assert rows[0]["test_molecules"] == 1 and rows[0]["train_molecules"] == 2
    assert "| tiny |" in capsys.readouterr().out and (tmp_path / "b.png").stat().st_size > 0


def test_finetune_zero_shot_and_runs(tmp_path, capsys):
    exotic = make_store(tmp_path / "ex", [("S-test-000", "CS"), ("S-val-001", "CCS"),
                                          ("S-train-002", "S"), ("S-train-003", "CSC")])
    qm9 = make_store(tmp_path / "q", MOLECULES)
    finetune = _load("finetune")
    assert finetune.main(["--out", str(tmp_path / "ft"), "--exotic", str(exotic.path), "--qm9",
                          str(qm9.path), "--groups", "S", "--sizes", "1", "2", "--minutes", "0.02",
                          "--val-every", "2"]) == 0
    result = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert result["zero_shot"]["groups"]["S"]["n"] == 1
    assert set(result["runs"]) == {"S-1", "S-2"}
    assert result["runs"]["S-2"]["groups"] == {"S": result["runs"]["S-2"]["groups"]["S"]}
    out = capsys.readouterr().out
    assert "| S |" in out and "QM9 test NMAE of the start model" in out


def test_finetune_joint_runs_fill_every_group(tmp_path, capsys):
    exotic = make_store(tmp_path / "ex", [("S-test-000", "CS"), ("S-val-001", "CCS"),
                                          ("S-train-002", "S"), ("Cl-test-000", "CCl"),
                                          ("Cl-val-001", "ClCCl"), ("Cl-train-002", "Cl")])
    qm9 = make_store(tmp_path / "q", MOLECULES)
    finetune = _load("finetune")
    args = ["--out", str(tmp_path / "ft"), "--exotic", str(exotic.path), "--qm9", str(qm9.path),
            "--groups", "S", "Cl", "--minutes", "0.02", "--val-every", "2"]
    assert finetune.main(args + ["--sizes"]) == 0  # the zero shot alone
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["runs"] == {}
    assert finetune.main(args + ["--sizes", "1", "--joint", "--no-zero-shot"]) == 0
    result = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert set(result["runs"]) == {"all-1"} and set(result["runs"]["all-1"]["groups"]) == {"S", "Cl"}
    for g in ("S", "Cl"):
        nmae, qm9_nmae = finetune.run_for(result, g, 1)
        assert nmae == result["runs"]["all-1"]["groups"][g]["mean_nmae_percent"] > 0
        assert qm9_nmae == result["runs"]["all-1"]["qm9_test_nmae_percent"]
    out = capsys.readouterr().out
    assert "| S |" in out and "| Cl |" in out
