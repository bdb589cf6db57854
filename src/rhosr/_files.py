"""Temporary files for atomic writes (write, then rename over the target).

``tempfile.mkstemp`` creates files readable by their owner only; a store or a
model file renamed from it would keep that mode.  :func:`mkstemp_public`
gives the temporary file the mode a plain ``open(path, "w")`` would
(0o666 minus the process umask), so shared stores and models stay readable.
"""

from __future__ import annotations

import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def mkstemp_public(path) -> tuple[int, str]:
    """``(fd, tmp_path)`` of a new temporary file beside ``path`` (same folder,
    so ``os.replace(tmp_path, path)`` is atomic), with the usual file mode."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp
