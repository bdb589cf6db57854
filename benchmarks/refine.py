"""Accuracy against wall time: rhosr (prediction + k refinement steps) against the PySCF SCF
from 'minao' stopped after k cycles, on the same molecules in one run.

Per case, in a child process that never loads torch (PySCF's timings undisturbed):

* the labels' SCF from 'minao' (``conv_tol`` 1e-10), every cycle's orbitals kept by a
  callback; its converged density, evaluated point by point, is the reference, its energy
  and dipole the references;
* :func:`rhosr.dft.refine.refine` from the bundled model's prediction (made before, in a
  process with torch; its seconds are added), ``--max-steps`` steps with no stopping, every
  iterate kept; ``--methods`` adds other iterations for comparison;
* every iterate's density by the fast route (multigrid, 0.003 % NMAE from the point-wise
  one on these meshes) against the reference: the two curves NMAE(t) and |ΔE|(t), where t
  includes one point-wise evaluation (what a returned density costs).
* the default refinement (stopping at ``REFINE_TOL``) read off the same trajectory: NMAE,
  |E_Harris − E_SCF|, dipole error, steps, seconds; and the time each route needs to reach
  ``--target`` % NMAE;
* the SCF start of ``rhosr scf --guess rhosr``: the labels' SCF (conv_tol 1e-10) from the
  first iterate at ``SCF_START_TOL``, its cycles and seconds (prediction and steps counted)
  against the 'minao' SCF's.  ``--methods pulay diis plain`` compares the iterations on the
  same predictions (the first is the one reported).

    python benchmarks/refine.py [--qm9 20] [--groups anion:3 cation:2 S P Cl Si B] [--per-group 1]
        [--frames] [--max-steps 20] [--methods pulay diis] [--mixing 0.4] [--json FILE]
        [--plot docs/refine.png]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.core.grid import box_for  # noqa: E402
from rhosr.core.molecule import valence_electrons  # noqa: E402
from rhosr.core.splits import group_of_id, split_of_id  # noqa: E402
from rhosr.core.sources import load_molecules  # noqa: E402
from rhosr.dft.refine import REFINE_MIXING, SCF_START_METHOD  # noqa: E402
from rhosr.labels.bank import open_labels  # noqa: E402

FRAMES = [ROOT / "tests" / "data" / "reference" / f"c7o2h10_frame{i}.xyz" for i in (0, 1)]


def cases(args) -> list[dict]:
    """[{key, symbols, positions, cell, mesh, charge}] in the box frame of each molecule."""
    out = []
    qm9 = open_labels(str(ROOT / "data" / "qm9"))
    ids = sorted(i for i in qm9.ids() if split_of_id(i) == args.split)[: args.qm9]
    exotic = open_labels(str(ROOT / "data" / "exotic"))
    for spec in args.groups:  # GROUP or GROUP:N
        g, _, n = spec.partition(":")
        gids = sorted((i for i in exotic.ids() if group_of_id(i) == g and split_of_id(i) == args.split),
                      key=lambda i: int(i.rsplit("-", 1)[1]))
        ids += gids[: int(n or args.per_group)]
    for mol_id in ids:
        rec = (qm9 if mol_id.startswith("qm9_") else exotic).read(mol_id, density=False)
        out.append({"key": mol_id, "symbols": list(rec.symbols), "positions": rec.positions.tolist(),
                    "cell": list(rec.grid.cell), "mesh": list(rec.grid.mesh), "charge": int(rec.charge)})
    for path in FRAMES if args.frames else ():
        mol = load_molecules(str(path))[0]
        _, fine, pos = box_for(mol.positions)
        out.append({"key": path.stem, "symbols": list(mol.symbols), "positions": pos.tolist(),
                    "cell": list(fine.cell), "mesh": list(fine.mesh), "charge": int(mol.charge)})
    return out


def predict_all(rows, folder: Path) -> None:
    """Phase 1 (torch): the bundled model's prediction of every case, and its seconds."""
    import torch

    from rhosr.core.grid import Grid
    from rhosr.inference.predict import predict_on_grid, resolve_model

    net, _ = resolve_model("default", "cpu")
    for row in rows:
        grid = Grid(tuple(row["cell"]), tuple(row["mesh"]))
        with torch.no_grad():
            t0 = time.perf_counter()
            n_e = valence_electrons(row["symbols"]) - row["charge"]
            rho, _, _ = predict_on_grid(net, row["symbols"], np.asarray(row["positions"]), grid,
                                        row["charge"], n_e)
            row["predict_seconds"] = time.perf_counter() - t0
        np.save(folder / f"{row['key']}.npy", rho)


