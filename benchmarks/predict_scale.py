"""Wall time and peak memory against size: ``rhosr predict``, ``rhosr predict --refine`` and
the PySCF SCF they stand in for, from methane to a 2 000-atom protein fragment.

Each command runs in a fresh process that reports its own peak resident memory
(``ru_maxrss``) and wall time; one case after the other, nothing in parallel:

- ``predict``: ``rhosr predict CASE -o FILE`` with default settings (cube output);
  "network s" is the prediction itself (SAD, network, normalisation) from the output's
  metadata, "command s" the whole process (imports, reading, writing the cube);
- ``refine``: ``rhosr predict CASE --refine`` (the default refinement, --tol 1e-3);
- ``scf``: ``rhosr scf CASE --guess minao`` (the labels' SCF, conv_tol 1e-10).

``--scf-max-atoms`` and ``--refine-max-atoms`` skip the two where they would take too long.
A power law t = a N^p is fitted to each curve over the cases with at least
``--fit-min-atoms`` atoms; the ratio SCF / predict and its exponent follow.

    PYTHONPATH=src python benchmarks/predict_scale.py --json docs/sizes.json --plot docs/sizes.png

Cases: ``--cases`` names reference geometries (tests/data/reference), ids of
data/large/structures.xyz, or a structure file; the default spans 5 to 1 997 atoms.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
REF = ROOT / "tests" / "data" / "reference"
LARGE = ROOT / "data" / "large" / "structures.xyz"
CHARGES = {"gtp_microtubule_1996": -4}
DEFAULT_CASES = ["qm9_000001", "qm9_107770", "drug-test-000", "sugar-test-000", "steroid-test-001",
                 "steroid-test-002", "peptide-test-002", "drug-test-005", "gtp_microtubule_1996",
                 "examples/adk_fragment.pdb"]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from rhosr.cli.main import main
rc = main(sys.argv[1:])
print("RESULT " + json.dumps({"rc": rc, "wall_s": time.perf_counter() - t0,
      "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def case_file(case: str, tmp: Path) -> tuple[Path, int]:
    """(structure file, charge) of a case name."""
    if (REF / f"{case}.xyz").is_file():
        return REF / f"{case}.xyz", CHARGES.get(case, 0)
    if Path(case).is_file():
        return Path(case), 0
    import ase.io

    for atoms in ase.io.read(LARGE, index=":"):
        if atoms.info.get("id") == case:
            out = tmp / f"{case}.xyz"
            ase.io.write(out, atoms, format="extxyz")
            return out, int(atoms.info.get("charge", 0))
    raise SystemExit(f"{case}: not a reference geometry, an id of {LARGE} or a file")


def run(args: list[str], env: dict, timeout: float) -> dict | None:
    """One rhosr command in a fresh process: its RESULT (wall, peak RSS) and stdout, or None."""
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  {args[0]}: timed out after {timeout:.0f} s", flush=True)
        return None
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(f"  {args[0]} failed: {proc.stderr.strip()[-400:]}", flush=True)
        return None
    return dict(json.loads(line[-1][7:]), stdout=proc.stdout)


def measure(case: str, tmp: Path, env: dict, opts) -> dict:
    from rhosr.core.grid import box_for
    from rhosr.core.sources import load_molecule

    path, charge = case_file(case, tmp)
    mol = load_molecule(str(path), charge=charge, max_voxels=None)
    row = {"case": case, "atoms": mol.natm, "mesh": list(box_for(mol.positions)[1].mesh)}
    out = tmp / f"{path.stem}.cube"
    common = [str(path), "--charge", str(charge)]
    res = run(["predict", *common, "-o", str(out), "--no-progress"], env, opts.timeout)
    if res is not None:
        # the summary line: "<id>: N atoms, fine mesh ..., E electrons, S s[, tiles of ...]"
        summary = [ln for ln in res["stdout"].splitlines() if ln.startswith(f"{mol.id}:")][-1]
        row["network_s"] = float(re.search(r"([0-9.]+) s\b", summary).group(1))
        tiles = re.search(r"tiles of (\S+)", summary)
        row["tile"] = tiles.group(1) if tiles else None
        row.update(predict_s=res["wall_s"], predict_gb=res["maxrss_gb"])
    out.unlink(missing_ok=True)
    if mol.natm <= opts.refine_max_atoms:
        res = run(["predict", *common, "-o", str(out), "--refine", "--no-progress"], env, opts.timeout)
        if res is not None:
            row.update(refine_s=res["wall_s"], refine_gb=res["maxrss_gb"])
        out.unlink(missing_ok=True)
    if mol.natm <= opts.scf_max_atoms:
        res = run(["scf", *common, "--guess", "minao"], env, opts.timeout)
        if res is not None:
            row.update(scf_s=res["wall_s"], scf_gb=res["maxrss_gb"])
    return row


def table_line(r: dict) -> str:
    def f(key, width, digits=2):
        return f"{r[key]:>{width}.{digits}f}" if key in r else " " * (width - 1) + "-"

    ratio = (f"{r['scf_s'] / r['predict_s']:>11.1f}" if "scf_s" in r and "predict_s" in r
             else " " * 10 + "-")
    return (f"{r['case']:<24} {r['atoms']:>5} {'x'.join(map(str, r['mesh'])):>13} "
            f"{str(r.get('tile')):>14} {f('network_s', 9)} {f('predict_s', 9)} {f('predict_gb', 5)} "
            f"{f('refine_s', 8, 1)} {f('refine_gb', 5)} {f('scf_s', 8, 1)} {f('scf_gb', 5)} {ratio}")


def fit_power(rows, key: str, min_atoms: int):
    """(a, p) of t = a N^p over the rows with ``key`` and at least ``min_atoms`` atoms."""
    pts = [(r["atoms"], r[key]) for r in rows if key in r and r.get("atoms", 0) >= min_atoms]
    if len(pts) < 2:
        return None
    n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    p, log_a = np.polyfit(n, t, 1)
    return float(np.exp(log_a)), float(p)


def plot(rows, fits, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, colour in (("network_s", "prediction alone (SAD + network)", "C9"),
                               ("predict_s", "rhosr predict (command)", "C0"),
                               ("refine_s", "rhosr predict --refine", "C2"),
                               ("scf_s", "PySCF SCF (minao, 1e-10)", "C3")):
        pts = [(r["atoms"], r[key], r.get(key.replace("_s", "_gb"))) for r in rows if key in r]
        if not pts:
            continue
        n, t, m = (np.array(v) for v in zip(*pts))
        fit = fits.get(key)
        lab = label + (f"  (∝ N^{fit[1]:.2f})" if fit else "")
        ax.loglog(n, t, "o-", color=colour, label=lab)
        if key != "network_s":
            bx.loglog(n, m, "o-", color=colour, label=label)
    ax.set_xlabel("atoms")
    ax.set_ylabel("wall time, s (2 cores)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    bx.set_xlabel("atoms")
    bx.set_ylabel("peak resident memory, GB")
    bx.legend(fontsize=8)
    bx.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=DEFAULT_CASES,
                    help="cases to measure (none with --update: refit and replot --json)")
    ap.add_argument("--scf-max-atoms", type=int, default=120)
    ap.add_argument("--refine-max-atoms", type=int, default=120)
    ap.add_argument("--fit-min-atoms", type=int, default=18)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of --json for the cases not measured now (fits and plot "
                         "over all)")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    rows = []
    print(f"{'case':<24} {'atoms':>5} {'fine mesh':>13} {'tile':>14} {'network s':>9} {'predict s':>9} "
          f"{'GB':>5} {'refine s':>8} {'GB':>5} {'SCF s':>8} {'GB':>5} {'SCF/predict':>11}", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            r = measure(case, Path(tmp), env, args)
            rows.append(r)
            print(table_line(r), flush=True)
    if args.update and args.json and args.json.exists():
        old = [r for r in json.loads(args.json.read_text())["rows"] if r["case"] not in args.cases]
        rows = sorted(old + rows, key=lambda r: r["atoms"])
    fits = {k: fit_power(rows, k, args.fit_min_atoms)
            for k in ("network_s", "predict_s", "refine_s", "scf_s")}
    both = [dict(atoms=r["atoms"], ratio=r["scf_s"] / r["predict_s"]) for r in rows
            if "scf_s" in r and "predict_s" in r]
    fits["ratio"] = fit_power(both, "ratio", args.fit_min_atoms)
    for k, v in fits.items():
        if v:
            print(f"fit {k}: {v[0]:.3g} * N^{v[1]:.2f} (N >= {args.fit_min_atoms})")
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "fits": fits}, indent=1) + "\n")
    if args.plot:
        plot(rows, fits, args.plot)


if __name__ == "__main__":
    main()
