"""Reference predictions of the bundled model, recorded before the package moved into
subpackages (2026-12-06): run from the repository root, `python tests/data/reference_predictions/record.py`."""
import hashlib, json, platform, subprocess
import numpy as np, torch
from rhosr import predict
out = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
       "cpu": subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True).stdout.split(":")[-1].strip(),
       "molecules": {}}
torch.set_num_threads(2)
for spec in ["tests/data/qm9_000001.xyz", "tests/data/qm9_000002.xyz", "smiles:OCC(=O)[O-]", "smiles:CCO"]:
    d = predict(spec, device="cpu")
    d2 = predict(spec, device="cpu")
    assert np.array_equal(d.values, d2.values), spec
    rho = np.ascontiguousarray(d.values, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, rho.size, 200)
    out["molecules"][spec] = {"sha256": hashlib.sha256(rho.tobytes()).hexdigest(),
        "shape": list(rho.shape), "sum": float(rho.sum()), "abs_max": float(rho.max()),
        "sample_index": idx.tolist(), "sample": rho.ravel()[idx].tolist()}
    print(spec, rho.shape, out["molecules"][spec]["sha256"][:12])
json.dump(out, open("tests/data/reference_predictions/bundled.json", "w"), indent=1)