def physics_case(row, folder: Path, max_steps: int, methods, mixing: float,
                 start_method: str) -> dict:
    """Phase 2 (no torch): SCF curve, refinement curve(s), reference, for one case."""
    from rhosr.core.grid import Grid
    from rhosr.dft.physics import dipole_debye, scf_object
    from rhosr.dft.mesh import mesh_density
    from rhosr.dft.refine import REFINE_TOL, refine
    from rhosr.dft.scf import evaluate_density

    grid = Grid(tuple(row["cell"]), tuple(row["mesh"]))
    sym, pos, charge = row["symbols"], np.asarray(row["positions"]), row["charge"]
    t0 = time.perf_counter()
    mf = scf_object(sym, pos, grid, charge=charge, conv_tol=1e-10)
    mf.max_cycle = 100
    keep = []
    grads = []
    mf.callback = lambda env: (keep.append((time.perf_counter() - t0, env["mo_coeff"].copy(),
                                            env["mo_occ"].copy(), float(env["e_tot"]))),
                               grads.append((float(env["e_tot"] - env["last_hf_e"]),
                                             float(env["norm_gorb"]))))
    e_ref = float(mf.kernel())
    scf_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref = evaluate_density(mf.cell, grid, mf.mo_coeff, mf.mo_occ)
    t_pw = time.perf_counter() - t1
    dip_ref = dipole_debye(sym, pos, grid, ref)
    n_e = float(ref.sum() * grid.dv)

    def err(rho):
        return 100.0 * float(np.abs(rho - ref).sum() * grid.dv / n_e)

    scf = [{"t": t + t_pw, "nmae": err(mesh_density(mf, mf.make_rdm1(c, o))),
            "de": abs(e - e_ref)} for t, c, o, e in keep]
    rho_pred = np.load(folder / f"{row['key']}.npy")
    out = {"key": row["key"], "atoms": len(sym), "charge": charge, "e_ref": e_ref,
           "scf_seconds": scf_seconds, "scf_cycles": len(keep), "scf_converged": bool(mf.converged),
           "pointwise_seconds": t_pw, "predict_seconds": row["predict_seconds"],
           "predict_nmae": err(rho_pred), "scf": scf,
           "scf_cycles_default": _cycles_to(grads, _default_conv_tol(mf.cell)),
           "method": methods[0]}
    for method in methods:
        name = "rhosr" if method == methods[0] else f"rhosr_{method}"
        iters = []

        def keep_iterate(k, c, o, tr, iters=iters):
            iters.append((c.copy(), o.copy(), dict(tr)))

        res = refine(sym, pos, grid, rho_pred, charge=charge, tol=0.0, max_steps=max_steps,
                     method=method, mixing=mixing, pointwise=False, callback=keep_iterate)
        mf2 = scf_object(sym, pos, grid, charge=charge)
        curve = []
        for c, o, tr in iters:
            dm = mf2.make_rdm1(c, o)
            curve.append({"t": tr["seconds"] + row["predict_seconds"] + t_pw,
                          "nmae": err(mesh_density(mf2, dm)), "de": abs(tr["energy"] - e_ref),
                          "residual": tr["residual"], "full": tr["full"]})
        out[name] = curve
        out[name + "_timings"] = res.timings
        if name == "rhosr":
            k = next((i for i, c in enumerate(curve) if c["residual"] <= REFINE_TOL), len(curve) - 1)
            c, o, _ = iters[k]
            t2 = time.perf_counter()
            final = evaluate_density(mf2.cell, grid, c, o)
            out["default"] = {"steps": k + 1, "converged": curve[k]["residual"] <= REFINE_TOL,
                              "nmae": err(final), "de": curve[k]["de"],
                              "dipole_error": float(np.linalg.norm(
                                  dipole_debye(sym, pos, grid, final) - dip_ref)),
                              "seconds": curve[k]["t"] - t_pw + (time.perf_counter() - t2)}
        if method == start_method:
            out["start"] = scf_start(row, grid, iters, curve, e_ref, _default_conv_tol(mf.cell),
                                     mf2)
            out["start"]["method"] = method
    return out


