"""Inference strategies: functions over any callable ``net(coarse, fine) -> fine`` — the whole
box, tiles with periodic halos under a memory budget, the average over the 48 cube symmetries."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from rhosr.core.density import nmae
from rhosr.core.grid import UPSAMPLE
from rhosr.core.symmetry import CUBE_SYMMETRIES, apply_symmetry, invert_symmetry

#: Fine mesh points per coarse mesh point, per axis.
#: Fraction of the free memory used when ``max_memory_gb`` is not given.
MEMORY_FRACTION = 0.5


def bytes_per_voxel(model) -> float:
    """Rough peak activation memory of a no-grad forward pass, bytes per coarse voxel.

    float32; a few C-channel tensors alive at once plus the circular-padding
    copies; for ``srresnet`` the 8C-channel upsampling tensors dominate.
    """
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "channels", 32)
    up = UPSAMPLE ** 3
    per = 6 * c + (3 * up * c if getattr(cfg, "arch", "") == "srresnet" else 3 * up) + 2 * up + 2
    return 4.0 * per * 1.5


def available_memory_gb(device="cpu") -> float:
    """Free memory on ``device`` (GB): CUDA free memory, psutil, or sysconf."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free / 1e9
    try:
        import psutil

        return psutil.virtual_memory().available / 1e9
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def choose_tile(coarse_mesh, halo: int, per_voxel: float, max_memory_gb: float):
    """Tile edge (coarse voxels) that fits in ``max_memory_gb``, or None for the whole box."""
    mesh = np.asarray(coarse_mesh, dtype=np.int64)
    budget = float(max_memory_gb) * 1e9
    if np.prod(mesh) * per_voxel <= budget:
        return None
    # tiles much smaller than the halo waste most of the work: floor at max(4, halo)
    floor = int(min(max(4, halo), mesh.max()))
    best = floor
    for t in range(floor, int(mesh.max()) + 1):
        window = np.minimum(t, mesh) + 2 * halo
        if np.prod(window.astype(float)) * per_voxel <= budget:
            best = t
        else:
            break
    if np.prod((np.minimum(best, mesh) + 2 * halo).astype(float)) * per_voxel > budget:
        warnings.warn(f"tiles of {best} voxels with a halo of {halo} exceed {max_memory_gb} GB; "
                      "using them anyway", RuntimeWarning, stacklevel=2)
    return best


def _window(start: int, stop: int, halo: int, n: int, factor: int) -> np.ndarray:
    """Periodic (wrapped) indices of [start - halo, stop + halo) on a mesh ``factor`` times finer."""
    return np.arange(factor * (start - halo), factor * (stop + halo)) % (factor * n)


def tiled_apply(fn, sad_coarse: np.ndarray, sad_fine, halo: int, tile) -> np.ndarray:
    """Apply ``fn(coarse, fine) -> fine`` tile by tile over a periodic box.

    Parameters
    ----------
    fn : callable
        ``fn(coarse (x, y, z), fine (2x, 2y, 2z) or None) -> (2x, 2y, 2z)``
        numpy arrays, periodic over its input (circular padding).
    sad_coarse : (X, Y, Z) array
    sad_fine : (2X, 2Y, 2Z) array or None
    halo : int
        Half-width of ``fn``'s receptive field, coarse voxels.
    tile : int, 3 ints, or None
        Interior edge per tile, coarse voxels; None: the whole box at once.

    Each tile is padded with ``halo`` coarse voxels (wrapped around the box),
    passed to ``fn``, and its interior (twice the tile on the fine mesh) is
    written into the output: identical to ``fn`` on the whole box when ``fn``
    only looks ``halo`` voxels away.
    """
    coarse = np.asarray(sad_coarse)
    mesh = coarse.shape[-3:]  # a leading axis holds the input channels of a multi-channel net
    if tile is None:
        return np.asarray(fn(coarse, sad_fine))
    tile = (int(tile),) * 3 if np.ndim(tile) == 0 else tuple(int(t) for t in tile)
    if min(tile) < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if all(t >= n for t, n in zip(tile, mesh)):
        return np.asarray(fn(coarse, sad_fine))
    r = UPSAMPLE
    out = None
    starts = [range(0, n, min(t, n)) for t, n in zip(tile, mesh)]
    for sx in starts[0]:
        for sy in starts[1]:
            for sz in starts[2]:
                lo = (sx, sy, sz)
                hi = tuple(min(s + min(t, n), n) for s, t, n in zip(lo, tile, mesh))
                # an axis covered by one tile needs no halo: the box is periodic
                h = [0 if (s == 0 and e == n) else halo for s, e, n in zip(lo, hi, mesh)]
                ic = [_window(s, e, hh, n, 1) for s, e, hh, n in zip(lo, hi, h, mesh)]
                c = coarse[(Ellipsis,) + np.ix_(*ic)]
                f = None
                if sad_fine is not None:
                    iff = [_window(s, e, hh, n, r) for s, e, hh, n in zip(lo, hi, h, mesh)]
                    f = np.asarray(sad_fine)[np.ix_(*iff)]
                y = np.asarray(fn(c, f))
                if out is None:
                    out = np.empty(tuple(r * n for n in mesh), dtype=y.dtype)
                crop = tuple(slice(r * hh, r * hh + r * (e - s)) for s, e, hh in zip(lo, hi, h))
                dest = tuple(slice(r * s, r * e) for s, e in zip(lo, hi))
                out[dest] = y[crop]
    return out


def symmetrized_apply(fn, sad_coarse: np.ndarray, sad_fine, ops=None):
    """Mean of ``op⁻¹ fn(op coarse, op fine)`` over cube symmetries, and the members.

    Returns ``(mean float64 array, spread_percent)`` with spread = mean over
    members of NMAE(member, mean) in %.  With ``ops`` the full group (default:
    the 48 cube symmetries) the mean is equivariant: transforming the input by
    any op only permutes the members.
    """
    ops = CUBE_SYMMETRIES if ops is None else ops
    members = []
    total = None
    for op in ops:
        c = apply_symmetry(np.asarray(sad_coarse), op)
        f = None if sad_fine is None else apply_symmetry(np.asarray(sad_fine), op)
        y = apply_symmetry(np.asarray(fn(c, f)), invert_symmetry(op))
        members.append(y.astype(np.float32))
        total = y.astype(np.float64) if total is None else total + y
    mean = total / len(members)
    spread = 100.0 * float(np.mean([nmae(m, mean) for m in members]))
    return mean, spread
