"""Label files from outside ``rhosr generate`` (npz/h5 orbital records with their level of
theory) read as store records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rhosr.core.units import BOHR
from rhosr.errors import BankError
from rhosr.labels.bank import Bank, is_bank
from rhosr.labels.store import (
    META_NAME,
    Record,
    Store,
)


def read_label_file(path, level_of_theory: dict) -> Record:
    """One orbital label file (``<id>.npz``: ``id``, ``source``, ``symbols``,
    ``xyz_ang``, ``box_ang``, ``mesh``, ``charge``, ``spin``, ``energy``,
    ``converged``, ``cycles``, ``seconds``, ``mo_occ``, ``mo_coeff``) as a record
    of the given level of theory."""
    try:
        with np.load(path, allow_pickle=False) as d:
            f = {k: d[k] for k in d.files}
        n = len(f["mo_occ"])
        return Record(
            id=str(f["id"]), source=str(f["source"]), symbols=tuple(str(s) for s in f["symbols"]),
            positions=np.asarray(f["xyz_ang"], dtype=float) / BOHR,
            cell=np.asarray(f["box_ang"], dtype=float) / BOHR,
            fine_mesh=tuple(int(x) for x in f["mesh"]), charge=int(f["charge"]),
            spin=int(f["spin"]), energy=float(f["energy"]), converged=bool(f["converged"]),
            scf_iterations=int(f["cycles"]), seconds=float(f["seconds"]),
            timings={"scf": float(f["seconds"])}, level_of_theory=dict(level_of_theory),
            mo_coeff=np.asarray(f["mo_coeff"], dtype=np.float32), mo_occ=np.asarray(f["mo_occ"]),
            mo_spin=np.zeros(n, dtype=np.int8))
    except (OSError, ValueError, KeyError) as err:
        raise BankError(f"{path}: not an orbital label file ({type(err).__name__}: {err})") from None


def source_records(path, level_of_theory: dict | None = None) -> list[Record]:
    """The records of a store, a bank, or a folder of orbital label files.

    Label files carry no level of theory of their own: ``level_of_theory``
    (required for them) is what their maker states.
    """
    path = Path(path)
    if is_bank(path):
        bank = Bank(path)
        return [bank.read(i, density=False) for i in bank.ids()]
    if (path / META_NAME).is_file():
        store = Store(path)
        return [store.read(i, density=False) for i in store.ids()]
    files = sorted(path.glob("*.npz")) if path.is_dir() else []
    if not files:
        raise BankError(f"{path}: neither a store, a bank, nor a folder of orbital label files")
    if level_of_theory is None:
        raise BankError(f"{path}: label files need their level of theory stated (--theory)")
    return [read_label_file(p, level_of_theory) for p in files]