def _default_conv_tol(cell) -> float:
    """pyscf.pbc's default SCF conv_tol for ``cell``."""
    return max(cell.precision * 10, 1e-8)


def _cycles_to(trace, tol) -> int | None:
    """Cycles to PySCF's test at ``tol`` (|ΔE| < tol, |g| < √tol) in a trace of (ΔE, |g|) per
    cycle (the 'minao' run's callback; an SCFResult has its own ``cycles_to``)."""
    return next((i + 1 for i, (de, g) in enumerate(trace) if abs(de) < tol and g < tol ** 0.5),
                None)


def scf_start(row, grid, iters, curve, e_ref, default_tol, mf) -> dict:
    """``rhosr scf --guess rhosr``: the labels' SCF (conv_tol 1e-10) from the first iterate
    whose residual is at most SCF_START_TOL (the best if none is), read off the same
    trajectory, with its potential and core Hamiltonian handed over
    (:class:`rhosr.dft.start.SCFStart`) and run on ``mf``, the case's SCF object, as
    :func:`rhosr.dft.refine.scf_from_density` runs it on the refinement's; its seconds count
    the prediction, the steps and that potential."""
    from rhosr.dft.mesh import fock_terms, mesh_density
    from rhosr.dft.physics import traced_kernel
    from rhosr.dft.refine import SCF_START_TOL
    from rhosr.dft.start import SCFStart

    k = next((i for i, c in enumerate(curve) if c["residual"] <= SCF_START_TOL),
             int(np.argmin([c["residual"] for c in curve])))
    c, o, tr = iters[k]
    dm = (c * o) @ c.T
    hcore = mf.get_hcore()  # the refinement's, built in its setup
    t0 = time.perf_counter()
    # a full step's output density is at hand; a cheap step's is evaluated again (refine)
    rho_dm = mesh_density(mf, dm)
    t_density = 0.0 if tr["full"] else time.perf_counter() - t0
    t0 = time.perf_counter()
    terms = fock_terms(mf, rho_dm)
    t_handover = time.perf_counter() - t0 + t_density
    start = SCFStart(dm, terms["veff"], terms["e_coul"], terms["e_xc"])
    mf.conv_tol = 1e-10
    scf = traced_kernel(mf, start, hcore=hcore)  # as scf_from_density, on one SCF object
    return {"steps": k + 1, "residual": curve[k]["residual"], "cycles": scf.cycles,
            "converged": scf.converged, "de": scf.energy - e_ref,
            "cycles_default": scf.cycles_to(default_tol),
            "seconds": row["predict_seconds"] + tr["seconds"] + t_handover + scf.seconds,
            "refine_seconds": tr["seconds"], "handover_seconds": t_handover,
            "scf_seconds": scf.seconds}


def time_to(curve, target) -> float | None:
    """First time at which a curve's NMAE is at or below ``target`` %."""
    return next((c["t"] for c in curve if c["nmae"] <= target), None)


