"""The label bank: orbital records in append-only, checksummed shards.

A bank is a folder meant to live in a git repository (``data/qm9``)::

    BANK/
      rhosr-bank.json            format, version, the level of theory (written once)
      add-000001.json            one manifest per add: its shards, their SHA-256, ids
      add-000001-00.npz          a shard: records as NumPy arrays (``<id>/<field>``)
      DATASHEET.md               what is in it and how it was made (by hand)

Each add writes new shard files and then, last, its manifest; the manifest is
the commit point.  A killed add leaves shards without a manifest, which
readers ignore and the next add removes, so the bank is as it was.  No file
is ever rewritten, no shard exceeds :data:`MAX_SHARD_BYTES`, and git history
grows only by what is added.

A shard is opened only after its SHA-256 matches the manifest: a truncated or
corrupted shard raises :class:`BankError` naming it, and the records of the
other shards stay readable.  Records are orbital records
(:class:`rhosr.labels.store.Record` with ``mo_coeff``); their densities are evaluated
on demand with NumPy and cached (:func:`rhosr.labels.orbitals.density_from_record`).  A
:class:`Bank` reads like a :class:`rhosr.labels.store.Store`, so training,
``evaluate``, ``export`` and ``info`` take either (:func:`open_labels`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from rhosr._version import __version__
from rhosr.core.files import atomic_path
from rhosr.errors import BankError
from rhosr.labels.store import (
    META_NAME,
    Record,
    Store,
    attach_density,
    check_record,
    record_from_attrs,
)

FORMAT = "rhosr-bank"
FORMAT_VERSION = 1
BANK_META = "rhosr-bank.json"
#: Largest shard file (bytes); an add splits its records into shards below it.
MAX_SHARD_BYTES = 20 * 1000**2
#: Records are packed into a shard until their arrays reach this many bytes.
SHARD_TARGET_BYTES = 16 * 1000**2
#: The level-of-theory keys that must agree for records to share a bank.
THEORY_KEYS = ("code", "xc", "basis", "pseudo", "ke_cutoff_hartree", "mesh", "cell",
               "conv_tol", "smearing")
_ARRAYS = ("symbols", "positions", "cell", "fine_mesh", "mo_coeff", "mo_occ", "mo_spin")
MANIFEST_NAME = re.compile(r"^add-(\d{6})\.json$")


def theory_signature(level_of_theory: dict) -> dict:
    """The part of a level of theory that decides whether labels are comparable."""
    return {k: level_of_theory.get(k) for k in THEORY_KEYS}


def is_bank(path) -> bool:
    return (Path(path) / BANK_META).is_file()


def open_labels(path):
    """A :class:`Bank` or a :class:`rhosr.labels.store.Store`, whichever ``path`` is; several
    paths (a list or tuple) are read as one :class:`Union`."""
    if hasattr(path, "ids") and hasattr(path, "read"):
        return path
    if isinstance(path, (list, tuple)):
        return path[0] if len(path) == 1 else Union(path)
    if is_bank(path):
        return Bank(path)
    if Path(path).is_dir() and not (Path(path) / META_NAME).exists():
        raise BankError(f"{path}: neither a rhosr store nor a bank (no {META_NAME} or {BANK_META}; "
                        "a bank starts with its first 'rhosr bank add')")
    return Store(path)


class _Listing:
    """Store-like listing over ``self._where`` (id -> where the record is) and ``read``."""

    def ids(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, mol_id) -> bool:
        return mol_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def records(self, ids=None, density: bool = True) -> Iterator[Record]:
        for mol_id in (self.ids() if ids is None else ids):
            yield self.read(mol_id, density=density)


class Union(_Listing):
    """Several stores or banks read as one (``rhosr train STORE STORE ...``).

    Ids must be unique across the parts; ``part_of(id)`` says which part holds a
    record, ``paths`` lists the parts' folders.
    """

    mode = "r"

    def __init__(self, parts):
        self.parts = [open_labels(p) for p in parts]
        if not self.parts:
            raise BankError("no stores given")
        self._where: dict[str, int] = {}
        for k, part in enumerate(self.parts):
            for mol_id in part.ids():
                if mol_id in self._where:
                    other = self.parts[self._where[mol_id]].path
                    raise BankError(f"{mol_id} is in both {other} and {part.path}: "
                                    "the stores of one run must not share ids")
                self._where[mol_id] = k
        self.paths = [Path(p.path) for p in self.parts]
        self.path = self.paths[0]

    def __repr__(self) -> str:
        return f"Union({[str(p) for p in self.paths]})"

    def ids(self) -> list[str]:
        """The parts' ids, part by part."""
        return list(self._where)

    def part_of(self, mol_id: str) -> int:
        """Index of the part that holds ``mol_id``."""
        if mol_id not in self._where:
            raise KeyError(f"{mol_id}: no such record in {', '.join(map(str, self.paths))}")
        return self._where[mol_id]

    def read(self, mol_id: str, density: bool = True) -> Record:
        return self.parts[self.part_of(mol_id)].read(mol_id, density=density)

    def read_density(self, mol_id: str) -> np.ndarray:
        return self.parts[self.part_of(mol_id)].read_density(mol_id)


