"""Densities on a periodic mesh, and their files.

One read/write entry over a registry of formats:

========  =========================================================
``cube``  Gaussian cube, bohr, atoms with their valence charges;
          mesh spacing L/n (periodic, no repeated end point). Read back
          with ASE (``ase.io.cube.read_cube_data``).
``npy``   the bare array, C order (x slowest), e/bohr³.
``h5``    HDF5: ``density`` plus ``cell``, ``mesh``, ``symbols``,
          ``positions`` (bohr) and attributes.
========  =========================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rhosr.core.elements import atomic_number, valence_charge
from rhosr.core.grid import Grid
from rhosr.core.units import BOHR

FORMATS = ("cube", "npy", "h5")


@dataclass
class Density:
    """A density on a periodic orthorhombic mesh.

    Attributes
    ----------
    values : ndarray, shape ``grid.mesh``, e/bohr³
    grid : Grid
    symbols : tuple of str
    positions : (natm, 3) array, bohr
    charge : int
    meta : dict
        Free-form, JSON-able (model name, timings, ...).
    """

    values: np.ndarray
    grid: Grid
    symbols: tuple = ()
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    charge: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if tuple(self.values.shape) != tuple(self.grid.mesh):
            raise ValueError(f"values of shape {self.values.shape} on a mesh {self.grid.mesh}")

    @property
    def cell(self) -> np.ndarray:
        """Edge lengths, bohr."""
        return np.asarray(self.grid.cell)

    @property
    def mesh(self) -> tuple:
        return self.grid.mesh

    @property
    def atoms(self) -> list[tuple[str, np.ndarray]]:
        """[(symbol, position in bohr), ...]."""
        return list(zip(self.symbols, np.asarray(self.positions)))

    def electrons(self) -> float:
        """Integral of the density over the cell."""
        return self.grid.integrate(self.values)

    def nmae(self, reference) -> float:
        """Normalised mean absolute error against a reference (fraction, not %)."""
        ref = reference.values if isinstance(reference, Density) else np.asarray(reference)
        return nmae(self.values, ref)

    def write(self, path, fmt: str | None = None) -> Path:
        return write_density(path, self, fmt)


def nmae(pred: np.ndarray, ref: np.ndarray) -> float:
    """sum|pred - ref| / sum(ref) over the mesh (the volume element cancels)."""
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {ref.shape}")
    return float(np.abs(pred - ref).sum() / ref.sum())


def format_of(path, fmt: str | None = None) -> str:
    """The format named, or guessed from the file ending."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown density format {fmt!r} (choose from {', '.join(FORMATS)})")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    aliases = {"cub": "cube", "hdf5": "h5"}
    suffix = aliases.get(suffix, suffix)
    if suffix not in FORMATS:
        raise ValueError(f"{path}: cannot tell the format from the ending (use {', '.join(FORMATS)})")
    return suffix


# ---- cube


