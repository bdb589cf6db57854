"""scripts/gpu_train.sh, the lent-GPU run, smoke-tested on the CPU with a tiny network."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from conftest import DATA

from rhosr.dft.scf import level_of_theory
from rhosr.labels.bankwrite import add_records
from rhosr.labels.readers import source_records
from rhosr.nn.modelfile import read_model_file, save_model
from rhosr.nn.nets import build

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_the_cpu(tmp_path):
    bank = tmp_path / "bank"
    records = source_records(DATA / "labels", level_of_theory())
    # one training-pool label under a validation-split id, so that the bank has all splits
    records = [replace(r, id="qm9_110775") if r.id == "qm9_000775" else r for r in records]
    add_records(bank, records, level_of_theory=level_of_theory())
    out = tmp_path / "out"
    init = tmp_path / "init.pt"
    save_model(init, build("tiny"))
    env = dict(os.environ, PYTHON=sys.executable, BANK=str(bank), INIT=str(init), MINUTES="0.05",
               DEVICE="cpu", BATCH="1", VAL_EVERY="2", OUT=str(out), WORK=str(tmp_path / "work"),
               RHOSR_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_train.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {"best.pt", "metrics.csv", "test.json", "val.json",
                                               "init_val.json", "log.txt"}
    result = json.loads((out / "test.json").read_text())
    assert result["summary"]["n"] == 2 and 0 < result["summary"]["mean_nmae_percent"] < 20
    assert read_model_file(out / "best.pt")["extra"]["init"] == str(init)
    val, init_val = (json.loads((out / f).read_text()) for f in ("val.json", "init_val.json"))
    assert [m["id"] for m in val["molecules"]] == [m["id"] for m in init_val["molecules"]] == [
        "qm9_110775"]
    log = (out / "log.txt").read_text()
    assert "expand:" in log and "done:" in log
    assert len(list((tmp_path / "cache").rglob("*.npy"))) >= 4  # the bank was expanded there
