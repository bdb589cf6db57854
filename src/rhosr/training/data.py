"""Training samples from a store: SAD input, DFT target, cube symmetries, shifts, crops.

Per molecule a sample holds (torch tensors, float32 unless stated)::

    sad_coarse   (1, X, Y, Z)        SAD on the coarse mesh, e/bohr³
    sad_fine     (1, 2X, 2Y, 2Z)     SAD on the fine mesh, e/bohr³
    target       (1, 2X, 2Y, 2Z)     DFT valence density (record.rho_dft), e/bohr³
    n_electrons  ()  float64         valence electrons of the molecule
    dv_fine      ()  float64         fine-mesh voxel volume, bohr³
    interior     (3, 2) int64        fine-mesh [start, stop) per axis on which a loss
                                     may be taken (the whole mesh for whole boxes)
    whole        bool                True for a whole periodic box (no crop)
    id           str

The SAD is computed from the record (:func:`rhosr.core.sad.sad_density` on the fine
grid); the coarse SAD is its every second point (the SAD is a continuous
density, so this equals the SAD evaluated on the coarse grid).

Augmentations move input and target together and are exact symmetries of the
periodic problem:

* the 48 symmetries of the cube, :data:`CUBE_SYMMETRIES`: an axis permutation
  followed by reflections.  A reflection of an axis with n points maps index
  ``i -> (n - i) mod n`` (coordinate ``x -> (L - x) mod L``), on the coarse and
  on the fine mesh alike, so coarse point i and fine point 2i stay together;
* periodic shifts by whole coarse steps (s coarse = 2s fine points).

Crops (for boxes too large to train on whole) take a coarse window of
``crop + 2*halo`` points per axis (periodic wrap at the box edge) and the
matching fine window; only the fine points of the central ``crop`` coarse
points (``interior``) have outputs that see no wrapped-around input when
``halo`` is at least the model's receptive field.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Sequence

import numpy as np
import torch

from rhosr.core.grid import UPSAMPLE
from rhosr.core.molecule import split_of_id
from rhosr.core.sad import sad_density

#: Identity permutation and no reflection.
IDENTITY = ((0, 1, 2), (False, False, False))

#: The 48 symmetries of the cube as ``(perm, flips)``: new axis ``a`` is old axis
#: ``perm[a]``, then new axis ``a`` is reflected if ``flips[a]``.  Identity first.
CUBE_SYMMETRIES: tuple = tuple(
    (perm, flips)
    for perm in itertools.permutations((0, 1, 2))
    for flips in itertools.product((False, True), repeat=3)
)


def _check_op(op):
    perm, flips = op
    perm = tuple(int(p) for p in perm)
    flips = tuple(bool(f) for f in flips)
    if sorted(perm) != [0, 1, 2] or len(flips) != 3:
        raise ValueError(f"not a cube symmetry: {op!r}")
    return perm, flips


# --------------------------------------------------------------------------
# array functions (numpy arrays or torch tensors; the last 3 axes are x, y, z)


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
    if isinstance(array, torch.Tensor):
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
    if isinstance(array, torch.Tensor):
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
        if isinstance(out, torch.Tensor):
            out = torch.index_select(out, nd - 3 + a, torch.as_tensor(idx, device=out.device))
        else:
            out = np.take(out, idx, axis=nd - 3 + a)
    return out


# --------------------------------------------------------------------------
# train / validation selection


def hashed_fraction(mol_id: str) -> float:
    """A deterministic number in [0, 1) from an id (SHA-1 based)."""
    h = hashlib.sha1(str(mol_id).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def role_of_id(mol_id: str, val_fraction: float = 0.1) -> str:
    """'train', 'val' or 'test' for one record id.

    QM9 ids follow the standard split (:func:`rhosr.core.molecule.split_of_id`);
    other ids are 'val' with probability ``val_fraction``, decided by a hash of
    the id (deterministic, independent of the store's other ids), else 'train'.
    """
    split = split_of_id(mol_id)
    if split is not None:
        return split
    return "val" if hashed_fraction(mol_id) < float(val_fraction) else "train"


def select_ids(ids: Sequence[str], role: str, val_fraction: float = 0.1) -> list[str]:
    """The ids whose :func:`role_of_id` is ``role`` ('train', 'val', 'test'), order kept."""
    if role not in ("train", "val", "test"):
        raise ValueError(f"role must be 'train', 'val' or 'test', not {role!r}")
    return [i for i in ids if role_of_id(i, val_fraction) == role]


# --------------------------------------------------------------------------
# the dataset


class DensityDataset(torch.utils.data.Dataset):
    """Molecules of a store as training samples (see the module docstring).

    Parameters
    ----------
    store : rhosr.labels.store.Store
    ids : sequence of str, optional
        Record ids (default: all of the store).
    augment : bool
        Random cube symmetry and coarse shift per item (seeded).
    seed : int
        Seed of the augmentations and crop origins of ``__getitem__``: item
        ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``.
    cache : bool or "all"
        True: keep the fine SAD of molecules in memory (float32);
        "all": also the DFT target; False: recompute every time.
    cache_bytes : int
        Stop adding to the cache once it holds this many bytes (what is in
        stays; later molecules are recomputed on every use).
    crop : int or 3 ints, optional
        Interior size in coarse points; None: whole boxes.  Axes whose mesh is
        not larger than ``crop + 2*halo`` are taken whole.
    halo : int
        Coarse points added on each side of a crop (use the model's
        receptive field).
    sad_variant : str
        Passed to :func:`rhosr.core.sad.sad_density`.
    inputs : str
        The network's input (``ModelConfig.inputs``): "sad", or "sad+elements", for
        which ``sad_coarse`` has 7 channels (:func:`rhosr.core.sad.network_input`, evaluated
        per sample on the coarse mesh and transformed like the SAD).
    """

    def __init__(self, store, ids=None, augment: bool = False, seed: int = 0, cache=True,
                 crop=None, halo: int = 0, sad_variant: str = "paper",
                 cache_bytes: int = 4 << 30, inputs: str = "sad"):
        self.store = store
        self.inputs = inputs
        self.ids = list(store.ids() if ids is None else ids)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.epoch = 0
        if cache not in (True, False, "all"):
            raise ValueError(f"cache must be True, False or 'all', got {cache!r}")
        self.cache = cache
        if crop is not None:
            crop = (int(crop),) * 3 if np.ndim(crop) == 0 else tuple(int(c) for c in crop)
            if len(crop) != 3 or min(crop) < 1:
                raise ValueError(f"crop must be a positive int or 3 of them, got {crop!r}")
        self.crop = crop
        self.halo = int(halo)
        if self.halo < 0:
            raise ValueError("halo must be >= 0")
        self.sad_variant = sad_variant
        self._cache: dict[str, dict] = {}
        self.cache_bytes = int(cache_bytes)
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws of ``__getitem__`` (as DistributedSampler)."""
        self.epoch = int(epoch)

    # ---- raw arrays

    def arrays(self, index: int) -> dict:
        """Un-augmented numpy arrays of item ``index``: sad_fine, target (float32),
        n_electrons, dv_fine, grid (fine), id, symbols, positions, charge."""
        mol_id = self.ids[index]
        hit = self._cache.get(mol_id)
        if hit is not None and (self.cache != "all" or "target" in hit):
            out = dict(hit)
            if "target" not in out:
                out["target"] = np.asarray(self.store.read_density(mol_id), dtype=np.float32)
            return out
        rec = self.store.read(mol_id)
        grid = rec.grid
        if any(n % UPSAMPLE for n in grid.mesh):
            raise ValueError(f"{mol_id}: fine mesh {grid.mesh} is not divisible by {UPSAMPLE}")
        sad = sad_density(rec.symbols, rec.positions, grid, charge=rec.charge,
                          variant=self.sad_variant).astype(np.float32)
        out = {
            "id": mol_id, "grid": grid, "sad_fine": sad,
            "n_electrons": float(rec.nelectron), "dv_fine": grid.dv,
            "symbols": tuple(rec.symbols), "positions": np.asarray(rec.positions),
            "charge": int(rec.charge),
        }
        nbytes = sad.nbytes * (2 if self.cache == "all" else 1)
        if self.cache and self._cached_bytes + nbytes <= self.cache_bytes:
            keep = dict(out)
            if self.cache == "all":
                keep["target"] = np.asarray(rec.rho_dft, dtype=np.float32)
            self._cache[mol_id] = keep
            self._cached_bytes += nbytes
        out["target"] = np.asarray(rec.rho_dft, dtype=np.float32)
        return out

    # ---- samples

    def sample(self, index: int, op=IDENTITY, shift=(0, 0, 0), crop_start=None,
               arrays=None) -> dict:
        """Item ``index`` transformed by cube symmetry ``op``, then the coarse
        ``shift`` (after ``op``), then cropped at ``crop_start`` (coarse
        index of the crop's interior on the transformed mesh; needs ``crop``).
        ``arrays``: the item's :meth:`arrays` if already at hand."""
        a = self.arrays(index) if arrays is None else arrays
        sad_f, target = a["sad_fine"], a["target"]
        if op != IDENTITY:
            sad_f, target = apply_symmetry(sad_f, op), apply_symmetry(target, op)
        if any(shift):
            sad_f = apply_shift(sad_f, shift, UPSAMPLE)
            target = apply_shift(target, shift, UPSAMPLE)
        fine_mesh = sad_f.shape
        coarse_mesh = tuple(n // UPSAMPLE for n in fine_mesh)
        interior = np.array([[0, n] for n in fine_mesh], dtype=np.int64)
        whole = True
        if self.crop is not None:
            start, size, interior = self.crop_window(coarse_mesh, crop_start)
            if any(sz != n for sz, n in zip(size, coarse_mesh)):
                whole = False
                sad_f = periodic_window(sad_f, start, size, UPSAMPLE)
                target = periodic_window(target, start, size, UPSAMPLE)
        sad_f = np.ascontiguousarray(sad_f, dtype=np.float32)
        target = np.ascontiguousarray(target, dtype=np.float32)
        sad_c = np.ascontiguousarray(sad_f[::UPSAMPLE, ::UPSAMPLE, ::UPSAMPLE])[None]
        if self.inputs != "sad":
            parts = self._element_parts(a, op, shift, None if whole else (start, size))
            sad_c = np.ascontiguousarray(np.concatenate([sad_c, parts]))
        return {
            "sad_coarse": torch.from_numpy(sad_c),
            "sad_fine": torch.from_numpy(sad_f)[None],
            "target": torch.from_numpy(target)[None],
            "n_electrons": torch.tensor(a["n_electrons"], dtype=torch.float64),
            "dv_fine": torch.tensor(a["dv_fine"], dtype=torch.float64),
            "interior": torch.from_numpy(interior),
            "whole": whole,
            "id": a["id"],
        }

    def _element_parts(self, a, op, shift, window):
        """The element channels of item arrays ``a`` on the coarse mesh, transformed by
        ``op`` and ``shift`` and cut to ``window`` (start, size) as the SAD is."""
        from rhosr.core.sad import element_parts

        parts = element_parts(a["symbols"], a["positions"], a["grid"].coarsen(), self.sad_variant)
        if op != IDENTITY:
            parts = apply_symmetry(parts, op)
        if any(shift):
            parts = apply_shift(parts, shift, 1)
        if window is not None:
            parts = periodic_window(parts, window[0], window[1], 1)
        return parts

    def crop_window(self, coarse_mesh, crop_start=None, rng=None):
        """``(start, size, interior)`` of a crop: window start and size in
        coarse points (start may be negative: periodic), interior as fine
        [start, stop) per axis within the window.  ``crop_start`` is the
        interior's first coarse index per axis (random from ``rng`` if None)."""
        if self.crop is None:
            raise ValueError("this dataset takes whole boxes (crop=None)")
        start, size, interior = [], [], []
        for a, n in enumerate(coarse_mesh):
            c = self.crop[a]
            if c + 2 * self.halo >= n:
                start.append(0)
                size.append(n)
                interior.append([0, n * UPSAMPLE])
                continue
            if crop_start is not None:
                s0 = int(crop_start[a]) % n
            elif rng is not None:
                s0 = int(rng.integers(n))
            else:
                s0 = 0
            start.append(s0 - self.halo)
            size.append(c + 2 * self.halo)
            interior.append([self.halo * UPSAMPLE, (self.halo + c) * UPSAMPLE])
        return start, size, np.array(interior, dtype=np.int64)

    def random_sample(self, index: int, rng: np.random.Generator) -> dict:
        """Item ``index`` with augmentation and crop origin drawn from ``rng``
        (no augmentation if ``augment`` is False)."""
        a = self.arrays(index)
        coarse_mesh = tuple(n // UPSAMPLE for n in a["grid"].mesh)
        op, shift = IDENTITY, (0, 0, 0)
        if self.augment:
            op, shift = random_augmentation(rng, coarse_mesh)
        crop_start = None
        if self.crop is not None:
            crop_start = [int(rng.integers(coarse_mesh[p])) for p in op[0]]
        return self.sample(index, op, shift, crop_start, arrays=a)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return self.random_sample(int(index), rng)

