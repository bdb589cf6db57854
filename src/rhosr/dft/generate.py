"""Many molecules → reference labels in a store.

Work runs in local processes (``workers``; PySCF's threads are split across
them) or on an existing ``dask.distributed`` cluster (``scheduler``).  The
calling process is the only writer: it writes each record as its result
arrives, atomically, so a killed run loses only the molecules in flight, and
running the same command again skips the finished ids.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rhosr._version import __version__
from rhosr.core.grid import box_for
from rhosr.core.molecule import DEFAULT_MAX_VOXELS, Molecule
from rhosr.core.sources import load_molecules
from rhosr.dft.isolation import die_with_parent, thread_limit
from rhosr.dft.refine import SCF_START_MAX_STEPS, SCF_START_METHOD, SCF_START_TOL, refine
from rhosr.dft.scf import level_of_theory, run_dft
from rhosr.errors import InputError
from rhosr.labels.store import Record, Store


@dataclass
class Summary:
    requested: int = 0
    done: int = 0
    failed: dict = field(default_factory=dict)  # id -> reason
    skipped: int = 0  # already in the store (done, or failed before)
    missing: int = 0  # QM9 indices that qm9pack lacks
    seconds: list = field(default_factory=list)  # per finished molecule
    timings: dict = field(default_factory=lambda: {"scf": 0.0, "density": 0.0, "io": 0.0})
    wall: float = 0.0

    @property
    def mean_seconds(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("nan")

    @property
    def per_hour(self) -> float:
        n = self.done + len(self.failed)
        return 3600.0 * n / self.wall if self.wall > 0 and n else float("nan")

    def lines(self) -> list[str]:
        out = [
            f"done {self.done}, failed {len(self.failed)}, skipped {self.skipped} "
            f"(already in the store or a --skip-in bank), missing {self.missing} (not in qm9pack)",
        ]
        if self.seconds:
            out.append(
                f"mean {self.mean_seconds:.1f} s per molecule (one worker), "
                f"wall {self.wall:.1f} s, {self.per_hour:.0f} molecules/hour"
            )
        for mol_id, reason in sorted(self.failed.items()):
            out.append(f"failed {mol_id}: {reason}")
        return out


def collect(
    specs: Sequence[str],
    charge: int | None = None,
    spin: int | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> tuple[list[Molecule], int]:
    """Expand structure arguments into validated molecules (unique ids).

    Returns the molecules and the number of QM9 indices that qm9pack lacks.
    Raises :class:`InputError` before anything is computed or written.
    """
    missing = []
    mols: list[Molecule] = []
    seen = set()
    for spec in specs:
        for mol in load_molecules(spec, charge=charge, spin=spin, max_voxels=max_voxels,
                                  on_missing=missing.append):
            if mol.id in seen:
                continue
            seen.add(mol.id)
            mols.append(mol)
    return mols, len(missing)


def _step_logger(mol_id: str):
    """A :func:`rhosr.dft.refine.refine` callback printing each step to stderr."""
    def log(step, mo_coeff, mo_occ, row):
        print(f"{mol_id}: refinement step {step}: residual {row['residual']:.3e}, "
              f"E_Harris {row['energy']:.8f} Ha, {row['seconds']:.1f} s", file=sys.stderr,
              flush=True)
    return log


def _guess_start(mol, fine, pos, rho, smearing, threads, verbose=False):
    """(start or None, seconds, how): D of the prediction refined to SCF_START_TOL
    (:func:`rhosr.dft.refine.refine`) with its potential (:class:`rhosr.dft.start.SCFStart`);
    None where it cannot run (open shell) or fails, so
    that the SCF starts from 'minao' instead.  ``verbose`` prints every step."""
    if mol.spin:
        return None, 0.0, "minao"
    t0 = time.perf_counter()
    try:
        with thread_limit(threads):
            res = refine(mol.symbols, pos, fine, rho, charge=mol.charge, smearing=smearing,
                         tol=SCF_START_TOL, max_steps=SCF_START_MAX_STEPS,
                         method=SCF_START_METHOD, pointwise=False,
                         handover=True, callback=_step_logger(mol.id) if verbose else None)
    except Exception as err:  # noqa: BLE001 -- any trouble: the plain guess labels it all the same
        if verbose:
            print(f"{mol.id}: refinement failed ({type(err).__name__}: {err}); SCF from 'minao'",
                  file=sys.stderr, flush=True)
        return None, time.perf_counter() - t0, "minao"
    how = (f"rhosr (the prediction refined by {res.steps} Kohn-Sham steps, "
           f"{res.method} mixing, to a residual {res.residuals[res.best_step - 1]:.1e})")
    return res.start, time.perf_counter() - t0, how


def label_molecule(mol: Molecule, smearing: float | None = None, threads: int | None = None,
                   conv_tol: float = 1e-10, max_cycle: int = 100, guess_density=None,
                   verbose: bool = False):
    """Label one molecule; runs in a worker.  Returns a Record or a failure dict.

    ``guess_density``: a predicted density on the fine mesh; the SCF then starts
    from the density matrix of Kohn–Sham steps on it (``rhosr generate --guess rhosr``).
    ``verbose``: every refinement step (stderr) and PySCF's SCF log (stdout).
    """
    if threads is None:
        threads = _dask_worker_threads()
    coarse, fine, pos = box_for(mol.positions)
    t0 = time.perf_counter()
    dm0, t_guess, how = None, 0.0, "minao"
    if guess_density is not None:
        dm0, t_guess, how = _guess_start(mol, fine, pos, guess_density, smearing, threads, verbose)
    try:
        res = run_dft(mol.symbols, pos, fine, charge=mol.charge, spin=mol.spin,
                      smearing=smearing, conv_tol=conv_tol, max_cycle=max_cycle, threads=threads,
                      density=False, dm0=dm0, verbose=4 if verbose else 0)
    except Exception as err:  # run_dft reports failures itself; this is a last guard
        return {"id": mol.id, "reason": f"{type(err).__name__}: {err}", "source": mol.source,
                "seconds": time.perf_counter() - t0}
    if not res.converged or res.mo_coeff is None:
        return {"id": mol.id, "reason": res.reason or "SCF not converged", "source": mol.source,
                "seconds": res.seconds, "iterations": res.iterations}
    theory = level_of_theory(smearing, conv_tol)
    theory["init_guess"] = how
    return Record(
        id=mol.id, symbols=tuple(mol.symbols), positions=pos, cell=np.asarray(fine.cell),
        fine_mesh=tuple(fine.mesh), charge=mol.charge, spin=mol.spin, source=mol.source,
        energy=res.energy, converged=True, scf_iterations=res.iterations,
        seconds=res.seconds + t_guess, timings={**res.timings, "guess": t_guess},
        level_of_theory=theory,
        rhosr_version=__version__, mo_coeff=res.mo_coeff.astype(np.float32),
        mo_occ=res.mo_occ, mo_spin=res.mo_spin,
    )


def _dask_worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except Exception:  # not inside a dask worker
        return None


def _init_worker(threads: int) -> None:
    """Pool initializer: die with the parent, and keep to our share of threads."""
    die_with_parent()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


@contextmanager
def writer_lock(store: Store):
    """Only one `generate` may write a store at a time."""
    path = store.path / ".writer.lock"
    fh = open(path, "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise InputError(f"{store.path}: another `rhosr generate` is writing this store") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def _results_local(mols, workers, threads, smearing, conv_tol, max_cycle, guess_of=None,
                   verbose=False):
    """Results as they finish; at most two molecules per worker are submitted ahead, so
    that predicted guess densities (``guess_of(mol)``) are made just in time."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    queue = iter(mols)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        pending = set()

        def submit_next() -> None:
            mol = next(queue, None)
            if mol is not None:
                guess = guess_of(mol) if guess_of is not None else None
                pending.add(pool.submit(label_molecule, mol, smearing, threads, conv_tol,
                                        max_cycle, guess, verbose))

        for _ in range(2 * workers):
            submit_next()
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    pending.discard(fut)
                    yield fut.result()
                    submit_next()
        finally:
            for fut in pending:
                fut.cancel()


