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
    copies; for ``srresnet`` the 8C-channel upsampling tensors dominate; for
    ``sad-unet`` (measured: ~420 B at C = 16 on boxes of 96³) the full-resolution
    level and the pixel-shuffled output.
    """
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "channels", 32)
    up = UPSAMPLE ** 3
    arch = getattr(cfg, "arch", "")
    if arch == "sad-unet":
        return 4.0 * (5 * c + 3 * up + 2) * 1.1
    per = 6 * c + (3 * up * c if arch == "srresnet" else 3 * up) + 2 * up + 2
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


def _ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def tile_options(n: int, halo: int, stride: int, most: int = 16):
    """(pieces, interior edge, window edge) per way of cutting an axis of ``n`` coarse
    voxels into aligned tiles: the whole axis (no halo: the box is periodic), or interiors
    that are multiples of ``stride`` with ``halo`` on each side."""
    yield 1, n, n
    for k in range(2, most + 1):
        edge = _ceil_div(_ceil_div(n, k), stride) * stride
        pieces = _ceil_div(n, edge)
        if pieces == k and edge < n:
            yield k, edge, edge + 2 * halo


def choose_tile(coarse_mesh, halo: int, per_voxel: float, max_memory_gb: float, stride: int = 1):
    """Interior edges per axis (coarse voxels, multiples of ``stride``) of the tiling that
    fits its window in ``max_memory_gb`` with the fewest voxels computed in all, or None
    when the whole box fits.  When nothing fits, the smallest windows with a warning."""
    mesh = [int(n) for n in coarse_mesh]
    budget = float(max_memory_gb) * 1e9
    if np.prod(mesh, dtype=float) * per_voxel <= budget:
        return None
    best, smallest = None, None
    options = [list(tile_options(n, halo, stride)) for n in mesh]
    for ox in options[0]:
        for oy in options[1]:
            for oz in options[2]:
                window = float(ox[2]) * oy[2] * oz[2]
                work = window * ox[0] * oy[0] * oz[0]
                key = (work, window)
                if window * per_voxel <= budget and (best is None or key < best[0]):
                    best = (key, (ox[1], oy[1], oz[1]))
                if smallest is None or (window, work) < smallest[0]:
                    smallest = ((window, work), (ox[1], oy[1], oz[1]))
    if best is None:
        whole = smallest[1] == tuple(mesh)
        warnings.warn(f"the box needs more than {max_memory_gb:.2f} GB even in tiles "
                      + ("(no tile with its halo is smaller than the box); running it whole"
                         if whole else f"of {smallest[1]} coarse voxels with a halo of {halo}; "
                         "using them anyway"), RuntimeWarning, stacklevel=2)
        return None if whole else smallest[1]
    return best[1]


def _window(start: int, stop: int, halo: int, n: int, factor: int) -> np.ndarray:
    """Periodic (wrapped) indices of [start - halo, stop + halo) on a mesh ``factor`` times finer."""
    return np.arange(factor * (start - halo), factor * (stop + halo)) % (factor * n)


def tile_starts(mesh, tile) -> list[tuple]:
    """Origins of the tiles (coarse voxels), x slowest."""
    starts = [range(0, n, min(t, n)) for t, n in zip(tile, mesh)]
    return [(sx, sy, sz) for sx in starts[0] for sy in starts[1] for sz in starts[2]]


def tiled_apply(fn, sad_coarse: np.ndarray, sad_fine, halo: int, tile, out=None,
                progress: bool = False) -> np.ndarray:
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
    out : (2X, 2Y, 2Z) array, optional
        Where to write the result; may be ``sad_fine`` itself when ``fn`` reads the fine
        input point by point (the SAD-correcting networks): each tile reads its window
        before writing its interior, and interiors never overlap, so an interior still
        holds its input when it is read and a halo's values (input or a neighbour's
        output) reach only the discarded halo of the output.
    progress : show a progress bar over the tiles (after 3 s)

    Each tile is padded with ``halo`` coarse voxels (wrapped around the box),
    passed to ``fn``, and its interior (twice the tile on the fine mesh) is
    written into the output: identical to ``fn`` on the whole box when ``fn``
    only looks ``halo`` voxels away and is equivariant under shifts by the
    tile origins (multiples of a strided network's total stride).
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
    starts = tile_starts(mesh, tile)
    if progress and len(starts) > 1:
        from tqdm import tqdm

        # shown only once the box has taken more than a few seconds
        starts = tqdm(starts, desc="tiles", unit="tile", leave=False, delay=3.0)
    for lo in starts:
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
