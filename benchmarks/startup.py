"""Whole-process wall time of short rhosr commands (start-up included), median of N runs.

    python benchmarks/startup.py [--repeat 5] [--src OTHER_CHECKOUT/src ...]

With ``--src``, the same commands also run against other source trees (e.g. an older
commit checked out with ``git worktree add``), side by side in the same run.

Each command runs as its own process in a temporary folder, one after the other; the
first run of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "rhosr --help": ["--help"],
    "rhosr predict examples/ethanol.xyz -o ethanol.cube": [
        "predict", str(ROOT / "examples" / "ethanol.xyz"), "-o", "ethanol.cube"],
    "rhosr predict qm9:120489 -o q.cube": ["predict", "qm9:120489", "-o", "q.cube"],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--src", nargs="*", default=[], help="other source trees to time beside")
    args = ap.parse_args(argv)
    trees = [str(ROOT / "src"), *args.src]
    with tempfile.TemporaryDirectory() as tmp:
        for name, cli in COMMANDS.items():
            for tree in trees:
                env = dict(os.environ, PYTHONPATH=tree)
                cmd = [sys.executable, "-m", "rhosr", *cli]
                subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, env=env)  # warm-up
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, env=env)
                    times.append(time.perf_counter() - t0)
                print(f"{name:<52} {tree[-24:]:>24}  median {statistics.median(times):.2f} s "
                      f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeat} runs)")


if __name__ == "__main__":
    main()
