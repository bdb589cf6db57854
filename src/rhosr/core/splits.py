"""Which split a molecule id belongs to: QM9's standard split, ids that name their split
(``S-val-003``), and a stable hashed share of the others."""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

from rhosr.core.qm9 import qm9_index_of, qm9_split
from rhosr.errors import InputError

#: Ids that carry their split: ``<set>-<train|val|test>-<number>`` (e.g. ``S-test-003``, the
#: beyond-QM9 set of ``scripts/exotic_set.py``).
_SPLIT_ID = re.compile(r"^[A-Za-z0-9]+-(train|val|test)-[0-9]+$")


def group_of_id(mol_id: str) -> str | None:
    """'qm9' for QM9 ids, ``<set>`` for ids that name their split (``S`` of ``S-test-003``),
    None for other ids."""
    if qm9_index_of(mol_id) is not None:
        return "qm9"
    return str(mol_id).split("-", 1)[0] if _SPLIT_ID.match(str(mol_id)) else None


def split_of_id(mol_id: str) -> str | None:
    """Split of a QM9 molecule id (``qm9_000123``) or of an id that names its split
    (``<set>-<train|val|test>-<number>``); None for other ids."""
    index = qm9_index_of(mol_id)
    if index is not None:
        return qm9_split(index)
    named = _SPLIT_ID.match(str(mol_id))
    return None if named is None else named.group(1)


def hashed_fraction(mol_id: str) -> float:
    """A deterministic number in [0, 1) from an id (SHA-1 based)."""
    h = hashlib.sha1(str(mol_id).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def role_of_id(mol_id: str, val_fraction: float = 0.1) -> str:
    """'train', 'val' or 'test' for one record id.

    QM9 ids follow the standard split (:func:`rhosr.core.splits.split_of_id`);
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


def split_ids(ids, split: str, val_fraction: float = 0.1) -> list[str]:
    """Ids of a split: 'val' (QM9 val split, ids like ``S-val-003``, and the hashed
    ``val_fraction`` of other ids, as in training), 'test' (QM9 test split and ids like
    ``S-test-003``), 'all'."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, not {split!r}")
    if split == "all":
        return list(ids)
    return select_ids(ids, split, val_fraction)


SPLITS = ("val", "test", "all")
