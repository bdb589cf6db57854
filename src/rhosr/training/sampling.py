"""What each optimizer step sees: a pure function of ``(seed, step)``.

Molecule j of step ``step`` is sample ``g = step * batch + j`` of the run.  Without a mix
it is entry g of the epoch-wise seeded permutation of the training molecules; with a mix
of stores (:func:`mix_streams`) sample g goes to a store by weight
(:func:`mixed_position`) and to the next entry of that store's own seeded order.  The
augmentation (one of the 48 cube symmetries and a periodic shift) and the crop origin
are drawn from ``default_rng([seed, 2, step, j])``.  Hence workers, data-parallel ranks
and resumed runs agree on every sample, and a resumed run repeats exactly what an
uninterrupted one would do.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rhosr.errors import InputError
from rhosr.training.data import DensityDataset


def mix_streams(store, train_ids, mix):
    """None, or ([dataset indices of each store's training molecules], [weights]) of a
    ``mix`` (weights checked by :class:`rhosr.training.config.TrainConfig`), one per store."""
    if mix is None:
        return None
    parts = getattr(store, "parts", [store])
    if len(mix) != len(parts):
        raise InputError(f"--mix gives {len(mix)} weight(s) for {len(parts)} store(s)")
    where = store.part_of if len(parts) > 1 else (lambda _i: 0)
    streams = [[] for _ in parts]
    for k, mol_id in enumerate(train_ids):
        streams[where(mol_id)].append(k)
    for part, stream, w in zip(parts, streams, mix):
        if w > 0 and not stream:
            raise InputError(f"{part.path}: --mix weight {w} but no training molecules there")
    total = float(sum(mix))
    return streams, [w / total for w in mix]


def mixed_position(g: int, weights) -> tuple[int, int]:
    """(stream, position in it) of sample ``g`` when the streams are interleaved by weight.

    Stream 0 takes the samples where ``round(g * w0)`` steps up (its share of every
    prefix is within one sample of ``w0``), the other streams share the rest the same
    way, recursively: a pure function of ``g``."""
    rest = 1.0
    for s, w in enumerate(weights[:-1]):
        share = min(w / rest, 1.0) if rest > 0 else 0.0
        before = math.floor(g * share + 0.5)
        if math.floor((g + 1) * share + 0.5) > before:
            return s, before
        g -= before
        rest -= w
    return len(weights) - 1, g


class StepSamples(torch.utils.data.Dataset):
    """Training samples keyed by ``(step, j)``: molecule j of optimizer step ``step``.

    The molecule is entry ``step * batch + j`` of the epoch-wise seeded
    permutation of ``dataset`` (epoch e: ``default_rng([seed, 1, e])``), its
    augmentation drawn from ``default_rng([seed, 2, step, j])``: a pure
    function of the key, so workers, ranks and resumed runs agree.  With
    ``streams`` (a mix of stores, see :func:`mixed_position`), sample
    ``step * batch + j`` goes to a stream by weight, and to entry p of that
    stream's own seeded permutation per pass (``default_rng([seed, 1, s, e])``)."""

    def __init__(self, dataset: DensityDataset, seed: int, batch: int, streams=None):
        self.dataset, self.seed, self.batch = dataset, int(seed), int(batch)
        self.streams = streams
        self._perms: dict = {}

    def _perm(self, key, n):
        if key not in self._perms:
            if len(self._perms) > 16:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, 1, *key]).permutation(n)
        return self._perms[key]

    def index(self, step: int, j: int) -> int:
        g = step * self.batch + j
        if self.streams is None:
            epoch, k = divmod(g, len(self.dataset))
            return int(self._perm((epoch,), len(self.dataset))[k])
        members, weights = self.streams
        s, p = mixed_position(g, weights)
        epoch, k = divmod(p, len(members[s]))
        return int(members[s][self._perm((s, epoch), len(members[s]))[k]])

    def __getitem__(self, key):
        step, j = (int(k) for k in key)
        rng = np.random.default_rng([self.seed, 2, step, j])
        sample = self.dataset.random_sample(self.index(step, j), rng)
        sample["step_j"] = (step, j)
        return sample


def step_keys(start: int, js):
    """``(step, j)`` for j in ``js`` of every step from ``start`` on (endless)."""
    step = start
    while True:
        for j in js:
            yield (step, j)
        step += 1


def step_samples(dataset, seed, batch, start, js, workers: int, pin: bool, streams=None):
    """Iterator over this rank's samples (slots ``js`` of each step) from step ``start`` on,
    ``workers`` processes prefetching when > 0."""
    if not js:
        return iter(())
    source = StepSamples(dataset, seed, batch, streams)
    if workers <= 0:
        return (source[k] for k in step_keys(start, js))
    loader = torch.utils.data.DataLoader(
        source, sampler=step_keys(start, js), batch_size=None, num_workers=workers,
        pin_memory=pin, persistent_workers=False, prefetch_factor=2)
    return iter(loader)
