"""The 48 symmetries of the cube and periodic shifts on mesh arrays and positions:
the augmentations of training and the averaging of ``--symmetrize``."""

from __future__ import annotations

import itertools
import sys

import numpy as np

#: The 48 symmetries of the cube as ``(perm, flips)``: new axis ``a`` is old axis
#: ``perm[a]``, then new axis ``a`` is reflected if ``flips[a]``.  Identity first.
CUBE_SYMMETRIES: tuple = tuple(
    (perm, flips)
    for perm in itertools.permutations((0, 1, 2))
    for flips in itertools.product((False, True), repeat=3)
)



def _torch_of(array):
    """The torch module if ``array`` is a torch tensor, else None (core never imports torch:
    a tensor can only arrive where torch is loaded already)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(array, torch.Tensor) else None


#: Identity permutation and no reflection.
IDENTITY = ((0, 1, 2), (False, False, False))


def _check_op(op):
    perm, flips = op
    perm = tuple(int(p) for p in perm)
    flips = tuple(bool(f) for f in flips)
    if sorted(perm) != [0, 1, 2] or len(flips) != 3:
        raise ValueError(f"not a cube symmetry: {op!r}")
    return perm, flips


def apply_symmetry(array, op):
    """Apply a cube symmetry ``op = (perm, flips)`` to the last three axes.

    Parameters
    ----------
    array : numpy array or torch tensor, shape (..., nx, ny, nz)
        Values on a periodic mesh (point i at i*L/n).
    op : (perm, flips)
        An entry of :data:`CUBE_SYMMETRIES`.

    Returns
    -------
    Same type, shape (..., n[perm[0]], n[perm[1]], n[perm[2]]):
    ``out[..., j0, j1, j2] = array[..., i]`` with ``i[perm[a]] = j_a`` reflected
    (``(n - j_a) mod n``) where ``flips[a]``.  Reflections are taken about index 0,
    so the same op on a coarse mesh and on the fine mesh (twice the points) keeps
    coarse point i aligned with fine point 2i.
    """
    perm, flips = _check_op(op)
    nd = array.ndim
    if nd < 3:
        raise ValueError(f"need at least 3 axes, got shape {tuple(array.shape)}")
    lead = list(range(nd - 3))
    order = lead + [nd - 3 + p for p in perm]
    axes = [nd - 3 + a for a, f in enumerate(flips) if f]
    torch = _torch_of(array)
    if torch is not None:
        out = array.permute(*order)
        if axes:
            # (n - i) mod n: reverse, then roll by one so that index 0 stays put
            out = torch.roll(torch.flip(out, axes), shifts=[1] * len(axes), dims=axes)
        return out.contiguous()
    out = np.transpose(np.asarray(array), order)
    if axes:
        out = np.roll(np.flip(out, axes), shift=[1] * len(axes), axis=axes)
    return np.ascontiguousarray(out)


def invert_symmetry(op):
    """The op that undoes ``op``: ``apply_symmetry(apply_symmetry(a, op), invert_symmetry(op)) == a``."""
    perm, flips = _check_op(op)
    inv = [0, 0, 0]
    for a, p in enumerate(perm):
        inv[p] = a
    # out axis a = old axis perm[a] (flipped if flips[a]); to undo, old axis p
    # comes from new axis inv[p] and carries that axis's flip
    return tuple(inv), tuple(flips[inv[p]] for p in range(3))


def apply_shift(array, shift, factor: int = 1):
    """Periodic shift of the last three axes by ``shift * factor`` points.

    ``shift`` is in coarse steps; use ``factor=1`` on the coarse mesh and
    ``factor=2`` on the fine mesh.  The value at point i moves to point
    ``i + shift*factor`` (content moves by +shift, like :func:`numpy.roll`).
    """
    s = [int(v) * int(factor) for v in shift]
    if len(s) != 3:
        raise ValueError(f"shift needs 3 components, got {shift!r}")
    nd = array.ndim
    dims = [nd - 3, nd - 2, nd - 1]
    if not any(s):
        return array
    torch = _torch_of(array)
    if torch is not None:
        return torch.roll(array, shifts=s, dims=dims)
    return np.roll(array, shift=s, axis=dims)


def transform_positions(positions_bohr, cell_bohr, op=IDENTITY, shift=(0, 0, 0),
                        coarse_mesh=None):
    """Atomic positions and cell after a cube symmetry and then a coarse shift.

    Parameters
    ----------
    positions_bohr : (natm, 3) array, bohr, in the periodic box
    cell_bohr : (3,) edge lengths, bohr
    op : (perm, flips)
        Cube symmetry: coordinates and cell edges are permuted (new axis a =
        old axis perm[a]); a reflected axis maps ``x -> (L - x) mod L``.
    shift : 3 ints
        Coarse steps, applied after ``op`` along the new axes.
    coarse_mesh : 3 ints, needed for a non-zero shift
        Coarse mesh *before* the symmetry (it is permuted with the axes).

    Returns
    -------
    positions : (natm, 3) array, bohr, wrapped into [0, L)
    cell : (3,) array, bohr

    Consistent with :func:`apply_symmetry` and :func:`apply_shift` on arrays:
    the SAD of the transformed molecule is the transformed SAD.
    """
    perm, flips = _check_op(op)
    pos = np.asarray(positions_bohr, dtype=np.float64).reshape(-1, 3)[:, list(perm)].copy()
    cell = np.asarray(cell_bohr, dtype=np.float64)[list(perm)].copy()
    for a in range(3):
        if flips[a]:
            pos[:, a] = cell[a] - pos[:, a]
    if any(int(s) for s in shift):
        if coarse_mesh is None:
            raise ValueError("a shift needs coarse_mesh")
        mesh = np.asarray(coarse_mesh, dtype=np.int64)[list(perm)]
        pos = pos + np.asarray(shift, dtype=np.float64) * cell / mesh
    return np.mod(pos, cell), cell


def random_augmentation(rng: np.random.Generator, coarse_mesh, symmetries: bool = True,
                        shifts: bool = True):
    """A random ``(op, shift)``: uniform over the 48 ops and over coarse shifts.

    ``shift`` is drawn on the mesh after the op (its axes permuted)."""
    op = CUBE_SYMMETRIES[int(rng.integers(len(CUBE_SYMMETRIES)))] if symmetries else IDENTITY
    mesh = [int(coarse_mesh[p]) for p in op[0]]
    shift = tuple(int(rng.integers(n)) for n in mesh) if shifts else (0, 0, 0)
    return op, shift


def periodic_window(array, start, size, factor: int = 1):
    """A window of the last three axes, wrapping periodically.

    ``start`` and ``size`` are in coarse points; the window is
    ``[start*factor, (start+size)*factor)`` per axis, taken modulo the mesh.
    """
    out = array
    nd = array.ndim
    for a in range(3):
        n = array.shape[nd - 3 + a]
        idx = (np.arange(int(start[a]) * factor, (int(start[a]) + int(size[a])) * factor) % n)
        torch = _torch_of(out)
        if torch is not None:
            out = torch.index_select(out, nd - 3 + a, torch.as_tensor(idx, device=out.device))
        else:
            out = np.take(out, idx, axis=nd - 3 + a)
    return out


