"""The dataset on disk: reference labels, one HDF5 file per molecule.

Layout of a store directory::

    STORE/
      rhosr-store.json        format, version, level of theory (self-description)
      records/<id>.h5         one finished record per molecule (HDF5, compressed, chunked)
      failed/<id>.json        molecules whose SCF failed, with the reason (never trained on)

Why HDF5 files per record rather than one big file: HDF5 does not journal its
metadata, so a writer killed with SIGKILL in the middle of an append can leave
a single shared file unreadable.  Here a record is written to a temporary name
in the same folder and renamed into place (atomic on POSIX), so a killed writer
loses at most the molecules in flight, a partial record never carries a final
name, and any number of readers (DataLoader workers, other processes) open
records concurrently without locks.  Each record is self-describing: its
attributes hold the level of theory and the rhosr version that made it.

Record contents (units in names or stated): ``id``, ``source``, ``symbols``,
``positions`` (bohr, centred in the box), ``charge``, ``spin`` (2S), ``cell``
(bohr), ``fine_mesh``, ``coarse_mesh``, ``rho_dft`` (fine mesh, float32,
e/bohr³, chunked and gzip-compressed), ``energy`` (Hartree), ``converged``,
``scf_iterations``, ``seconds``, timings, level of theory, rhosr version.

The SAD density is not stored: it is recomputed from the record
(:func:`rhosr.core.sad.sad_density` with ``record.grid``), which takes milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from rhosr._version import __version__
from rhosr.core.files import atomic_path
from rhosr.core.grid import Grid
from rhosr.core.molecule import valence_electrons
from rhosr.errors import StoreError
from rhosr.labels.orbitals import density_from_record

FORMAT = "rhosr-store"
FORMAT_VERSION = 1
META_NAME = "rhosr-store.json"
_CHUNK = 32


def _version() -> str:
    return __version__


@dataclass
class Record:
    """One labelled molecule.

    ``positions`` and ``cell`` are in bohr; ``rho_dft`` is on the fine mesh
    (e/bohr³), C order with x slowest; ``energy`` in Hartree.  An orbital
    record holds ``mo_coeff`` (nao, norb) float32 in the ``gth-tzv2p`` basis,
    ``mo_occ`` (norb,) and ``mo_spin`` (norb,) (0 α or restricted, 1 β)
    instead of, or beside, ``rho_dft``; :func:`rhosr.labels.orbitals.density_from_record`
    evaluates its density.
    """

    id: str
    symbols: tuple
    positions: np.ndarray
    cell: np.ndarray
    fine_mesh: tuple
    charge: int = 0
    spin: int = 0
    source: str = ""
    rho_dft: np.ndarray | None = None
    energy: float = float("nan")
    converged: bool = True
    scf_iterations: int = 0
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    level_of_theory: dict = field(default_factory=dict)
    rhosr_version: str = ""
    mo_coeff: np.ndarray | None = None
    mo_occ: np.ndarray | None = None
    mo_spin: np.ndarray | None = None

    @property
    def has_orbitals(self) -> bool:
        """True for an orbital record (its density can be evaluated on demand)."""
        return self.mo_coeff is not None

    @property
    def grid(self) -> Grid:
        """The fine grid of the record."""
        return Grid(tuple(self.cell), tuple(self.fine_mesh))

    @property
    def coarse_mesh(self) -> tuple:
        return tuple(int(n) // 2 for n in self.fine_mesh)

    @property
    def nelectron(self) -> int:
        return valence_electrons(self.symbols) - int(self.charge)


class Store:
    """A directory of labelled molecules.

    Parameters
    ----------
    path : str or Path
    mode : "r" (must exist) or "a" (create if needed)
    meta : dict, optional
        With mode "a" on a new store: extra metadata written once
        (e.g. the level of theory).
    """

    def __init__(self, path, mode: str = "r", meta: dict | None = None):
        self.path = Path(path)
        self.mode = mode
        meta_path = self.path / META_NAME
        if mode == "r":
            if not meta_path.is_file():
                raise StoreError(f"{self.path}: not a rhosr store (no {META_NAME})")
        elif mode == "a":
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path}: exists and is not a directory")
            if self.path.is_dir() and any(self.path.iterdir()) and not meta_path.is_file():
                raise StoreError(f"{self.path}: a non-empty directory that is not a rhosr store")
            (self.path / "records").mkdir(parents=True, exist_ok=True)
            (self.path / "failed").mkdir(exist_ok=True)
            if not meta_path.is_file():
                info = {"format": FORMAT, "format_version": FORMAT_VERSION,
                        "created_by": f"rhosr {_version()}", **(meta or {})}
                _atomic_write_text(meta_path, json.dumps(info, indent=1))
        else:
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise StoreError(f"{self.path}: unreadable {META_NAME} ({err})") from None
        if self.meta.get("format") != FORMAT:
            raise StoreError(f"{self.path}: not a rhosr store (format {self.meta.get('format')!r})")

    # ---- listing

    def _record_path(self, mol_id: str) -> Path:
        return self.path / "records" / f"{mol_id}.h5"

    def ids(self) -> list[str]:
        """Ids of the finished records, sorted."""
        folder = self.path / "records"
        if not folder.is_dir():
            return []
        return sorted(p.name[:-3] for p in folder.iterdir()
                      if p.name.endswith(".h5") and not p.name.startswith("."))

    def __contains__(self, mol_id: str) -> bool:
        return self._record_path(mol_id).is_file()

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def failures(self) -> dict[str, dict]:
        """{id: {"reason": ..., ...}} for molecules whose labelling failed."""
        out = {}
        folder = self.path / "failed"
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                try:
                    out[p.stem] = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
        return out

    # ---- reading

    def read(self, mol_id: str, density: bool = True) -> Record:
        """Load one record; ``density=False`` skips the (large) density array."""
        path = self._record_path(mol_id)
        if not path.is_file():
            raise KeyError(f"{mol_id}: no such record in {self.path}")
        return read_record(path, density)

    def read_density(self, mol_id: str) -> np.ndarray:
        """Only the fine-mesh DFT density of a record (float32)."""
        import h5py

        with h5py.File(self._record_path(mol_id), "r") as f:
            if "rho_dft" in f:
                return np.asarray(f["rho_dft"][()])
        return self.read(mol_id).rho_dft

    def records(self, ids=None, density: bool = True) -> Iterator[Record]:
        for mol_id in (self.ids() if ids is None else ids):
            yield self.read(mol_id, density=density)

    # ---- writing

    def _check_writable(self):
        if self.mode != "a":
            raise StoreError(f"{self.path}: store opened read-only")

    def write(self, rec: Record) -> Path:
        """Write a record atomically (temporary file + rename)."""
        import h5py

        self._check_writable()
        check_record(rec)
        final = self._record_path(rec.id)
        with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
            if rec.rho_dft is not None:
                rho = np.ascontiguousarray(rec.rho_dft, dtype=np.float32)
                f.create_dataset("rho_dft", data=rho, chunks=tuple(min(_CHUNK, n) for n in rho.shape),
                                 compression="gzip", compression_opts=4, shuffle=True)
            if rec.has_orbitals:
                f.create_dataset("mo_coeff", data=np.asarray(rec.mo_coeff, dtype=np.float32))
                f.create_dataset("mo_occ", data=np.asarray(rec.mo_occ, dtype=float))
                f.create_dataset("mo_spin", data=mo_spin(rec))
            f.create_dataset("symbols", data=np.array(rec.symbols, dtype="S3"))
            f.create_dataset("positions", data=np.asarray(rec.positions, dtype=float))
            f.create_dataset("cell", data=np.asarray(rec.cell, dtype=float))
            f.create_dataset("fine_mesh", data=np.asarray(rec.fine_mesh, dtype=np.int64))
            f.create_dataset("coarse_mesh", data=np.asarray(rec.coarse_mesh, dtype=np.int64))
            for key, value in record_attrs(rec).items():
                f.attrs[key] = value
            f.attrs["complete"] = True
        failed = self.path / "failed" / f"{rec.id}.json"
        failed.unlink(missing_ok=True)
        return final

    def write_failure(self, mol_id: str, info: dict) -> None:
        """Record a molecule whose labelling failed (reason and context)."""
        self._check_writable()
        _atomic_write_text(self.path / "failed" / f"{mol_id}.json", json.dumps(info, indent=1))

    def clean_partial(self) -> int:
        """Remove temporary files left by killed writers; returns how many."""
        n = 0
        for p in (self.path / "records").glob(".*.tmp"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        return n


def read_record(path, density: bool = True) -> Record:
    """Load one record file (``STORE/records/<id>.h5``, or a copy of one).

    ``density=False`` skips the (large) density array; an orbital record
    without a stored density gets it evaluated (and cached) on demand.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if not a.get("complete", False):
                raise StoreError(f"{path}: incomplete record")
            arrays = {k: np.asarray(f[k][()]) for k in ("mo_coeff", "mo_occ", "mo_spin") if k in f}
            rho = np.asarray(f["rho_dft"][()]) if density and "rho_dft" in f else None
            rec = record_from_attrs(
                dict(a), symbols=tuple(s.decode() if isinstance(s, bytes) else str(s)
                                       for s in f["symbols"][()]),
                positions=np.asarray(f["positions"][()], dtype=float),
                cell=np.asarray(f["cell"][()], dtype=float),
                fine_mesh=tuple(int(n) for n in f["fine_mesh"][()]), rho_dft=rho, **arrays)
    except OSError as err:
        raise StoreError(f"{path}: unreadable record ({err})") from None
    if density and rec.rho_dft is None:
        attach_density(rec)
    return rec


