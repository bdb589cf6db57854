"""Quick-look pictures of a density: three orthogonal slices through the molecule.

    plot_density(density, "out.png", reference=None)

Row 1: the density (square-root colour scale, e/bohr³) in the yz, xz and xy
planes through the centre of the atoms (for a planar molecule: the plane of
the molecule, if it lies in a mesh plane, is one of them).  With a reference
on the same mesh: row 2 the reference on the same scale, row 3 the
difference (density - reference, symmetric linear scale).  Atoms within
1 bohr of a plane are drawn as filled dots, the others as faint rings
(white on the densities, grey on the difference map).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rhosr.errors import InputError

#: Atoms closer than this to a slice (bohr) are drawn as filled dots.
NEAR_PLANE_BOHR = 1.0


def _slice_indices(density) -> list[int]:
    """Mesh index per axis of the planes through the centre of the atoms."""
    pos = np.asarray(density.positions, dtype=float).reshape(-1, 3)
    mesh = np.asarray(density.grid.mesh)
    spacing = density.grid.spacing
    if len(pos):
        centre = pos.mean(axis=0)
        # a planar molecule lying in a mesh plane: use that plane
        spread = pos.max(axis=0) - pos.min(axis=0)
        centre = np.where(spread < 1e-3, pos[0], centre)
    else:
        centre = np.asarray(density.grid.cell) / 2
    return [int(round(c / s)) % n for c, s, n in zip(centre, spacing, mesh)]


def _plane(values, axis: int, index: int) -> np.ndarray:
    return np.take(values, index, axis=axis)


def check_reference(density, reference, what: str = "reference") -> None:
    """Raise InputError unless ``reference`` lies on the same mesh as ``density``."""
    if tuple(reference.grid.mesh) != tuple(density.grid.mesh):
        raise InputError(f"{what}: reference mesh {tuple(reference.grid.mesh)} differs from "
                         f"{tuple(density.grid.mesh)}")


def plot_density(density, path, reference=None, title: str | None = None) -> Path:
    """Write a PNG of slices of ``density`` (and ``reference`` and the difference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm, TwoSlopeNorm

    if reference is not None:
        check_reference(density, reference, title or "reference")
    values = np.asarray(density.values, dtype=float)
    idx = _slice_indices(density)
    cell = np.asarray(density.grid.cell)
    spacing = density.grid.spacing
    pos = np.asarray(density.positions, dtype=float).reshape(-1, 3)
    rows = [("predicted" if reference is not None else "density", values)]
    if reference is not None:
        ref = np.asarray(reference.values, dtype=float)
        rows += [("reference", ref), ("difference", values - ref)]
    vmax = max(float(np.max(r[1])) for r in rows[:2]) or 1.0
    dmax = float(np.max(np.abs(rows[2][1]))) if reference is not None else 0.0
    dmax = dmax or 1e-12
    names = "xyz"
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 3.6 * len(rows)), squeeze=False)
    for r, (label, arr) in enumerate(rows):
        for axis in range(3):
            ax = axes[r][axis]
            u, v = [a for a in range(3) if a != axis]
            plane = _plane(arr, axis, idx[axis])
            extent = (0, cell[u], 0, cell[v])
            if label == "difference":
                norm, cmap = TwoSlopeNorm(0.0, -dmax, dmax), "RdBu_r"
            else:
                norm, cmap = PowerNorm(0.5, vmin=0.0, vmax=vmax), "viridis"
            im = ax.imshow(plane.T, origin="lower", extent=extent, norm=norm, cmap=cmap,
                           interpolation="nearest", aspect="equal")
            if len(pos):
                near = np.abs(((pos[:, axis] - idx[axis] * spacing[axis] + cell[axis] / 2)
                               % cell[axis]) - cell[axis] / 2) < NEAR_PLANE_BOHR
                ax.scatter(pos[near, u], pos[near, v], s=18, c="white", edgecolors="black",
                           linewidths=0.6)
                ax.scatter(pos[~near, u], pos[~near, v], s=18, facecolors="none",
                           edgecolors="grey" if label == "difference" else "white",
                           linewidths=0.5, alpha=0.6)
            ax.set_xlim(0, cell[u])
            ax.set_ylim(0, cell[v])
            ax.set_xlabel(f"{names[u]} (bohr)")
            ax.set_ylabel(f"{names[v]} (bohr)")
            ax.set_title(f"{label}, {names[axis]} = {idx[axis] * spacing[axis]:.2f} bohr", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8, label="e/bohr$^3$")
    if title is None:
        title = str(density.meta.get("id", "")) if isinstance(density.meta, dict) else ""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
