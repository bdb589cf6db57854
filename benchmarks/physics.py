"""Physics from predicted densities, measured in one run: refinement, energies, dipoles, SCF starts.

Cases: QM9 test molecules from the bank (their reference densities and energies), the two
C7O2H10 frames of the reference data and a few small ions (their references computed here by
the 'minao' SCF). Per case:

* the bundled model's prediction (in a child process, the network loaded once; seconds per
  molecule), NMAE against the reference before and after one Kohn–Sham step
  (:func:`rhosr.dft.physics.ks_step`) and after damped steps (:data:`REFINES`);
* the Harris energy and E_KS[D] against the converged SCF energy, per refinement;
* the dipole of ρ and of each refined density against the converged density's (debye,
  about the box centre);
* the labels' SCF from 'rhosr' (D of the default refinement), 'atom' and 'minao': cycles
  and wall time to
  convergence at conv_tol 1e-10 and at PySCF's default for the cell (read off the same run's
  trace: the trajectory does not depend on the tolerance until it stops); the 'rhosr' times
  include the prediction and the step; the energy error after k = 1…5 cycles;
* the step's time against one SCF cycle and the whole SCF.

    python benchmarks/physics.py [--bank data/qm9] [--test 20] [--ions ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.density import nmae  # noqa: E402
from rhosr.core.grid import box_for  # noqa: E402
from rhosr.core.sources import load_molecules  # noqa: E402
from rhosr.dft.physics import REFINE_MIXING, REFINE_STEPS, dipole_debye, ks_step, run_scf  # noqa: E402
from rhosr.dft.scf import build_cell, evaluate_density  # noqa: E402
from rhosr.labels.bank import open_labels  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "reference"
IONS = ["smiles:CC(=O)[O-]", "smiles:CC[O-]", "smiles:C[NH3+]"]
#: (steps, mixing) of the refinements measured; the first is the single undamped step (ρ₁),
#: the second the commands' default (rhosr.dft.physics.REFINE_STEPS, REFINE_MIXING).
REFINES = ((1, 1.0), (REFINE_STEPS, REFINE_MIXING), (4, 0.5))
K_CYCLES = 5

PREDICT_CHILD = """
import json, sys, time
import numpy as np
from rhosr.core.sources import load_molecules
from rhosr.inference.predict import predict_molecule, resolve_model
specs, out = json.loads(sys.argv[1]), sys.argv[2]
net, name = resolve_model("default", "cpu")
arrays, seconds = {}, {}
for key, spec in specs.items():
    mol = load_molecules(spec)[0]
    predict_molecule(mol, net, model_name=name, device="cpu")  # warm
    t0 = time.perf_counter()
    dens = predict_molecule(mol, net, model_name=name, device="cpu")
    seconds[key] = time.perf_counter() - t0
    arrays[key] = dens.values