def check_record(rec: Record) -> None:
    """Raise ValueError for a record that cannot be written (no label, wrong shapes)."""
    if rec.rho_dft is None and not rec.has_orbitals:
        raise ValueError(f"{rec.id}: a record needs its density or its orbitals")
    if rec.rho_dft is not None and np.shape(rec.rho_dft) != tuple(rec.fine_mesh):
        raise ValueError(f"{rec.id}: density shape {np.shape(rec.rho_dft)} != fine mesh {rec.fine_mesh}")
    if rec.has_orbitals:
        c, n = np.shape(rec.mo_coeff), np.shape(rec.mo_occ)
        if len(c) != 2 or n != (c[1],) or np.shape(mo_spin(rec)) != n:
            raise ValueError(f"{rec.id}: orbital shapes {c}, {n} do not match")


def mo_spin(rec: Record) -> np.ndarray:
    """The spin channel of each orbital of an orbital record (int8; all 0 when unset)."""
    if rec.mo_spin is None:
        return np.zeros(len(rec.mo_occ), dtype=np.int8)
    return np.asarray(rec.mo_spin, dtype=np.int8)


def record_attrs(rec: Record) -> dict:
    """The scalar metadata of a record as plain, JSON-able values (strings, numbers)."""
    return {
        "id": rec.id, "source": rec.source, "charge": int(rec.charge), "spin": int(rec.spin),
        "energy": float(rec.energy), "converged": bool(rec.converged),
        "scf_iterations": int(rec.scf_iterations), "seconds": float(rec.seconds),
        "timings": json.dumps(rec.timings), "level_of_theory": json.dumps(rec.level_of_theory),
        "rhosr_version": rec.rhosr_version or _version(),
        "units": "positions, cell: bohr; rho_dft: e/bohr^3; energy: hartree",
    }


def record_from_attrs(a: dict, **arrays) -> Record:
    """Inverse of :func:`record_attrs`, with the arrays given as keywords."""
    return Record(
        id=str(a["id"]), charge=int(a["charge"]), spin=int(a["spin"]), source=str(a["source"]),
        energy=float(a["energy"]), converged=bool(a["converged"]),
        scf_iterations=int(a["scf_iterations"]), seconds=float(a["seconds"]),
        timings=json.loads(a.get("timings", "{}")),
        level_of_theory=json.loads(a.get("level_of_theory", "{}")),
        rhosr_version=str(a.get("rhosr_version", "")), **arrays)


def attach_density(rec: Record) -> Record:
    """Fill ``rec.rho_dft`` from its orbitals (cached evaluation); returns ``rec``."""
    if not rec.has_orbitals:
        raise StoreError(f"{rec.id}: record has neither a density nor orbitals")
    rec.rho_dft = density_from_record(rec)
    return rec


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