def report(results, target) -> None:
    print(f"\ndefault tolerance with the '{results[0]['method']}' iteration")
    print(f"{'case':<16} {'atoms':>5} {'pred %':>7} {'SCF s':>6} {'cyc':>4} {'ref %':>7} "
          f"{'|dE| mHa':>8} {'dip D':>6} {'steps':>5} {'ref s':>6} {'t_rhosr':>7} {'t_scf':>6} {'ratio':>6}")
    ratios = []
    for r in results:
        d = r["default"]
        a, b = time_to(r["rhosr"], target), time_to(r["scf"], target)
        ratio = a / b if a and b else None
        ratios.append(ratio)
        print(f"{r['key']:<16} {r['atoms']:>5} {r['predict_nmae']:7.3f} {r['scf_seconds']:6.1f} "
              f"{r['scf_cycles']:>4} {d['nmae']:7.4f} {1e3 * d['de']:8.4f} {d['dipole_error']:6.3f} "
              f"{d['steps']:>5} {d['seconds']:6.1f} {_f(a):>7} {_f(b):>6} {_f(ratio, 3):>6}")
    good = [x for x in ratios if x is not None]
    nmaes = [r["default"]["nmae"] for r in results]
    print(f"\n{len(results)} cases: default refinement NMAE mean {np.mean(nmaes):.4f} % (max "
          f"{np.max(nmaes):.4f}), median |dE| {1e3 * np.median([r['default']['de'] for r in results]):.4f}"
          f" mHa, median dipole error {np.median([r['default']['dipole_error'] for r in results]):.4f} D,"
          f" steps median {np.median([r['default']['steps'] for r in results]):.0f}, converged "
          f"{sum(r['default']['converged'] for r in results)}/{len(results)}; "
          f"seconds per molecule {np.mean([r['default']['seconds'] for r in results]):.2f} "
          f"(SCF {np.mean([r['scf_seconds'] for r in results]):.2f})")
    print(f"time to {target} % NMAE, rhosr / SCF from 'minao': median "
          f"{_f(np.median(good) if good else None, 3)}, mean {_f(np.mean(good) if good else None, 3)}"
          f", max {_f(max(good) if good else None, 3)} ({len(good)} of {len(results)} reached it)")
    report_step_costs(results)
    worse = [r["key"] for r in results if r["default"]["nmae"] > r["predict_nmae"]]
    print(f"cases ending worse than the prediction: {worse or 'none'}")
    report_start(results)


def report_step_costs(results) -> None:
    """Median seconds of a full and of a loose refinement step (steps 2 on: the first also
    builds the SCF object) against one cycle of the 'minao' SCF, and the refinement's
    time per part (rhosr.dft.refine timings, summed over the cases)."""
    cost = {True: [], False: []}
    for r in results:
        c = r["rhosr"]
        for a, b in zip(c, c[1:]):
            cost[b["full"]].append(b["t"] - a["t"])
    cycle = [(s[-1]["t"] - s[0]["t"]) / (len(s) - 1) for s in (r["scf"] for r in results)
             if len(s) > 1]
    parts = {}
    for r in results:
        for k, v in r["rhosr_timings"].items():
            parts[k] = parts.get(k, 0.0) + v
    print(f"step cost (median s): full {_f(np.median(cost[True]) if cost[True] else None, 2)} "
          f"({len(cost[True])}), loose {_f(np.median(cost[False]) if cost[False] else None, 2)} "
          f"({len(cost[False])}); 'minao' SCF cycle {np.median(cycle):.2f}; refinement time by "
          f"part: " + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items()))