np.savez(out, **arrays)
print(json.dumps(seconds))
"""


def cases(args) -> list[dict]:
    """[{key, spec, kind, charge, energy, density}] (reference None where the SCF gives it)."""
    out = []
    labels = open_labels(args.bank)
    test = [m.id for m in load_molecules("qm9:test/50")][: args.test]
    for mol_id in test:
        out.append({"key": mol_id, "spec": f"qm9:{int(mol_id[4:])}", "kind": "qm9 test",
                    "bank_id": mol_id})
    for frame in () if args.no_frames else ("c7o2h10_frame0", "c7o2h10_frame1"):
        out.append({"key": frame, "spec": str(REFERENCE / f"{frame}.xyz"), "kind": "C7O2H10"})
    for k, spec in enumerate(args.ions):
        out.append({"key": f"ion{k}", "spec": spec, "kind": "ion"})
    for c in out:
        c["mol"] = load_molecules(c["spec"])[0]
        if "bank_id" in c:
            rec = labels.read(c["bank_id"])
            c["energy"], c["density"] = rec.energy, np.asarray(rec.rho_dft, dtype=np.float64)
    return out


def predict_all(case_list) -> tuple[dict, dict]:
    specs = {c["key"]: c["spec"] for c in case_list}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pred.npz"
        proc = subprocess.run([sys.executable, "-c", PREDICT_CHILD, json.dumps(specs), str(out)],
                              capture_output=True, text=True, check=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        seconds = json.loads(proc.stdout.strip().splitlines()[-1])
        with np.load(out) as z:
            return {k: z[k].astype(np.float64) for k in z.files}, seconds


def measure(c, rho_pred, t_pred, tol_default) -> dict:
    mol = c["mol"]
    _, fine, pos = box_for(mol.positions)
    kw = dict(charge=mol.charge, conv_tol=1e-10)
    minao = run_scf(mol.symbols, pos, fine, guess="minao", **kw)
    if "density" not in c:  # reference from this SCF, point-wise as the labels
        cell = build_cell(mol.symbols, pos, fine, charge=mol.charge)
        c["density"] = evaluate_density(cell, fine, minao.mo_coeff, minao.mo_occ)
        c["energy"] = minao.energy
    ref, e_ref = c["density"], c["energy"]
    dip_ref = dipole_debye(mol.symbols, pos, fine, ref)
    row = {"key": c["key"], "kind": c["kind"], "atoms": len(mol.symbols), "charge": mol.charge,
           "nmae_before": 100 * nmae(rho_pred, ref), "e_ref": e_ref,
           "dipole_ref": float(np.linalg.norm(dip_ref)), "predict_s": t_pred,
           "scf_energy_check": minao.energy - e_ref, "refine": {}}
    steps = {}
    for n, a in REFINES:
        st = steps[(n, a)] = ks_step(mol.symbols, pos, fine, rho_pred, charge=mol.charge,
                                     steps=n, mixing=a)
        row["ddip_before"] = float(np.linalg.norm(st.dipole_debye - dip_ref))
        row["refine"][f"{n}x{a:g}"] = {
            "nmae": 100 * nmae(st.density, ref), "de_harris_mha": 1e3 * (st.energy_harris - e_ref),
            "de_ks_mha": 1e3 * (st.energy_ks - e_ref), "e_harris": st.energy_harris,
            "ddip": float(np.linalg.norm(st.dipole_refined_debye - dip_ref)),
            "seconds": st.seconds, "setup_s": st.timings["setup"]}
    default = steps[REFINES[1]]
    runs = (("rhosr", run_scf(mol.symbols, pos, fine, guess=default.dm1, **kw),
             t_pred + default.seconds),
            ("atom", run_scf(mol.symbols, pos, fine, guess="atom", **kw), 0.0),
            ("minao", minao, 0.0))
    for name, res, add in runs:
        row[name] = _scf_figures(res, add, e_ref, tol_default)
    times = [t["seconds"] for t in minao.trace]
    row["cycle_s"] = float(np.mean(np.diff(times))) if len(times) > 1 else float("nan")
    return row


def _scf_figures(res, extra_s, e_ref, tol_default) -> dict:
    n_def = res.cycles_to(tol_default)
    return {"cycles": res.cycles, "seconds": res.seconds + extra_s, "converged": res.converged,
            "cycles_default": n_def,
            "seconds_default": (res.trace[n_def - 1]["seconds"] if n_def else res.seconds) + extra_s,
            "de_after_k_mha": [1e3 * (t["energy"] - e_ref) for t in res.trace[:K_CYCLES]]}


GUESS_NAMES = ("rhosr", "atom", "minao")


def report(rows, tol_default) -> None:
    med = lambda xs: float(np.median(np.abs(xs)))  # noqa: E731
    keys = [f"{n}x{a:g}" for n, a in REFINES]
    print(f"{'case':<16}{'kind':<9}{'atoms':>5}{'NMAE %':>8}" + "".join(f"{k:>8}" for k in keys)
          + f"{'dE_H mHa':>9}{'dE_KS':>7}{'dμ D':>7}{'->':>6}{'cyc r/a/m':>11}")
    for r in rows:
        cyc = "/".join(str(r[g]["cycles"]) for g in GUESS_NAMES)
        d = r["refine"][keys[1]]
        print(f"{r['key']:<16}{r['kind']:<9}{r['atoms']:>5}{r['nmae_before']:>8.3f}"
              + "".join(f"{r['refine'][k]['nmae']:>8.3f}" for k in keys)
              + f"{d['de_harris_mha']:>9.2f}{d['de_ks_mha']:>7.2f}{r['ddip_before']:>7.3f}"
              f"{d['ddip']:>6.3f}{cyc:>11}")
    for kind in ("qm9 test", "C7O2H10", "ion"):
        sub = [r for r in rows if r["kind"] == kind]
        if not sub:
            continue
        print(f"\n{kind} ({len(sub)}): NMAE mean {np.mean([r['nmae_before'] for r in sub]):.3f} %, "
              f"dipole error mean {np.mean([r['ddip_before'] for r in sub]):.3f} D "
              f"(|mu| mean {np.mean([r['dipole_ref'] for r in sub]):.2f} D); after")
        for k in keys:
            f = [r["refine"][k] for r in sub]
            print(f"  {k:>6} (steps x mixing): NMAE mean {np.mean([x['nmae'] for x in f]):.3f} % "
                  f"(max {np.max([x['nmae'] for x in f]):.3f}); median |dE| Harris "
                  f"{med([x['de_harris_mha'] for x in f]):.2f} mHa, E_KS "
                  f"{med([x['de_ks_mha'] for x in f]):.2f} mHa; dipole error mean "
                  f"{np.mean([x['ddip'] for x in f]):.3f} D; {np.mean([x['seconds'] for x in f]):.2f} s")
    _report_scf(rows, tol_default)
    _report_frames(rows, keys)


def _report_scf(rows, tol_default) -> None:
    print(f"\nSCF to convergence, all {len(rows)} cases ('rhosr' from the default refinement, "
          "its time including the prediction and the steps):")
    for tag, ckey, skey in (("1e-10", "cycles", "seconds"),
                            (f"{tol_default:g} (default)", "cycles_default", "seconds_default")):
        tot = {g: (sum(r[g][ckey] or 0 for r in rows), sum(r[g][skey] for r in rows))
               for g in GUESS_NAMES}
        print(f"  conv_tol {tag}: " + "; ".join(f"{g} {c} cycles {s:.0f} s" for g, (c, s) in tot.items()))
        for g in ("rhosr",):
            print(f"    {g}: vs atom {100 * (1 - tot[g][0] / tot['atom'][0]):+.1f} % cycles, "
                  f"{100 * (1 - tot[g][1] / tot['atom'][1]):+.1f} % time; vs minao "
                  f"{100 * (1 - tot[g][0] / tot['minao'][0]):+.1f} % cycles, "
                  f"{100 * (1 - tot[g][1] / tot['minao'][1]):+.1f} % time (+ = fewer, less)")
    for g in GUESS_NAMES:
        ks = [float(np.median([abs(r[g]["de_after_k_mha"][k]) for r in rows
                               if len(r[g]["de_after_k_mha"]) > k])) for k in range(K_CYCLES)]
        print(f"  median |E - E_conv| after k = 1..{K_CYCLES} cycles from {g}: "
              + ", ".join(f"{x:.3g}" for x in ks) + " mHa")
    cyc = np.nanmean([r["cycle_s"] for r in rows])
    scf = np.mean([r["minao"]["seconds"] for r in rows])
    for n, a in REFINES:
        k = f"{n}x{a:g}"
        t = np.mean([r["refine"][k]["seconds"] for r in rows])
        print(f"  refinement {k}: {t:.2f} s per molecule = {t / cyc:.1f} SCF cycles ({cyc:.2f} s) "
              f"= {100 * t / scf:.1f} % of the minao SCF ({scf:.1f} s)")
    print(f"  prediction {np.mean([r['predict_s'] for r in rows]):.2f} s per molecule")


def _report_frames(rows, keys) -> None:
    fr = {r["key"]: r for r in rows if r["kind"] == "C7O2H10"}
    if len(fr) == 2:
        a, b = fr["c7o2h10_frame0"], fr["c7o2h10_frame1"]
        print(f"\nC7O2H10 frame1 - frame0: reference {1e3 * (b['e_ref'] - a['e_ref']):.2f} mHa; "
              "errors " + "; ".join(
                  f"{k}: Harris {b['refine'][k]['de_harris_mha'] - a['refine'][k]['de_harris_mha']:+.2f}, "
                  f"E_KS {b['refine'][k]['de_ks_mha'] - a['refine'][k]['de_ks_mha']:+.2f} mHa"
                  for k in keys))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", default=str(ROOT / "data" / "qm9"))
    ap.add_argument("--test", type=int, default=20, help="QM9 test molecules (of qm9:test/50)")
    ap.add_argument("--ions", nargs="*", default=IONS)
    ap.add_argument("--no-frames", action="store_true", help="leave out the C7O2H10 frames")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--from-json", default=None, metavar="FILE",
                    help="print the report of rows written by an earlier run (--json) instead")
    args = ap.parse_args(argv)
    if args.from_json:
        report(json.loads(Path(args.from_json).read_text()), 1e-7)
        return
    t0 = time.perf_counter()
    case_list = cases(args)
    preds, seconds = predict_all(case_list)
    rows = []
    for c in case_list:
        mol = c["mol"]
        cell = build_cell(mol.symbols, box_for(mol.positions)[2], box_for(mol.positions)[1],
                          charge=mol.charge)
        tol_default = max(cell.precision * 10, 1e-8)  # pyscf.pbc's SCF default
        rows.append(measure(c, preds[c["key"]], seconds[c["key"]], tol_default))
        print(f"done {c['key']} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows, tol_default)


if __name__ == "__main__":
    main()