def _write_cube(path: Path, d: Density) -> None:
    nx, ny, nz = d.grid.mesh
    spacing = d.grid.spacing
    comment = d.meta.get("comment", "rhosr valence electron density (e/bohr^3), periodic mesh, spacing L/n")
    header = [f"{comment}\n", "OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z\n",
              f"{len(d.symbols):5d}{0.0:14.8f}{0.0:14.8f}{0.0:14.8f}\n"]
    for axis, n in enumerate((nx, ny, nz)):
        vec = np.zeros(3)
        vec[axis] = spacing[axis]
        header.append(f"{n:5d}{vec[0]:14.8f}{vec[1]:14.8f}{vec[2]:14.8f}\n")
    for s, (x, y, z) in zip(d.symbols, np.asarray(d.positions)):
        header.append(f"{atomic_number(s):5d}{float(valence_charge(s)):14.8f}{x:14.8f}{y:14.8f}{z:14.8f}\n")
    values = np.asarray(d.values)  # float32 or float64, converted chunk by chunk
    with open(path, "wb") as f:
        f.write("".join(header).encode())
        # rows of 6 values per (x, y) line, the usual layout; ~100k values per chunk
        step = max(1, 100_000 // nz)
        for x in range(nx):
            for j in range(0, ny, step):
                f.write(_cube_rows(values[x, j:j + step]))


#: Absolute values below this are written as zero by :func:`_cube_rows`
#: (they would need a three-digit exponent).
CUBE_TINY = 1e-99

# Lookup tables of the text pieces of one "%14.6E" field: " -d.dd" (sign and the
# first three digits), "dddd" (the last four) and "E+dd"; a field is one record
# of the three, 14 bytes.
_CUBE_HEAD = np.array([f" {'-' if neg else ' '}{h // 100}.{h % 100:02d}".encode()
                       for neg in (0, 1) for h in range(1000)], dtype="S6")
_CUBE_LOW = np.array([f"{i:04d}".encode() for i in range(10_000)], dtype="S4")
_CUBE_EXP = np.array([f"E{e:+03d}".encode() for e in range(-99, 100)], dtype="S4")
_CUBE_P10 = 10.0 ** np.arange(-99, 100)  # _CUBE_P10[99 - e] = 10**-e
_CUBE_FIELD = np.dtype([("head", "S6"), ("low", "S4"), ("exp", "S4")])


def _cube_rows(rows: np.ndarray) -> bytes:
    """``rows`` (m, nz) as cube text: each value as ``"%14.6E"``, 6 per line,
    a line break after each row.  Vectorised: the seven significant digits
    are computed as one integer and turned into text through lookup tables
    (no Python formatting per value, no per-digit passes); the digits agree
    with ``%``-formatting except for an occasional last-digit difference
    where the value lies next to a rounding boundary.  Values with
    ``|v| < CUBE_TINY`` are written as zero; values that are not finite or
    would need a three-digit exponent fall back to ``%``-formatting.
    """
    rows = np.asarray(rows, dtype=np.float64)
    m, nz = rows.shape
    a = np.abs(rows).ravel()
    if not np.all(np.isfinite(a)) or (a.size and a.max() >= 9.9999995e99):
        full, rest = divmod(nz, 6)
        fmt = ("%14.6E" * 6 + "\n") * full + ("%14.6E" * rest + "\n" if rest else "")
        return "".join(fmt % tuple(r) for r in rows).encode()
    neg = np.signbit(rows).ravel()
    a[a < CUBE_TINY] = 0.0
    nonzero = a > 0
    exp = np.zeros(a.shape, dtype=np.int64)
    exp[nonzero] = np.floor(np.log10(a[nonzero]))
    digits = np.rint(a * _CUBE_P10[99 - exp] * 1e6).astype(np.int64)  # d.dddddd * 1e6
    over = digits >= 10_000_000  # 9.9999996 -> 10.000000: one decade up
    if over.any():
        digits[over] = np.rint(digits[over] / 10.0).astype(np.int64)
        exp[over] += 1
    head, low = np.divmod(digits, 10_000)
    fields = np.empty(a.size, dtype=_CUBE_FIELD)
    fields["head"] = _CUBE_HEAD[head + 1000 * neg]
    fields["low"] = _CUBE_LOW[low]
    fields["exp"] = _CUBE_EXP[exp + 99]
    chars = fields.view(np.uint8).reshape(m, nz, 14)
    full, rest = divmod(nz, 6)
    width = full * 85 + (rest * 14 + 1 if rest else 0)
    out = np.empty((m, width), dtype=np.uint8)
    if full:
        lines = out[:, :full * 85].reshape(m, full, 85)
        lines[:, :, :84] = chars[:, :full * 6].reshape(m, full, 84)
        lines[:, :, 84] = ord("\n")
    if rest:
        out[:, full * 85:-1] = chars[:, full * 6:].reshape(m, rest * 14)
        out[:, -1] = ord("\n")
    return out.tobytes()


def _read_cube(path: Path) -> Density:
    from ase.io.cube import read_cube

    with open(path) as fh:
        dct = read_cube(fh)
    atoms = dct["atoms"]
    values = np.asarray(dct["data"], dtype=np.float64)
    spacing = np.diag(np.asarray(dct["spacing"])) / BOHR
    mesh = values.shape
    grid = Grid(tuple(spacing * np.asarray(mesh)), mesh)
    return Density(values, grid, tuple(atoms.get_chemical_symbols()), atoms.positions / BOHR)


# ---- npy


def _write_npy(path: Path, d: Density) -> None:
    np.save(path, np.ascontiguousarray(d.values))


def _read_npy(path: Path) -> Density:
    values = np.load(path, allow_pickle=False)
    side = _npy_sidecar(path)
    if side is None:
        raise ValueError(f"{path}: a bare .npy needs its .json beside it for the cell")
    info = json.loads(side.read_text())
    grid = Grid(tuple(info["cell_bohr"]), tuple(info.get("mesh") or info.get("fine_mesh") or values.shape))
    if tuple(grid.mesh) != values.shape:
        grid = Grid(grid.cell, values.shape)
    atoms = info.get("atoms", [])
    symbols = tuple(a[0] for a in atoms)
    positions = np.array([a[1:] for a in atoms], dtype=float).reshape(-1, 3)
    return Density(values, grid, symbols, positions, int(info.get("charge", 0)), info)


def _npy_sidecar(path: Path) -> Path | None:
    name = path.name
    stem = name.split(".")[0]
    for cand in (path.with_suffix(".json"), path.with_name(stem + ".json")):
        if cand.is_file():
            return cand
    return None


# ---- h5


def _write_h5(path: Path, d: Density) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("density", data=np.asarray(d.values), compression="gzip", shuffle=True)
        f["cell"] = np.asarray(d.grid.cell)
        f["mesh"] = np.asarray(d.grid.mesh)
        f["symbols"] = np.array(d.symbols, dtype="S3")
        f["positions"] = np.asarray(d.positions, dtype=float).reshape(-1, 3)
        f.attrs["charge"] = int(d.charge)
        f.attrs["units"] = "cell, positions: bohr; density: e/bohr^3"
        f.attrs["meta"] = json.dumps(d.meta)


def _read_h5(path: Path) -> Density:
    import h5py

    with h5py.File(path, "r") as f:
        is_record = "density" not in f and "rho_dft" in f  # a record of a label store
        if not is_record:
            values = np.asarray(f["density"][()])
            grid = Grid(tuple(f["cell"][()]), tuple(f["mesh"][()]))
            symbols = tuple(s.decode() for s in f["symbols"][()])
            positions = np.asarray(f["positions"][()])
            charge = int(f.attrs.get("charge", 0))
            meta = json.loads(f.attrs.get("meta", "{}"))
    if is_record:
        from rhosr.labels.store import read_record

        return record_density(read_record(path))
    return Density(values, grid, symbols, positions, charge, meta)


def record_density(rec) -> Density:
    """The DFT label of a store record (:class:`rhosr.labels.store.Record`) as a Density."""
    meta = {"id": rec.id, "kind": "dft", "energy_hartree": rec.energy, "source": rec.source}
    return Density(np.asarray(rec.rho_dft), rec.grid, tuple(rec.symbols), rec.positions,
                   rec.charge, meta)


_WRITERS = {"cube": _write_cube, "npy": _write_npy, "h5": _write_h5}
_READERS = {"cube": _read_cube, "npy": _read_npy, "h5": _read_h5}


def write_density(path, density: Density, fmt: str | None = None) -> Path:
    """Write ``density`` to ``path`` in ``fmt`` (default: from the ending)."""
    path = Path(path)
    fmt = format_of(path, fmt)
    _WRITERS[fmt](path, density)
    return path


def read_density(path, fmt: str | None = None) -> Density:
    """Read a density file written by rhosr (or any cube file).

    An HDF5 record of a label store (``STORE/records/<id>.h5``) reads as its DFT
    density on the fine mesh, with the record's atoms.
    """
    path = Path(path)
    fmt = format_of(path, fmt)
    return _READERS[fmt](path)