def report_start(results) -> None:
    """The SCF from the refined start against the SCF from 'minao' (conv_tol 1e-10 and
    PySCF's default), totals over the cases."""
    st = [r["start"] for r in results]
    print(f"\nSCF start from the '{st[0]['method']}' refinement (conv_tol 1e-10): "
          f"{sum(s['converged'] for s in st)}/{len(st)} converged, "
          f"max |E - E_minao| {max(abs(s['de']) for s in st):.1e} Ha")
    print(f"{'case':<16} {'steps':>5} {'cyc':>4} {'minao':>5} {'rhosr s':>8} {'minao s':>8} {'ratio':>6}")
    for r, s in zip(results, st):
        print(f"{r['key']:<16} {s['steps']:>5} {s['cycles']:>4} {r['scf_cycles']:>5} "
              f"{s['seconds']:8.1f} {r['scf_seconds']:8.1f} {s['seconds'] / r['scf_seconds']:6.3f}")
    n_m, n_r = sum(r["scf_cycles"] for r in results), sum(s["cycles"] for s in st)
    n_s = sum(s["steps"] for s in st)
    t_m, t_r = sum(r["scf_seconds"] for r in results), sum(s["seconds"] for s in st)
    print(f"totals: minao {n_m} cycles {t_m:.0f} s; rhosr {n_r} SCF cycles + {n_s} refinement "
          f"steps, {t_r:.0f} s (prediction and steps counted): {100 * (1 - n_r / n_m):.0f} % fewer "
          f"SCF cycles, {100 * (1 - (n_r + n_s) / n_m):.0f} % fewer cycles and steps together, "
          f"{100 * (1 - t_r / t_m):.0f} % less wall time; median ratio of seconds "
          f"{np.median([s['seconds'] / r['scf_seconds'] for r, s in zip(results, st)]):.3f}")
    d_m = [r["scf_cycles_default"] for r in results]
    d_r = [s["cycles_default"] for s in st]
    if None not in d_m and None not in d_r:
        print(f"at PySCF's default conv_tol: minao {sum(d_m)} cycles, rhosr {sum(d_r)} SCF cycles "
              f"(the same start)")


def _f(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def plot(results, path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, color, label in [("scf", "0.4", "PySCF SCF from 'minao', k cycles"),
                               ("rhosr", "C0", "rhosr: prediction + k refinement steps")]:
        for i, r in enumerate(results):
            ax.plot([c["t"] for c in r[name]], [c["nmae"] for c in r[name]], color=color, lw=0.8,
                    alpha=0.5, label=label if i == 0 else None)
    ax.axhline(target, color="C3", lw=0.8, ls="--", label=f"{target} % NMAE")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s, 2 cores)")
    ax.set_ylabel("NMAE against the converged SCF (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qm9", type=int, default=20, help="QM9 test molecules of data/qm9")
    ap.add_argument("--groups", nargs="*", default=["anion:3", "cation:2", "S", "P", "Cl", "Si", "B"],
                    help="data/exotic groups, GROUP or GROUP:N molecules")
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="which held-out molecules of the banks (val: to choose defaults)")
    ap.add_argument("--per-group", type=int, default=1)
    ap.add_argument("--frames", action="store_true", help="add the two C7O2H10 frames")
    ap.add_argument("--max-steps", type=int, default=20,
                    help="refinement steps per case (enough to pass SCF_START_TOL)")
    ap.add_argument("--target", type=float, default=0.10, help="NMAE %% to time both routes to")
    ap.add_argument("--methods", nargs="+", default=["pulay"],
                    help="refinement methods (rhosr.dft.refine.METHODS); the first is reported")
    ap.add_argument("--mixing", type=float, default=REFINE_MIXING, help="Pulay mixing beta")
    ap.add_argument("--start-method", default=SCF_START_METHOD,
                    help="the method whose iterates start the SCF (one of --methods)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--phase", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.start_method not in args.methods:
        ap.error(f"--start-method {args.start_method} is not among --methods {args.methods}")
    if args.phase == "physics":
        rows = json.loads((args.folder / "cases.json").read_text())
        results = []
        for row in rows:
            results.append(physics_case(row, args.folder, args.max_steps, args.methods, args.mixing,
                                        args.start_method))
            print(f"{row['key']}: done", flush=True)
        (args.folder / "results.json").write_text(json.dumps(results))
        return 0
    rows = cases(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        predict_all(rows, folder)
        (folder / "cases.json").write_text(json.dumps(rows))
        cmd = [sys.executable, __file__, "--phase", "physics", "--folder", str(folder),
               "--max-steps", str(args.max_steps), "--mixing", str(args.mixing),
               "--start-method", args.start_method, "--methods", *args.methods]
        subprocess.run(cmd, check=True)
        results = json.loads((folder / "results.json").read_text())
    report(results, args.target)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