def store_paths(store) -> list[str]:
    """The resolved folder(s) of a store, bank or :class:`Union`."""
    return [str(Path(p).resolve()) for p in getattr(store, "paths", [store.path])]


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Bank(_Listing):
    """Read (and append to) a label bank; reads like a :class:`rhosr.labels.store.Store`."""

    mode = "r"

    def __init__(self, path):
        self.path = Path(path)
        meta = self.path / BANK_META
        if not meta.is_file():
            raise BankError(f"{self.path}: not a rhosr bank (no {BANK_META})")
        try:
            self.meta = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            raise BankError(f"{self.path}: unreadable {BANK_META} ({err})") from None
        if self.meta.get("format") != FORMAT:
            raise BankError(f"{self.path}: not a rhosr bank (format {self.meta.get('format')!r})")
        self.manifests = self._read_manifests()
        self._where = {}  # id -> shard file name
        for man in self.manifests:
            for shard in man["shards"]:
                for mol_id in shard["ids"]:
                    self._where[mol_id] = shard["file"]
        self._shard_info = {s["file"]: s for m in self.manifests for s in m["shards"]}
        self._open: dict[str, dict] = {}

    @staticmethod
    def create(path, level_of_theory: dict, note: str = "") -> "Bank":
        """A new, empty bank whose records must match ``level_of_theory``; the folder
        may already hold other files (a datasheet, the structures labelled)."""
        path = Path(path)
        if (path / BANK_META).exists():
            raise BankError(f"{path}: a bank already exists here")
        if path.exists() and ((path / META_NAME).exists() or any(path.glob("add-*"))):
            raise BankError(f"{path}: a store or bank files are already here")
        path.mkdir(parents=True, exist_ok=True)
        info = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created_by": f"rhosr {__version__}", "note": note,
                "level_of_theory": theory_signature(level_of_theory)}
        with atomic_path(path / BANK_META) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=1) + "\n")
        return Bank(path)

    def _read_manifests(self) -> list[dict]:
        out = []
        for p in sorted(self.path.glob("add-*.json")):
            if not MANIFEST_NAME.match(p.name):
                continue
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError) as err:
                raise BankError(f"{p}: unreadable manifest ({err})") from None
        return out

    # ---- listing (Store's interface, with _Listing)

    def failures(self) -> dict:
        return {}

    def shard_of(self, mol_id: str) -> str:
        return self._where[mol_id]

    # ---- reading

    def _shard(self, name: str) -> dict:
        """The arrays of a verified shard, {member: array} (loaded once)."""
        hit = self._open.get(name)
        if hit is not None:
            return hit
        info = self._shard_info[name]
        path = self.path / name
        if not path.is_file():
            raise BankError(f"{path}: shard missing (listed in its manifest)")
        data = path.read_bytes()
        if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise BankError(f"{path}: corrupted or truncated shard (checksum mismatch); "
                            f"its {len(info['ids'])} records are unreadable, other shards are fine")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        self._open[name] = arrays
        return arrays

    def read(self, mol_id: str, density: bool = True) -> Record:
        """One record; ``density=True`` also evaluates (or reads the cached) density."""
        if mol_id not in self._where:
            raise KeyError(f"{mol_id}: no such record in {self.path}")
        arrays = self._shard(self._where[mol_id])
        rec = _record_from_arrays(mol_id, arrays)
        if density:
            attach_density(rec)
        return rec

    def read_density(self, mol_id: str) -> np.ndarray:
        return self.read(mol_id).rho_dft

    def check(self) -> list[str]:
        """Problems found (empty when sound): checksums, duplicate ids, level of theory."""
        problems, seen = [], {}
        for man in self.manifests:
            for shard in man["shards"]:
                try:
                    arrays = self._shard(shard["file"])
                except BankError as err:
                    problems.append(str(err))
                    continue
                for mol_id in shard["ids"]:
                    if mol_id in seen:
                        problems.append(f"{mol_id}: in {seen[mol_id]} and {shard['file']}")
                    seen[mol_id] = shard["file"]
                    problems += check_theory(self, _record_from_arrays(mol_id, arrays))
        return problems


def _record_from_arrays(mol_id: str, arrays: dict) -> Record:
    try:
        meta = json.loads(str(arrays[f"{mol_id}/meta"]))
        a = {k: arrays[f"{mol_id}/{k}"] for k in _ARRAYS}
    except KeyError as err:
        raise BankError(f"{mol_id}: incomplete record in its shard ({err})") from None
    return record_from_attrs(
        meta, symbols=tuple(str(s) for s in a["symbols"]), positions=a["positions"],
        cell=a["cell"], fine_mesh=tuple(int(n) for n in a["fine_mesh"]),
        mo_coeff=a["mo_coeff"], mo_occ=a["mo_occ"], mo_spin=a["mo_spin"])


def check_theory(bank: Bank, rec: Record) -> list[str]:
    want = bank.meta.get("level_of_theory", {})
    got = theory_signature(rec.level_of_theory)
    diff = [k for k in THEORY_KEYS if got.get(k) != want.get(k)]
    if not diff:
        return []
    k = diff[0]
    return [f"{rec.id}: level of theory differs from the bank's in {', '.join(diff)} "
            f"({k}: {got.get(k)!r}, bank: {want.get(k)!r})"]


# --------------------------------------------------------------------------
# adding


def check_orbital_record(rec: Record) -> None:
    check_record(rec)
    if not rec.has_orbitals:
        raise BankError(f"{rec.id}: not an orbital record (no mo_coeff): a bank keeps orbitals; "
                        "relabel it with this version of `rhosr generate`")


# --------------------------------------------------------------------------
# sources: stores, banks, folders of orbital label files


# --------------------------------------------------------------------------
# expanding: every density evaluated into the cache


