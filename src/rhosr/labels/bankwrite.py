"""Writing a bank: appending admissible records as new shards with a manifest, removing
orphans, and expanding the densities of its records into the cache."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from rhosr.core.files import atomic_path
from rhosr.errors import BankError
from rhosr.labels.bank import (
    FORMAT,
    MANIFEST_NAME,
    MAX_SHARD_BYTES,
    SHARD_TARGET_BYTES,
    Bank,
    check_orbital_record,
    check_theory,
    is_bank,
    sha256_file,
)
from rhosr.labels.orbitals import cache_path
from rhosr.labels.store import (
    Record,
    mo_spin,
    record_attrs,
)

_WORKER_BANKS: dict[str, Bank] = {}


def record_arrays(rec: Record) -> dict:
    """The shard members of one orbital record."""
    check_orbital_record(rec)
    return {
        f"{rec.id}/meta": np.array(json.dumps(record_attrs(rec))),
        f"{rec.id}/symbols": np.array(rec.symbols, dtype="U3"),
        f"{rec.id}/positions": np.asarray(rec.positions, dtype=np.float64),
        f"{rec.id}/cell": np.asarray(rec.cell, dtype=np.float64),
        f"{rec.id}/fine_mesh": np.asarray(rec.fine_mesh, dtype=np.int64),
        f"{rec.id}/mo_coeff": np.asarray(rec.mo_coeff, dtype=np.float32),
        f"{rec.id}/mo_occ": np.asarray(rec.mo_occ, dtype=np.float64),
        f"{rec.id}/mo_spin": mo_spin(rec),
    }


def _pack(records: list[Record]) -> list[list[dict]]:
    """Records' arrays grouped into shards of about :data:`SHARD_TARGET_BYTES`."""
    groups, current, size = [], [], 0
    for rec in records:
        arrays = record_arrays(rec)
        nbytes = sum(a.nbytes for a in arrays.values())
        if current and size + nbytes > SHARD_TARGET_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append(arrays)
        size += nbytes
    if current:
        groups.append(current)
    return groups


def _write_shard(path: Path, group: list[dict]) -> dict:
    merged = {k: v for arrays in group for k, v in arrays.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **merged)
    nbytes = path.stat().st_size
    if nbytes > MAX_SHARD_BYTES:
        path.unlink()
        raise BankError(f"{path.name}: {nbytes} bytes exceeds the shard limit {MAX_SHARD_BYTES}")
    ids = [k[:-5] for k in merged if k.endswith("/meta")]
    return {"file": path.name, "bytes": nbytes, "sha256": sha256_file(path), "ids": ids}


def remove_orphans(bank: Bank) -> list[str]:
    """Delete shard files no manifest lists (left by a killed add); returns their names."""
    listed = set(bank._shard_info)
    gone = []
    for p in bank.path.glob("add-*.npz"):
        if p.name not in listed:
            p.unlink()
            gone.append(p.name)
    for p in bank.path.glob(".add-*.tmp"):
        p.unlink()
        gone.append(p.name)
    return gone


def add_records(bank_path, records: list[Record], new_only: bool = False, source: str = "",
                level_of_theory: dict | None = None, note: str = "") -> dict:
    """Append ``records`` to the bank at ``bank_path`` (created if missing).

    Refuses (raises :class:`BankError`, writes nothing) a record of another
    level of theory, a record without orbitals, and an id already in the bank
    or given twice -- unless ``new_only``, which skips ids the bank holds.
    ``source`` and ``note`` (how the records were made) go into the add's
    manifest.  Returns the manifest (``file`` None and ``added`` 0 when
    nothing was new).
    """
    if not is_bank(bank_path):
        if not records:
            raise BankError(f"{bank_path}: no records to start a bank with")
        Bank.create(bank_path, level_of_theory or records[0].level_of_theory)
    bank = Bank(bank_path)
    remove_orphans(bank)
    records = _admissible(bank, records, new_only)
    if not records:
        return {"file": None, "added": 0, "shards": []}
    number = 1 + max([int(MANIFEST_NAME.match(p.name).group(1)) for p in bank.path.glob("add-*.json")
                      if MANIFEST_NAME.match(p.name)], default=0)
    shards = []
    for k, group in enumerate(_pack(records)):
        shards.append(_write_shard(bank.path / f"add-{number:06d}-{k:02d}.npz", group))
    manifest = {"format": FORMAT, "add": number, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                           time.gmtime()),
                "source": source, "note": note, "added": len(records), "shards": shards}
    manifest["file"] = _write_manifest(bank.path / f"add-{number:06d}.json", manifest)
    return manifest


def _write_manifest(path: Path, manifest: dict) -> str:
    """Write an add's manifest atomically: the add's commit point."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")
    return path.name


def _admissible(bank: Bank, records: list[Record], new_only: bool) -> list[Record]:
    out, seen = [], set()
    for rec in records:
        if rec.id in seen:
            raise BankError(f"{rec.id}: given twice in this add")
        seen.add(rec.id)
        if rec.id in bank:
            if new_only:
                continue
            raise BankError(f"{rec.id}: already in the bank ({bank.shard_of(rec.id)}); "
                            "use --new-only to add only the ids the bank lacks")
        if not rec.converged:
            raise BankError(f"{rec.id}: SCF not converged; a bank keeps converged labels only")
        problems = check_theory(bank, rec)
        if problems:
            raise BankError(problems[0])
        check_orbital_record(rec)  # refused before anything is written
        out.append(rec)
    return out


def _expand_one(bank_path: str, mol_id: str) -> tuple[str, float]:
    bank = _WORKER_BANKS.get(bank_path)
    if bank is None:
        bank = _WORKER_BANKS[bank_path] = Bank(bank_path)
    t0 = time.perf_counter()
    bank.read(mol_id, density=True)
    return mol_id, time.perf_counter() - t0


def expand(bank, ids=None, workers: int = 1, progress: bool = True) -> dict:
    """Evaluate (and cache) the densities of ``ids`` (default: all) of a bank.

    ``workers`` processes share the cores (one BLAS thread each).  Returns
    ``{"evaluated": n, "cached": n, "seconds": wall}``; already cached
    densities are not evaluated again.
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    bank = bank if isinstance(bank, Bank) else Bank(bank)
    ids = bank.ids() if ids is None else list(ids)
    todo = []
    for mol_id in ids:
        path = cache_path(bank.read(mol_id, density=False))
        if path is None or not path.is_file():
            todo.append(mol_id)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="mol", desc="expanding", disable=not progress,
               file=sys.stderr)
    if workers <= 1:
        for mol_id in todo:
            bank.read(mol_id, density=True)
            bar.update(1)
    else:
        import multiprocessing as mp

        saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        os.environ.update({v: "1" for v in saved})  # inherited by the spawned workers
        try:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for _ in pool.map(_expand_one, [str(bank.path)] * len(todo), todo, chunksize=4):
                    bar.update(1)
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
    bar.close()
    return {"evaluated": len(todo), "cached": len(ids) - len(todo),
            "seconds": time.perf_counter() - t0}


