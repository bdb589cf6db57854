"""Atomic writes: write a temporary file beside the target, then rename it over.

A reader never sees a half-written file, and a killed writer leaves only a
hidden ``.<name>.*.tmp`` file (which :meth:`rhosr.labels.store.Store.clean_partial`
removes).  ``tempfile.mkstemp`` creates files readable by their owner only; a
store or a model file renamed from it would keep that mode, so the temporary
file gets the mode a plain ``open(path, "w")`` would (0o666 minus the
process umask), and shared stores and models stay readable.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Yield the path of a new, empty temporary file beside ``path`` (same
    folder, so the rename is atomic) to be written by the caller; on normal exit
    it replaces ``path``, on an exception it is removed."""
    folder, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
