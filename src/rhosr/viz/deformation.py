"""The deformation density ρ − SAD in a plane through the molecule: the paper picture.

    plot_deformation(density, "out.png", atoms=None, reference=None)

The plane passes through three chosen atoms (``atoms``: 0-based indices here; the command
line counts from 1) or, by default, is the best-fitting plane of all atoms (least squares:
through their centroid, normal along the smallest principal axis).  ρ − SAD (SAD: neutral
atoms on the same mesh, normalised to the density's electron count) is interpolated
linearly from the mesh onto a square grid in the plane; contour lines at ±BASE·2ⁿ e/bohr³
(gain solid red, loss dashed blue, zero dotted); atoms within 0.5 bohr of the plane are
drawn in Jmol colours with their labels, farther ones up to 2 bohr faded, and bonds between
the drawn atoms (covalent radii × 1.1).  With a reference on the same mesh: three panels,
ρ − SAD, ρ_ref − SAD and ρ − ρ_ref (finer contours).  Axes in Å.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from rhosr.core.sad import sad_density
from rhosr.core.units import BOHR
from rhosr.errors import InputError
from rhosr.viz.view import charge_of, check_fits, check_same_structure

#: First contour level of ρ − SAD and of ρ − ρ_ref, e/bohr³; the others double it.
DEFORMATION_BASE = 0.0025
ERROR_BASE = 0.0005
CONTOURS = 8
#: Atoms closer to the plane than this (bohr) are drawn in full, up to FADED_BOHR faded.
NEAR_BOHR = 0.5
FADED_BOHR = 2.0
#: Vacuum drawn around the atoms' projections, bohr; step of the plane grid, bohr.
MARGIN_BOHR = 2.5
STEP_BOHR = 0.1
GAIN, LOSS = "#d7301f", "#2166ac"
#: Two atoms closer than this times the sum of their covalent radii are bonded.
BOND_FACTOR = 1.1


def plane_of(positions, atoms=None):
    """(origin, u, v, normal) of the plane, bohr: through three atoms (0-based indices; u
    from the first to the second) or the best-fitting plane of all."""
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    if atoms is not None:
        atoms = [int(a) for a in atoms]
        if len(atoms) != 3 or len(set(atoms)) != 3:
            raise InputError(f"--atoms needs three different atoms, got {[a + 1 for a in atoms]}")
        bad = [a + 1 for a in atoms if not 0 <= a < len(pos)]
        if bad:
            raise InputError(f"--atoms {bad[0]}: no such atom (the structure has {len(pos)}; "
                             f"count from 1)")
        a, b, c = pos[atoms]
        u = b - a
        normal = np.cross(u, c - a)
        if np.linalg.norm(normal) < 1e-3 * max(np.linalg.norm(u), 1e-9) ** 2:
            raise InputError(f"--atoms {' '.join(str(i + 1) for i in atoms)}: the three atoms lie "
                             f"on one line and span no plane")
        origin = (a + b + c) / 3
    else:
        origin = pos.mean(axis=0)
        if len(pos) < 3:
            _, _, vt = np.linalg.svd(np.vstack([pos - origin, np.eye(3) * 1e-6]))
        else:
            _, _, vt = np.linalg.svd(pos - origin)
        u, normal = vt[0], vt[2]
    u = u / np.linalg.norm(u)
    normal = normal / np.linalg.norm(normal)
    v = np.cross(normal, u)
    return origin, u, v, normal


def sample_plane(values, grid, origin, u, v, extent, step: float = STEP_BOHR) -> np.ndarray:
    """``values`` (on ``grid``) interpolated linearly at origin + a·u + b·v for a, b on a
    grid over ``extent`` = (a0, a1, b0, b1) bohr; NaN outside the cell.  Shape (nb, na)."""
    from scipy.ndimage import map_coordinates

    a = np.arange(extent[0], extent[1] + step / 2, step)
    b = np.arange(extent[2], extent[3] + step / 2, step)
    aa, bb = np.meshgrid(a, b)
    pts = origin + aa[..., None] * u + bb[..., None] * v
    cell = np.asarray(grid.cell)
    inside = np.all((pts >= 0) & (pts < cell), axis=-1)
    idx = (pts / np.asarray(grid.spacing)).reshape(-1, 3).T
    out = map_coordinates(np.asarray(values, dtype=np.float64), idx, order=1, mode="grid-wrap")
    out = out.reshape(aa.shape)
    out[~inside] = np.nan
    return out


def deformation_values(density) -> np.ndarray:
    """ρ − SAD on the density's mesh (the SAD normalised to the density's electron count)."""
    sad = sad_density(density.symbols, density.positions, density.grid, charge=charge_of(density))
    return np.asarray(density.values, dtype=np.float64) - sad


def _panel(ax, field, extent, base: float, label: str) -> None:
    levels = base * 2.0 ** np.arange(CONTOURS)
    a0, a1, b0, b1 = (x * BOHR for x in extent)
    kw = {"extent": (a0, a1, b0, b1), "origin": "lower"}
    ax.contour(field, levels=levels, colors=GAIN, linewidths=0.9, linestyles="solid", **kw)
    ax.contour(field, levels=-levels[::-1], colors=LOSS, linewidths=0.9, linestyles="dashed", **kw)
    ax.contour(field, levels=[0.0], colors="0.55", linewidths=0.6, linestyles="dotted", **kw)
    ax.set_title(f"{label}: gain solid red, loss dashed blue\ncontours \u00b1{base:g}\u00b72\u207f "
                 f"e/bohr\u00b3 (n = 0..{CONTOURS - 1})", fontsize=9)
    ax.set_xlim(a0, a1)
    ax.set_ylim(b0, b1)
    ax.set_aspect("equal")
    ax.set_xlabel("\u00c5")
    ax.set_ylabel("\u00c5")


def _atoms_and_bonds(ax, symbols, coords, dist) -> None:
    """Atoms near the plane (in-plane coordinates in Å) and the bonds between them."""
    from ase.data import atomic_numbers, covalent_radii
    from ase.data.colors import jmol_colors

    z = [atomic_numbers.get(s, 0) for s in symbols]
    radius = np.array([covalent_radii[n] for n in z]) / BOHR  # bohr
    shown = np.flatnonzero(dist < FADED_BOHR)
    for n, i in enumerate(shown):
        for j in shown[n + 1:]:
            if np.linalg.norm(coords[i][:3] - coords[j][:3]) < BOND_FACTOR * (radius[i] + radius[j]):
                near = dist[i] < NEAR_BOHR and dist[j] < NEAR_BOHR
                ax.plot(*(np.array([coords[i][3:], coords[j][3:]]).T), color="black" if near else "0.6",
                        lw=2.0 if near else 1.0, zorder=3, solid_capstyle="round")
    for i in shown:
        near = dist[i] < NEAR_BOHR
        ax.scatter(*coords[i][3:], s=40 + 120 * radius[i], color=jmol_colors[z[i]], edgecolors="black",
                   linewidths=0.8, zorder=4, alpha=1.0 if near else 0.35)
        if near:
            ax.annotate(f"{symbols[i]}{i + 1}", coords[i][3:], xytext=(5, 5), textcoords="offset points",
                        fontsize=7, zorder=5)


def plot_deformation(density, path, atoms=None, reference=None, title: str | None = None) -> Path:
    """Write a PNG of ρ − SAD (and ρ_ref − SAD, ρ − ρ_ref) in a plane; ``atoms``: three
    0-based indices, or None for the best-fitting plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    what = title or str(density.meta.get("id") or "density")
    check_fits(density, what)
    if reference is not None:
        check_same_structure(density, reference, what)
    pos = np.asarray(density.positions, dtype=float).reshape(-1, 3)
    origin, u, v, normal = plane_of(pos, atoms)
    rel = pos - origin
    a, b, dist = rel @ u, rel @ v, np.abs(rel @ normal)
    drawn = dist < FADED_BOHR if np.any(dist < FADED_BOHR) else np.ones(len(pos), bool)
    span = max(np.ptp(a[drawn]), np.ptp(b[drawn])) / 2 + MARGIN_BOHR  # a square picture
    ca, cb = (a[drawn].max() + a[drawn].min()) / 2, (b[drawn].max() + b[drawn].min()) / 2
    extent = (ca - span, ca + span, cb - span, cb + span)
    deform = deformation_values(density)
    panels = [("\u03c1 \u2212 SAD", sample_plane(deform, density.grid, origin, u, v, extent),
               DEFORMATION_BASE)]
    if reference is not None:
        ref = np.asarray(reference.values, dtype=np.float64)
        panels.append(("\u03c1_ref \u2212 SAD", sample_plane(deform - np.asarray(density.values) + ref,
                                                             density.grid, origin, u, v, extent),
                       DEFORMATION_BASE))
        panels.append(("\u03c1 \u2212 \u03c1_ref", sample_plane(np.asarray(density.values) - ref,
                                                               density.grid, origin, u, v, extent),
                       ERROR_BASE))
    coords = np.column_stack([pos, a * BOHR, b * BOHR])  # 3D bohr (bond test), in-plane Å
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.6), squeeze=False)
    for ax, (label, field, base) in zip(axes[0], panels):
        _panel(ax, field, extent, base, label)
        _atoms_and_bonds(ax, list(density.symbols), coords, dist)
    plane = ("plane of atoms " + " ".join(str(i + 1) for i in atoms) if atoms is not None
             else "best-fitting molecular plane")
    fig.suptitle("\n".join(textwrap.wrap(f"{what}: deformation density in the {plane}", 70 * len(panels))),
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return path
