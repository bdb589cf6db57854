"""Page sizes and times of ``rhosr view`` and ``rhosr plot --deformation``, methane to a
206-atom protein pocket.

Per case, in fresh processes: ``rhosr view CASE -o page.html`` (predict with the bundled
model, SAD on the view mesh, encode, write; wall time and peak RSS), the page's size and
what its data weigh, the time headless Chromium takes from opening the page to the first
drawn isosurface (WebGL in software, SwiftShader; ``--no-browser`` skips it), and
``rhosr plot --deformation`` on the predicted density (an h5 file written beforehand).

    PYTHONPATH=src python benchmarks/view.py [--cases qm9_000001 ...] [--no-browser]

Cases: methane and an 18-atom QM9 molecule (tests/data/reference), acetate (an anion, from
SMILES), the GTP–microtubule pocket (charge −4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "reference"
CASES = {
    "qm9_000001": [str(REF / "qm9_000001.xyz")],
    "qm9_107770": [str(REF / "qm9_107770.xyz")],
    "acetate": ["smiles:CC(=O)[O-]"],
    "gtp_microtubule_1996": [str(REF / "gtp_microtubule_1996.xyz"), "--charge", "-4"],
}

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from rhosr.cli.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
                  "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def run(argv: list[str]) -> dict:
    """One rhosr command in a fresh process: its exit status, wall seconds, peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.strip()[-500:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t0
    return out


def data_kb(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="rhosr-data">(.*?)</script>', text, re.S)
    entry = json.loads(found.group(1))["molecules"][0]
    return {"mesh": "x".join(map(str, entry["grid"]["size"])),
            **{k: len(v) / 1e3 for k, v in entry["fields"].items()}}


def browser_seconds(page: Path) -> float:
    """Seconds from opening the page in headless Chromium to the first drawn surface."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import Browser

    with Browser(timeout=300) as b:
        t0 = time.perf_counter()
        b.open(page.as_uri())
        b.wait_for("document.body && document.body.dataset.state === 'drawn'")
        seconds = time.perf_counter() - t0
    if b.problems:
        raise SystemExit(f"{page}: {b.problems}")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args(argv)
    print("| case | atoms | mesh in the page | page MB | data kB (ρ, ρ − SAD) | `rhosr view` s | "
          "peak RSS GB | browser s | `plot --deformation` s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            page, dens = Path(tmp) / f"{case}.html", Path(tmp) / f"{case}.h5"
            view = run(["view", *CASES[case], "-o", str(page), "--device", "cpu"])
            run(["predict", *CASES[case], "-o", str(dens), "--format", "h5", "--device", "cpu"])
            plot = run(["plot", "--deformation", str(dens), "-o", str(Path(tmp) / f"{case}.png")])
            kb = data_kb(page)
            atoms = int(re.search(r"(\d+) atoms", page.read_text(encoding="utf-8")).group(1))
            shown = "-" if args.no_browser else f"{browser_seconds(page):.1f}"
            print(f"| {case} | {atoms} | {kb['mesh']} | {page.stat().st_size / 1e6:.2f} | "
                  f"{kb['density']:.0f}, {kb['deformation']:.0f} | {view['process_seconds']:.1f} | "
                  f"{view['rss_gb']:.2f} | {shown} | {plot['process_seconds']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