def _results_dask(mols, scheduler, smearing, conv_tol, max_cycle, verbose=False):
    from distributed import Client, as_completed

    client = scheduler if hasattr(scheduler, "submit") else Client(scheduler, timeout=30)
    try:
        futures = client.map(label_molecule, mols, smearing=smearing, conv_tol=conv_tol,
                             max_cycle=max_cycle, verbose=verbose, pure=False)
        source = dict(zip((f.key for f in futures), mols))
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as err:  # the task or its worker died: record it, carry on
                mol = source[fut.key]
                yield {"id": mol.id, "source": mol.source,
                       "reason": f"dask: {type(err).__name__}: {err}"}
    finally:
        if client is not scheduler:
            client.close()


def generate(
    specs: Sequence[str],
    out: str,
    workers: int | None = None,
    scheduler=None,
    charge: int | None = None,
    spin: int | None = None,
    smearing: float | None = None,
    limit: int | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
    retry_failed: bool = False,
    threads: int | None = None,
    conv_tol: float = 1e-10,
    max_cycle: int = 100,
    progress: bool = True,
    skip=(),
    guess="minao",
    verbose: bool = False,
) -> Summary:
    """Label molecules into the store ``out``; see the module docstring.

    ``workers`` defaults to one per core (at most 8).  ``scheduler`` is a dask
    scheduler address (or a ``distributed.Client``); when given, ``workers``
    is ignored.  ``threads`` per worker defaults to
    the machine's cores divided by ``workers``.  Ids in ``skip`` (e.g. a bank's)
    are not labelled; they count as skipped.  ``guess`` "rhosr" starts each
    closed-shell SCF from Kohn–Sham steps on a predicted density (local workers
    only; the converged labels are the same to the SCF tolerance): pass the predictor,
    a function Molecule -> fine-mesh density such as
    :func:`rhosr.inference.predict.density_predictor` (this module never imports torch;
    ``rhosr generate --guess rhosr`` passes the bundled model's).  ``verbose``: every
    refinement step and SCF cycle of every molecule (for large ones).
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}")
    if limit is not None and limit < 0:
        raise InputError(f"--limit must not be negative, not {limit}")
    if smearing is not None and not smearing > 0:
        raise InputError(f"--smearing must be a positive width in Hartree, not {smearing}")
    if guess == "rhosr":
        raise InputError("guess='rhosr': pass the predictor itself, e.g. "
                         "rhosr.inference.predict.density_predictor()")
    if guess != "minao" and not callable(guess):
        raise InputError(f"--guess must be 'minao' or a predictor, not {guess!r}")
    if callable(guess) and scheduler is not None:
        raise InputError("--guess rhosr runs with local workers, not with --scheduler")
    mols, n_missing = collect(specs, charge=charge, spin=spin, max_voxels=max_voxels)
    summary = Summary(requested=len(mols), missing=n_missing)
    store = Store(out, mode="a", meta={"level_of_theory": level_of_theory(smearing)})
    with writer_lock(store):
        store.clean_partial()
        done = set(store.ids())
        failed_before = set() if retry_failed else set(store.failures())
        skip = set(skip)
        todo = [m for m in mols if m.id not in done and m.id not in failed_before
                and m.id not in skip]
        summary.skipped = len(mols) - len(todo)
        if limit is not None:
            todo = todo[:limit]
        if not todo:
            return summary
        ncores = os.cpu_count() or 1
        workers = min(workers, len(todo))
        if threads is None and scheduler is None:
            threads = max(1, ncores // workers)
        if scheduler is not None:
            results = _results_dask(todo, scheduler, smearing, conv_tol, max_cycle, verbose)
        else:
            results = _results_local(todo, workers, threads, smearing, conv_tol, max_cycle,
                                     guess if callable(guess) else None, verbose)
        _write_results(results, store, summary, _progress(len(todo), progress))
    return summary


def _write_results(results, store: Store, summary: Summary, bar) -> None:
    """Write each record (or failure) as it arrives; tally the summary."""
    t0 = time.perf_counter()
    try:
        for res in results:
            if isinstance(res, Record):
                t_io = time.perf_counter()
                store.write(res)
                summary.timings["io"] += time.perf_counter() - t_io
                summary.done += 1
                summary.seconds.append(res.seconds)
                for key in ("scf", "density"):
                    summary.timings[key] += float(res.timings.get(key, 0.0))
            else:
                summary.failed[res["id"]] = res["reason"]
                store.write_failure(res["id"], res)
            bar.update(1)
            bar.set_postfix(done=summary.done, failed=len(summary.failed), refresh=False)
    finally:
        summary.wall = time.perf_counter() - t0
        bar.close()


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="mol", desc="labelling", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)
