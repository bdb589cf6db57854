"""QM9 geometries read offline from the qm9pack package, and the standard QM9 split."""

from __future__ import annotations

import ast
import csv
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rhosr.core.molecule import Molecule
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.errors import InputError

QM9_SIZE = 133_885

#: Standard split of QM9 indices (inclusive ranges). Nothing trains on
#: validation or test molecules.
QM9_SPLIT = {
    "train": (1, 110_000),
    "val": (110_001, 120_000),
    "test": (120_001, QM9_SIZE),
}


def qm9_id(index: int) -> str:
    return f"qm9_{int(index):06d}"


def qm9_index_of(mol_id: str) -> int | None:
    """QM9 index of a molecule id (``qm9_000123`` -> 123), None for other ids."""
    if mol_id.startswith("qm9_") and mol_id[4:].isdigit():
        return int(mol_id[4:])
    return None


def parse_qm9_spec(text: str) -> list[int]:
    """'5' -> [5]; '1-500' -> [1..500]; '1,4,9-12' -> list."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InputError(f"qm9:{text}: expected qm9:<index> or qm9:<first>-<last>") from None
    bad = [i for i in out if not 1 <= i <= QM9_SIZE]
    if bad:
        raise InputError(f"qm9:{text}: index {bad[0]} outside 1-{QM9_SIZE}")
    return out


def _qm9_data_dir() -> Path:
    # qm9pack's own import needs pkg_resources; read its CSV files directly
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("qm9: the qm9pack package is not installed (pip install qm9pack)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def qm9_symbols(text: str) -> tuple:
    """qm9pack's ``Elements`` column (a Python list literal) -> tuple of symbols."""
    import json

    return tuple(json.loads(text.replace("'", '"')))


def qm9_columns(*names: str, parts=None) -> Iterator[tuple]:
    """The named columns (as strings) of every row of qm9pack's CSV files
    (or of the files ``parts``), in file order."""
    csv.field_size_limit(1 << 30)
    for part in sorted(_qm9_data_dir().glob("qm9_part*.csv")) if parts is None else parts:
        with open(part, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            cols = [header.index(n) for n in names]
            for row in reader:
                yield tuple(row[c] for c in cols)


def qm9_geometries(indices: Sequence[int]) -> dict[int, tuple[tuple, np.ndarray]]:
    """{index: (symbols, positions in Å)} for the indices that qm9pack holds."""

    wanted = set(int(i) for i in indices)
    if not wanted:
        return {}
    found: dict[int, tuple[tuple, np.ndarray]] = {}
    parts = sorted(_qm9_data_dir().glob("qm9_part*.csv"))
    if not parts:
        raise InputError("qm9: qm9pack's data files were not found")
    firsts = [int(next(qm9_columns("Index", parts=[part]))[0]) for part in parts]
    order = np.argsort(firsts)
    parts = [parts[i] for i in order]
    firsts = [firsts[i] for i in order]
    hi = max(wanted)
    for k, part in enumerate(parts):
        last = firsts[k + 1] - 1 if k + 1 < len(parts) else QM9_SIZE
        if not any(firsts[k] <= i <= last for i in wanted):
            continue
        for index, element_text, xyz in qm9_columns("Index", "Elements", "XYZ_Ang", parts=[part]):
            idx = int(index)
            if idx in wanted:
                found[idx] = (qm9_symbols(element_text), np.array(ast.literal_eval(xyz), dtype=float))
                # (a literal, not JSON: qm9pack writes numbers such as '0.')
            if idx >= hi or idx >= last:
                break
    return found


@lru_cache(maxsize=1)
def qm9_indices() -> frozenset:
    """Every QM9 index that qm9pack holds."""
    return frozenset(int(i) for (i,) in qm9_columns("Index"))


def qm9_sample(split: str, count: int, seed: int = 0) -> list[int]:
    """``count`` QM9 indices of one split, in a fixed random order.

    The order is a seeded permutation of the split's indices, with the
    indices that qm9pack lacks left out; a larger ``count`` extends the same
    list, so a store grown with ``qm9:train/500`` and later ``qm9:train/1000``
    keeps its first 500 molecules.
    """
    if split not in QM9_SPLIT:
        raise InputError(f"qm9:{split}/{count}: split must be one of {', '.join(QM9_SPLIT)}")
    lo, hi = QM9_SPLIT[split]
    order = lo + np.random.default_rng(seed).permutation(hi - lo + 1)
    present = qm9_indices()
    picked = [int(i) for i in order if int(i) in present][:count]
    if len(picked) < count:
        raise InputError(f"qm9:{split}/{count}: the {split} split has only {len(picked)} molecules")
    return picked


def _parse_qm9_sample(text: str) -> list[int] | None:
    """'train/500' or 'test/60@1' -> indices; None when ``text`` is not a sample."""
    if "/" not in text:
        return None
    split, _, rest = text.partition("/")
    count, _, seed = rest.partition("@")
    try:
        count_i, seed_i = int(count), int(seed or 0)
    except ValueError:
        raise InputError(f"qm9:{text}: expected qm9:<split>/<count>[@seed]") from None
    if count_i < 1:
        raise InputError(f"qm9:{text}: count must be positive")
    return qm9_sample(split.strip(), count_i, seed_i)


def from_qm9(text: str, on_missing=None) -> Iterator[Molecule]:
    indices = _parse_qm9_sample(text)
    if indices is None:
        indices = parse_qm9_spec(text)
    geoms = qm9_geometries(indices)
    missing = [i for i in indices if i not in geoms]
    if missing and len(indices) == 1:
        raise InputError(f"qm9:{indices[0]}: this index is not in qm9pack "
                         f"(it lacks ~3,000 of the {QM9_SIZE:,})")
    for i in indices:
        if i not in geoms:
            if on_missing is not None:
                on_missing(i)
            continue
        symbols, pos_ang = geoms[i]
        yield Molecule(qm9_id(i), symbols, pos_ang * ANGSTROM_TO_BOHR, 0, 0, f"qm9:{i}")


def qm9_split(index: int) -> str:
    """'train', 'val' or 'test' for a QM9 index."""
    for name, (lo, hi) in QM9_SPLIT.items():
        if lo <= int(index) <= hi:
            return name
    raise ValueError(f"QM9 index {index} outside 1-{QM9_SIZE}")
