"""``rhosr energy`` and ``rhosr scf``: physics from a predicted density (rhosr.dft.physics)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rhosr.cli.common import STRUCTURE_HELP, Formatter, add_structure_options
from rhosr.errors import InputError


def _add_common(p, tol=None, max_steps=None) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=STRUCTURE_HELP)
    p.add_argument("--model", default="default", help="'default' (bundled) or a model file")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    add_refine_options(p, tol, max_steps)
    add_structure_options(p)


def add_refine_options(p, tol=None, max_steps=None) -> None:
    """--tol, --max-steps, --steps, --mixing and --smearing of the refinement
    (rhosr.dft.refine; the defaults its REFINE_TOL and REFINE_MAX_STEPS unless given)."""
    from rhosr.dft.refine import REFINE_MAX_STEPS, REFINE_MIXING, REFINE_TOL

    tol = REFINE_TOL if tol is None else tol
    p.add_argument("--tol", type=float, default=tol,
                   help=f"stop when the density changes by at most this much in a step, "
                        f"||rho_out - rho_in||_1 / N ({tol:g}; 1e-3 gives ~0.03 %% NMAE)")
    max_steps = REFINE_MAX_STEPS if max_steps is None else max_steps
    p.add_argument("--max-steps", type=int, default=max_steps,
                   help="at most this many steps; not converged by then: said in the summary "
                        "and JSON (refine_converged false), the best iterate returned")
    p.add_argument("--steps", type=int, default=None,
                   help="exactly this many steps, whatever the residual (instead of --tol)")
    p.add_argument("--mixing", type=float, default=REFINE_MIXING,
                   help="Pulay mixing: the next input is the Pulay combination of the inputs "
                        "plus this times their residuals (default %(default)s, chosen on "
                        "validation molecules)")
    p.add_argument("--smearing", type=float, default=None, metavar="HARTREE",
                   help="Fermi smearing width of the occupations, e.g. 0.01 for large charged "
                        "molecules with a small gap (default: aufbau)")
    p.add_argument("--full-steps", action="store_true",
                   help="every step at the labels' multigrid precision (by default most steps "
                        "are cheap: a looser task list, corrected by the last full step; about "
                        "half the time per step, the Harris energy ~0.03 mHa less exact)")


def loose_precision(args):
    """The cheap steps' multigrid precision for ``refine(loose=...)``: None with
    --full-steps."""
    from rhosr.dft.refine import REFINE_LOOSE

    return None if getattr(args, "full_steps", False) else REFINE_LOOSE


def add_energy(sub) -> None:
    p = sub.add_parser(
        "energy", formatter_class=Formatter,
        help="energies and dipole from the predicted density, refined to --tol",
        description="Predict the density and refine it by Kohn-Sham iterations at the labels' "
                    "level of theory (PySCF, PBE, gth-tzv2p, multigrid; Pulay mixing of "
                    "densities) until --tol, as `rhosr predict --refine` does. Per molecule: the "
                    "Harris-Foulkes energy of the last input density (Hartree; reported because "
                    "it is stationary: its error is second order in the density's, ~0.003 mHa "
                    "at the default --tol), the Kohn-Sham energy E_KS[D] of the last density "
                    "matrix, the dipole about the box centre (debye; of the prediction, or of the "
                    "refined density with --refine), electrons, steps, seconds. --steps 1 "
                    "--mixing 1: the single Kohn-Sham step of the prediction (its Harris energy). "
                    "Closed shells only.")
    _add_common(p)
    p.add_argument("--refine", action="store_true",
                   help="report the dipole of the refined density (evaluated point-wise)")
    p.add_argument("--density", default=None, metavar="FILE",
                   help="start from this density file (cube, npy + json, h5; one input, on the "
                        "input's fine mesh) instead of the prediction")


def add_scf(sub) -> None:
    from rhosr.dft.refine import SCF_START_MAX_STEPS, SCF_START_TOL

    p = sub.add_parser(
        "scf", formatter_class=Formatter,
        help="the labels' PySCF SCF from a chosen start: cycles, seconds, energy",
        description="Run the SCF of the labels' level of theory from --guess: 'rhosr' (the "
                    "density matrix of the predicted density refined to --tol, by default tight "
                    "enough that PySCF accepts it after one cycle; its seconds include the "
                    "prediction and the refinement steps), or PySCF's 'atom' or 'minao'. This "
                    "refinement mixes density matrices with a Newton step (the Hartree response "
                    "in a fitting basis, rhosr.dft.newton), about half the steps of Pulay mixing "
                    "of densities, which runs where it cannot (fractional occupations, "
                    "molecules too large for its integrals). An SCF that does not converge in "
                    "--max-cycle is reported as such.")
    _add_common(p, tol=SCF_START_TOL, max_steps=SCF_START_MAX_STEPS)
    p.add_argument("--guess", choices=("rhosr", "atom", "minao"), default="rhosr",
                   help="initial guess")
    p.add_argument("--conv-tol", type=float, default=1e-10, metavar="HARTREE",
                   help="SCF energy convergence")
    p.add_argument("--max-cycle", type=int, default=100, help="SCF cycle limit")


def _molecules(args):
    from rhosr.core.grid import box_for
    from rhosr.core.sources import load_molecules

    mols = [m for spec in args.inputs for m in load_molecules(
        spec, charge=args.charge, spin=args.spin, max_voxels=args.max_voxels)]
    for mol in mols:
        if mol.spin:
            raise InputError(f"{mol.id}: spin 2S={mol.spin}: the Kohn-Sham step needs a closed shell")
    return [(mol, *box_for(mol.positions)[1:]) for mol in mols]


def _densities(args, placed):
    """Yield (mol, fine grid, positions, density values, prediction seconds)."""
    from rhosr.cli.common import model_file

    if getattr(args, "density", None) is not None:
        if len(placed) != 1:
            raise InputError(f"--density {args.density}: gives the density of one input, "
                             f"not {len(placed)}")
        yield (*placed[0], _read_density(args.density, placed[0][1]), 0.0)
        return
    from rhosr.inference.predict import predict_molecule, resolve_model

    model = args.model if args.model == "default" else model_file(args.model, "--model")
    net, name = resolve_model(model, "cpu")
    for mol, fine, pos in placed:
        dens = predict_molecule(mol, net, model_name=name, device="cpu")
        yield mol, fine, pos, dens.values, float(dens.meta["seconds"])


def _read_density(path, fine):
    from rhosr.core.density import read_density

    try:
        dens = read_density(path)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"--density {path}: unreadable ({' '.join(str(err).split())})") from None
    if tuple(dens.grid.mesh) != tuple(fine.mesh) or \
            max(abs(a - b) for a, b in zip(dens.grid.cell, fine.cell)) > 1e-4:
        raise InputError(f"--density {path}: mesh {tuple(dens.grid.mesh)} and cell do not match "
                         f"the structure's box (fine mesh {tuple(fine.mesh)})")
    return dens.values


def _write_json(path, rows) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


def refine_budget(args) -> tuple:
    """(tol, max_steps) of the refinement from the options of :func:`add_refine_options`:
    --steps N is exactly N steps (tol 0), else --tol and --max-steps; checks --smearing."""
    if args.smearing is not None and not args.smearing > 0:
        raise InputError(f"--smearing must be a positive width in Hartree, not {args.smearing}")
    if args.steps is not None:
        if args.steps < 1:
            raise InputError(f"--steps must be >= 1, not {args.steps}")
        return 0.0, args.steps
    return args.tol, args.max_steps


def run_energy(args) -> int:
    from rhosr.dft.refine import refine, summary

    tol, steps = refine_budget(args)
    rows = []
    for mol, fine, pos, rho, t_pred in _densities(args, _molecules(args)):
        res = refine(mol.symbols, pos, fine, rho, charge=mol.charge, smearing=args.smearing,
                     tol=tol, max_steps=steps, mixing=args.mixing, pointwise=args.refine,
                     loose=loose_precision(args),
                     energy_ks=True)
        row = {"id": mol.id, **summary(res), "prediction_seconds": t_pred}
        row["seconds"] += t_pred
        rows.append(row)
        d = row["dipole_debye"]
        conv = "" if res.converged or args.steps is not None else " (NOT converged: best iterate)"
        print(f"{mol.id}: E_Harris {row['energy_harris_hartree']:.6f} Ha, E_KS[D] "
              f"{row['energy_ks_hartree']:.6f} Ha after {res.steps} step(s){conv}, dipole "
              f"({d[0]:+.3f}, {d[1]:+.3f}, {d[2]:+.3f}) |{row['dipole_norm_debye']:.3f}| D "
              f"({row['dipole_of']}), {row['electrons']:.4f} electrons, {row['seconds']:.2f} s")
    _write_json(args.json, rows)
    return 0


def run_scf(args) -> int:
    from rhosr.dft import physics
    from rhosr.dft.refine import scf_from_density

    if not args.conv_tol > 0:
        raise InputError(f"--conv-tol must be positive, not {args.conv_tol}")
    tol, steps = refine_budget(args)
    placed = _molecules(args)
    rows = []
    for mol, fine, pos, rho, t_pred in _scf_inputs(args, placed):
        t0 = time.perf_counter()
        kw = dict(charge=mol.charge, conv_tol=args.conv_tol, max_cycle=args.max_cycle,
                  smearing=args.smearing)
        if rho is not None:
            ref, res = scf_from_density(mol.symbols, pos, fine, rho, tol=tol, max_steps=steps,
                                        mixing=args.mixing, loose=loose_precision(args), **kw)
            extra = {"refine_steps": ref.steps, "refine_converged": ref.converged,
                     "refine_seconds": ref.seconds, "prediction_seconds": t_pred}
        else:
            res = physics.run_scf(mol.symbols, pos, fine, guess=args.guess, **kw)
            extra = {}
        wall = time.perf_counter() - t0 + t_pred
        row = {"id": mol.id, "guess": args.guess, "cycles": res.cycles, "converged": res.converged,
               "energy_hartree": res.energy, "seconds": wall, "scf_seconds": res.seconds, **extra}
        rows.append(row)
        start = f" after {extra['refine_steps']} refinement steps" if extra else ""
        print(f"{mol.id}: guess {args.guess}{start}, {res.cycles} SCF cycles, "
              f"{'converged' if res.converged else 'NOT converged'}, E {res.energy:.10f} Ha, "
              f"{wall:.2f} s", file=sys.stdout)
    _write_json(args.json, rows)
    return 0 if all(r["converged"] for r in rows) else 1


def _scf_inputs(args, placed):
    if args.guess == "rhosr":
        yield from _densities(args, placed)
        return
    for mol, fine, pos in placed:
        yield mol, fine, pos, None, 0.0
