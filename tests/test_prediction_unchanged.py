"""The bundled model's predictions are the recorded arrays (tests/data/reference_predictions;
re-recorded only for a deliberate change of the prediction, said in record.py and the
commit): bit for bit on the CPU they were recorded on, and to
float32 rounding of the network on any other (oneDNN picks other kernels per CPU)."""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rhosr import predict

REF = json.loads((Path(__file__).parent / "data" / "reference_predictions" / "bundled.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def _same_cpu() -> bool:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                  if ln.startswith("Model name")), "")
    return (model == REF["cpu"] and torch.__version__ == REF["torch"]
            and torch.backends.cpu.get_cpu_capability() == REF["cpu_capability"])


@pytest.mark.parametrize("spec", sorted(REF["molecules"]))
def test_bundled_prediction_unchanged(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    ref = REF["molecules"][spec]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rho = np.ascontiguousarray(predict(spec, device="cpu").values, dtype=np.float64)
    finally:
        torch.set_num_threads(threads)
    assert list(rho.shape) == ref["shape"]
    np.testing.assert_allclose(rho.ravel()[ref["sample_index"]], ref["sample"], rtol=1e-4,
                               atol=1e-6 * ref["abs_max"])
    assert abs(rho.sum() - ref["sum"]) <= 1e-9 * abs(ref["sum"])
    if _same_cpu():
        assert hashlib.sha256(rho.tobytes()).hexdigest() == ref["sha256"]
