"""The one hard rule of the code base, in one place: PySCF and torch never share a process
unguarded.

Importing torch after PySCF loads a second OpenMP runtime (libgomp); PySCF's threaded
kernels then give wrong results (SCF runs that never converge), and limiting threads at
run time does not help.  Every public function of :mod:`rhosr.dft` that runs PySCF is
decorated with :func:`isolated`: in a process where both runtimes are loaded it runs in a
fresh, torch-free interpreter (started once and reused), elsewhere in place.  Code that
needs both a prediction and PySCF (``rhosr predict --refine``, ``rhosr generate --guess
rhosr``) therefore just calls them; nothing else guards."""

from __future__ import annotations

import functools
import os
from contextlib import ExitStack, contextmanager


def mixed_openmp() -> bool:
    """True when two OpenMP runtimes are loaded (PySCF's and torch's libgomp).

    Importing torch after PySCF loads a second libgomp; PySCF's threaded
    kernels then give wrong results (SCF that never converges), and limiting
    threads at run time does not help.  Then :func:`isolated` functions run in a
    fresh process.  ``rhosr generate`` workers never import torch.
    """
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if "libgomp" in line}
    except OSError:  # not Linux
        return False
    return len({os.path.realpath(p) for p in libs}) > 1


_FRESH_POOL = None


def die_with_parent() -> None:
    """Worker initializer: the kernel ends this process when its parent dies (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 -- not Linux: the worker ends when its pipe closes
        pass


def run_in_fresh_process(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a spawned interpreter that has not loaded torch.

    The interpreter is started once per process and reused by later calls (PySCF's
    import and start-up are paid once); it ends with the calling process.
    """
    global _FRESH_POOL
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if _FRESH_POOL is None:
        _FRESH_POOL = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                          initializer=die_with_parent)
    try:
        return _FRESH_POOL.submit(fn, *args, **kwargs).result()
    except BrokenProcessPool:  # the worker died (killed, out of memory): start afresh next time
        _FRESH_POOL = None
        raise


@contextmanager
def thread_limit(threads: int | None):
    """Limit PySCF's OpenMP threads (and BLAS too when threadpoolctl is installed)."""
    if threads is None:
        yield
        return
    from pyscf import lib

    threads = max(1, int(threads))
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # OpenMP only; BLAS keeps its own setting
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads))
        stack.enter_context(lib.with_omp_threads(threads))
        yield


def isolated(fn):
    """Decorator of a module-level function that runs PySCF: in a process with two OpenMP
    runtimes (:func:`mixed_openmp`) the call runs in a fresh interpreter
    (:func:`run_in_fresh_process`), arguments and result pickled; elsewhere in place."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if mixed_openmp():
            return run_in_fresh_process(wrapper, *args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper
