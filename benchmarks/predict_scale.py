"""Time and peak memory of ``rhosr predict`` from methane to a 206-atom protein pocket.

Each case runs the real command (``python -m rhosr predict CASE -o FILE``) in a
fresh process, which reports its own peak resident memory (``ru_maxrss``) and
the time the prediction took (SAD + network, tiled when the box exceeds the
memory budget, + writing).  The script prints seconds, peak RSS and
microseconds per fine voxel side by side, so the per-voxel cost can be compared
across sizes in one run.

    PYTHONPATH=src python benchmarks/predict_scale.py [--model default|PATH] [--max-memory GB]

Cases: the reference geometries in tests/data/reference (methane, an 18-atom
QM9 molecule, a C7O2H10 frame, the GTP–microtubule pocket with charge −4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "reference"
CASES = [
    ("qm9_000001", 0),
    ("qm9_107770", 0),
    ("c7o2h10_frame0", 0),
    ("gtp_microtubule_1996", -4),
]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from rhosr.cli.main import main
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
rc = main(sys.argv[1:])
t_run = time.perf_counter() - t1
print("RESULT " + json.dumps({"rc": rc, "import_s": t_import, "run_s": t_run,
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-memory", default=None, help="GB, passed to rhosr predict")
    ap.add_argument("--cases", nargs="+", default=[c for c, _ in CASES])
    args = ap.parse_args(argv)
    charges = dict(CASES)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    print(f"{'case':<22} {'atoms':>5} {'fine mesh':>13} {'voxels':>11} {'tile':>6} {'predict s':>9} "
          f"{'peak RSS GB':>11} {'us/voxel':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            out = Path(tmp) / f"{case}.npy"
            cmd = [sys.executable, "-c", CHILD, "predict", str(REF / f"{case}.xyz"), "-o", str(out),
                   "--format", "npy", "--model", str(args.model), "--charge", str(charges.get(case, 0))]
            if args.max_memory:
                cmd += ["--max-memory", str(args.max_memory)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{case}: failed\n{proc.stderr}")
                continue
            res = json.loads(line[-1][7:])
            meta = json.loads((Path(tmp) / f"{case}.json").read_text())
            mesh = meta["mesh"]
            nvox = mesh[0] * mesh[1] * mesh[2]
            secs = float(meta.get("seconds", res["run_s"]))
            print(f"{case:<22} {len(meta['atoms']):>5} "
                  f"{'x'.join(map(str, mesh)):>13} {nvox:>11,} {str(meta.get('tile')):>6} {secs:>9.2f} "
                  f"{res['maxrss_mb'] / 1024:>11.2f} {1e6 * secs / nvox:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
