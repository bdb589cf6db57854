"""Reference predictions of the bundled model, first recorded before the package moved into
subpackages, re-recorded when prediction moved to the box padded to the network's stride
(2026-12-06; tiled and whole-box predictions became one) and whenever the bundled model is
replaced (2026-12-06, `unet-charge`). From the repository root:
``python tests/data/reference_predictions/record.py`` (writes bundled.json beside it)."""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from rhosr import predict

SPECS = ["tests/data/qm9_000001.xyz", "tests/data/qm9_000002.xyz", "smiles:OCC(=O)[O-]", "smiles:CCO"]


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "")


def main() -> None:
    out = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu": cpu_model(), "molecules": {}}
    torch.set_num_threads(2)
    for spec in SPECS:
        d = predict(spec, device="cpu")
        assert np.array_equal(d.values, predict(spec, device="cpu").values), spec
        rho = np.ascontiguousarray(d.values, dtype=np.float64)
        idx = np.random.default_rng(0).integers(0, rho.size, 200)
        out["molecules"][spec] = {
            "sha256": hashlib.sha256(rho.tobytes()).hexdigest(), "shape": list(rho.shape),
            "sum": float(rho.sum()), "abs_max": float(rho.max()),
            "sample_index": idx.tolist(), "sample": rho.ravel()[idx].tolist()}
        print(spec, rho.shape, out["molecules"][spec]["sha256"][:12])
    path = Path(__file__).with_name("bundled.json")
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
