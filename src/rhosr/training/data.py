"""Training samples from a store: SAD input, DFT target, cube symmetries, shifts, crops;
and which molecules of a store train and which validate.

Selection (:func:`training_ids`): QM9 ids follow the standard split and ids that name
their split (``S-val-003``) that split; other ids validate when a hash of the id falls
in ``val_fraction`` (:mod:`rhosr.core.splits`), and all of them train when a separate
validation store is given.  Glob patterns (``ids``, ``val_ids``) narrow either list.

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

import fnmatch

import numpy as np
import torch

from rhosr.core.grid import UPSAMPLE
from rhosr.core.splits import select_ids, split_of_id
from rhosr.core.symmetry import IDENTITY, apply_shift, apply_symmetry, periodic_window, random_augmentation
from rhosr.errors import InputError
from rhosr.nn.inputs import ModelInputs, features

# --------------------------------------------------------------------------
# array functions (numpy arrays or torch tensors; the last 3 axes are x, y, z)


# --------------------------------------------------------------------------
# train / validation selection


def matching_ids(ids, patterns) -> list[str]:
    """The ids that match one of the glob patterns (all ids when ``patterns`` is empty)."""
    if not patterns:
        return list(ids)
    return [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in patterns)]


def split_store(store, val_store, val_fraction) -> tuple[list[str], list[str]]:
    """(training ids, validation ids) of a store: QM9 ids and ids that name their split
    by that split, other ids by a hash (``val_fraction`` validate).  With an explicit
    ``val_store`` every non-QM9 record of ``store`` trains and ``val_store``'s records
    (but its 'test' ones) validate."""
    ids = store.ids()
    if val_store is None:
        return select_ids(ids, "train", val_fraction), select_ids(ids, "val", val_fraction)
    train_ids = [i for i in ids if (split_of_id(i) or "train") == "train"]
    val_ids = [i for i in val_store.ids() if split_of_id(i) != "test"]
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise InputError(f"{len(both)} molecule(s) are in both the training and the "
                         f"validation store, e.g. {both[0]}")
    return train_ids, val_ids


def training_ids(store, val_store, val_fraction, patterns=(), val_patterns=()):
    """(training ids, validation ids) of :func:`split_store`, each kept to the ids that
    match its glob patterns (``ids`` and ``val_ids`` of a training run)."""
    train_ids, val_ids = split_store(store, val_store, val_fraction)
    return matching_ids(train_ids, patterns), matching_ids(val_ids, val_patterns)


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
        which ``sad_coarse`` has 7 channels (:func:`rhosr.nn.inputs.features`, the one
        featurizer of training, evaluation and prediction; cached per molecule and
        transformed like the fine arrays).
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
        """Un-augmented numpy arrays of item ``index``: coarse (C, X, Y, Z) network input
        and sad_fine (:func:`rhosr.nn.inputs.features`), target (float32), n_electrons,
        dv_fine, grid (fine), id, symbols, positions, charge."""
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
        feats = features(rec.symbols, rec.positions, grid, rec.charge,
                         ModelInputs(self.inputs, self.sad_variant), with_fine=True)
        out = {
            "id": mol_id, "grid": grid, "coarse": feats.coarse, "sad_fine": feats.sad_fine,
            "n_electrons": float(rec.nelectron), "dv_fine": grid.dv,
            "symbols": tuple(rec.symbols), "positions": np.asarray(rec.positions),
            "charge": int(rec.charge),
        }
        nbytes = feats.coarse.nbytes + feats.sad_fine.nbytes * (2 if self.cache == "all" else 1)
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
        ``arrays``: the item's :meth:`arrays` if already at hand.  The coarse input
        and the fine arrays move together (coarse point i is fine point 2i)."""
        a = self.arrays(index) if arrays is None else arrays
        coarse, sad_f, target = a["coarse"], a["sad_fine"], a["target"]
        if op != IDENTITY:
            coarse, sad_f, target = (apply_symmetry(v, op) for v in (coarse, sad_f, target))
        if any(shift):
            coarse = apply_shift(coarse, shift, 1)
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
                coarse = periodic_window(coarse, start, size, 1)
                sad_f = periodic_window(sad_f, start, size, UPSAMPLE)
                target = periodic_window(target, start, size, UPSAMPLE)
        return {
            "sad_coarse": torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32)),
            "sad_fine": torch.from_numpy(np.ascontiguousarray(sad_f, dtype=np.float32))[None],
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None],
            "n_electrons": torch.tensor(a["n_electrons"], dtype=torch.float64),
            "dv_fine": torch.tensor(a["dv_fine"], dtype=torch.float64),
            "interior": torch.from_numpy(interior),
            "whole": whole,
            "id": a["id"],
        }

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

