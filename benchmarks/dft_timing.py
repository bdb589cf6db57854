"""Time the reference Kohn–Sham labels (rhosr.dft.scf.run_dft).

Usage::

    PYTHONPATH=src python benchmarks/dft_timing.py [xyz ...] [--threads N] [--brute]

Without arguments it times methane and the 18-atom QM9 molecule 107770 of the
published archive (tests/data).  For each molecule it prints SCF and density
times, SCF cycles, the energy error against ``cases.json`` when the molecule is
listed there, and the density error against the published ``rho_dft`` when
``tests/data/<name>_dft.npz`` exists.  ``--brute`` also evaluates the density
with PySCF's lattice-summed ``pbc_eval_gto`` (AO values times density matrix)
and reports its time and the NMAE between the two routes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.grid import box_for  # noqa: E402
from rhosr.core.units import ANGSTROM_TO_BOHR  # noqa: E402
from rhosr.dft.scf import build_cell, evaluate_density, make_scf, run_dft  # noqa: E402

DATA = ROOT / "tests" / "data"
DEFAULT = [DATA / "qm9_000001.xyz", DATA / "reference" / "qm9_107770.xyz"]


def read_xyz(path):
    lines = Path(path).read_text().splitlines()
    n = int(lines[0])
    rows = [line.split() for line in lines[2:2 + n]]
    return [r[0] for r in rows], np.array([[float(x) for x in r[1:4]] for r in rows]) * ANGSTROM_TO_BOHR


def brute_density(symbols, pos, fine, blk=20000):
    """PySCF's route: lattice-summed AO values times the density matrix."""
    cell = build_cell(symbols, pos, fine)
    mf = make_scf(cell)
    mf.kernel()
    dm = mf.make_rdm1()
    t0 = time.perf_counter()
    coords = fine.coords()
    rho = np.empty(len(coords))
    for i in range(0, len(coords), blk):
        ao = cell.pbc_eval_gto("GTOval_sph", coords[i:i + blk])
        rho[i:i + blk] = np.einsum("pi,pi->p", ao @ dm, ao)
    t_brute = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = evaluate_density(cell, fine, mf.mo_coeff, mf.mo_occ)
    t_fast = time.perf_counter() - t0
    rho = rho.reshape(fine.mesh)
    return t_brute, t_fast, float(np.abs(fast - rho).sum() / rho.sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("xyz", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--brute", action="store_true")
    args = ap.parse_args(argv)
    cases_path = DATA / "reference" / "cases.json"
    cases = json.loads(cases_path.read_text()) if cases_path.exists() else {}
    for path in args.xyz:
        name = path.stem
        symbols, pos = read_xyz(path)
        _, fine, centred = box_for(pos)
        cpu0 = time.process_time()
        res = run_dft(symbols, centred, fine, threads=args.threads)
        cpu = time.process_time() - cpu0
        line = (f"{name}: {len(symbols)} atoms, mesh {fine.mesh} ({fine.size} points), "
                f"converged={res.converged} in {res.iterations} cycles; "
                f"scf {res.timings['scf']:.2f} s, density {res.timings['density']:.2f} s, "
                f"total {res.seconds:.2f} s (cpu {cpu:.1f} s)")
        if not res.converged:
            line += f"; FAILED: {res.reason}"
        elif name in cases:
            line += f"; dE {res.energy - cases[name]['energy_hartree']:+.2e} Ha"
        ref_path = DATA / f"{name}_dft.npz"
        if res.converged and ref_path.exists():
            ref = np.load(ref_path)["rho_dft"].astype(np.float64)
            line += f"; NMAE vs published {np.abs(res.density - ref).sum() / ref.sum() * 100:.5f} %"
        print(line, flush=True)
        if args.brute:
            t_brute, t_fast, err = brute_density(symbols, centred, fine)
            print(f"  density: pbc_eval_gto route {t_brute:.2f} s, rhosr {t_fast:.2f} s, "
                  f"NMAE between them {err * 100:.2e} %", flush=True)


if __name__ == "__main__":
    main()
