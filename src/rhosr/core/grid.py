"""The published box convention and the coarse and fine meshes.

All lengths inside are in bohr.  A :class:`Grid` describes an orthorhombic,
periodic cell of edge lengths ``cell`` (bohr) sampled at ``mesh`` points per
axis; point ``(i, j, k)`` sits at ``(i*L_x/n_x, j*L_y/n_y, k*L_z/n_z)`` (no
repeated end point).  Arrays on a grid are C-ordered with ``x`` slowest.

Box convention (published data): take the molecule's extent in Å, add a
margin of 2 Å on each side, round each edge up to a whole number of
coarse-mesh steps (the mesh of a 50 Ha kinetic-energy cutoff, step
``pi / sqrt(2 * 50)`` bohr), subtract 1e-4 Å, and put the plain mean of the
positions at the box centre.  The fine (label) mesh has twice as many points
per axis as the coarse (network input) mesh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rhosr.core.units import BOHR

#: Kinetic-energy cutoff (Hartree) whose FFT mesh defines the coarse mesh.
COARSE_CUTOFF_HARTREE = 50.0
#: Step of the coarse mesh before the edge adjustment, bohr (pi/10).
COARSE_STEP_BOHR = math.pi / math.sqrt(2.0 * COARSE_CUTOFF_HARTREE)
#: Vacuum added to the molecule's extent on each side, Å.
MARGIN_ANGSTROM = 2.0
#: Amount taken off every box edge, Å.
EDGE_TRIM_ANGSTROM = 1e-4
#: Fine mesh points per coarse mesh point, per axis.
UPSAMPLE = 2
#: Kinetic-energy cutoff (Hartree) of the DFT density mesh in the published data.
DFT_CUTOFF_HARTREE = 200.0


@dataclass(frozen=True)
class Grid:
    """A periodic orthorhombic mesh.

    Attributes
    ----------
    cell : tuple of 3 floats
        Edge lengths, bohr.
    mesh : tuple of 3 ints
        Number of points along x, y, z.
    """

    cell: tuple[float, float, float]
    mesh: tuple[int, int, int]

    def __post_init__(self):
        cell = tuple(float(c) for c in self.cell)
        mesh = tuple(int(n) for n in self.mesh)
        if len(cell) != 3 or len(mesh) != 3:
            raise ValueError("a grid needs 3 edge lengths and 3 mesh sizes")
        if min(cell) <= 0 or min(mesh) <= 0:
            raise ValueError(f"invalid grid cell={cell} mesh={mesh}")
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "mesh", mesh)

    @property
    def spacing(self) -> np.ndarray:
        """Point spacing per axis, bohr (L/n)."""
        return np.asarray(self.cell) / np.asarray(self.mesh)

    @property
    def dv(self) -> float:
        """Volume per point, bohr³."""
        return float(np.prod(self.spacing))

    @property
    def size(self) -> int:
        return int(np.prod(self.mesh))

    @property
    def volume(self) -> float:
        return float(np.prod(self.cell))

    def axes(self) -> list[np.ndarray]:
        """Point coordinates along each axis, bohr."""
        return [np.arange(n) * (length / n) for n, length in zip(self.mesh, self.cell)]

    def coords(self) -> np.ndarray:
        """All point coordinates, shape (nx*ny*nz, 3), bohr, x slowest."""
        x, y, z = np.meshgrid(*self.axes(), indexing="ij")
        return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)

    def refine(self, factor: int = UPSAMPLE) -> "Grid":
        """The same cell with ``factor`` times as many points per axis."""
        return Grid(self.cell, tuple(n * factor for n in self.mesh))

    def coarsen(self, factor: int = UPSAMPLE) -> "Grid":
        """The same cell with ``factor`` times fewer points; mesh must divide."""
        if any(n % factor for n in self.mesh):
            raise ValueError(f"mesh {self.mesh} is not divisible by {factor}")
        return Grid(self.cell, tuple(n // factor for n in self.mesh))

    def integrate(self, values: np.ndarray) -> float:
        """Sum of ``values`` times the point volume."""
        return float(np.sum(values, dtype=np.float64) * self.dv)


def box_mesh(positions_bohr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coarse mesh and cell of the published box convention.

    Parameters
    ----------
    positions_bohr : (natm, 3) array, bohr

    Returns
    -------
    n_coarse : (3,) int array
    cell_bohr : (3,) float array
    """
    pos_ang = np.asarray(positions_bohr, dtype=float) * BOHR
    extent = pos_ang.max(axis=0) - pos_ang.min(axis=0)
    step_ang = COARSE_STEP_BOHR * BOHR
    # a tiny tolerance so that an extent that is a whole number of steps in
    # exact arithmetic is not pushed one step up by rounding noise
    n_coarse = np.ceil((extent + 2 * MARGIN_ANGSTROM) / step_ang - 1e-9).astype(int)
    n_coarse = np.maximum(n_coarse, 1)
    cell_ang = n_coarse * step_ang - EDGE_TRIM_ANGSTROM
    return n_coarse, cell_ang / BOHR


def centre_in_box(positions_bohr: np.ndarray, cell_bohr) -> np.ndarray:
    """Positions translated so that their plain mean sits at the box centre."""
    pos = np.asarray(positions_bohr, dtype=float)
    return pos - pos.mean(axis=0) + np.asarray(cell_bohr, dtype=float) / 2


def box_for(positions_bohr: np.ndarray) -> tuple[Grid, Grid, np.ndarray]:
    """Coarse grid, fine grid and centred positions for a molecule.

    Returns
    -------
    coarse : Grid
    fine : Grid
        Twice the coarse mesh per axis, same cell.
    positions : (natm, 3) array, bohr, centred in the box.
    """
    n_coarse, cell = box_mesh(positions_bohr)
    coarse = Grid(tuple(cell), tuple(n_coarse))
    return coarse, coarse.refine(UPSAMPLE), centre_in_box(positions_bohr, cell)


def padded_mesh(mesh, stride: int) -> tuple:
    """``mesh`` rounded up to a multiple of ``stride`` per axis."""
    return tuple(-(-int(n) // int(stride)) * int(stride) for n in mesh)


def pad_periodic(values: np.ndarray, mesh) -> np.ndarray:
    """``values`` (..., X, Y, Z) on the larger mesh ``mesh`` filled by periodic
    continuation: point X + i holds point i (the value of the periodic density there), and
    the larger mesh wraps after it.  The array itself when the mesh is the same."""
    values = np.asarray(values)
    extra = [int(m) - n for m, n in zip(mesh, values.shape[-3:])]
    if not any(extra):
        return values
    if min(extra) < 0:
        raise ValueError(f"cannot pad a mesh {values.shape[-3:]} to a smaller {tuple(mesh)}")
    return np.pad(values, [(0, 0)] * (values.ndim - 3) + [(0, e) for e in extra], mode="wrap")

