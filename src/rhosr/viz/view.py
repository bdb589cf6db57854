"""One self-contained HTML page of densities: atoms and isosurfaces, offline.

    entry = view_entry(density, reference=None)       # one molecule's data
    html = view_page([entry, ...], isovalue=0.05)     # the page (a selector for several)
    write_page("out.html", html)

The page inlines 3Dmol.js (``vendor/``, BSD-3-Clause, its licence text included) and the
data, and a Content-Security-Policy forbids every request: it works from ``file://``
without a network or a server.  Per molecule it holds the atoms (xyz, Å) and up to three
fields on the view mesh (the coarse mesh: every second point of the fine mesh, by default):

=============  ==========================================================================
``density``    ρ, one isosurface (default 0.05 e/bohr³)
``deformation`` ρ − SAD (the superposition of neutral atoms, on the same mesh and normalised
               to the same electron count): where bonding moved electrons, gain and loss
``error``      ρ − ρ_ref with a reference (NMAE over the fine mesh in the title)
=============  ==========================================================================

Each field is sent as little-endian float16 (3 significant digits), with values whose
magnitude lies below the smallest isovalue of its slider set to zero, deflated (zlib) and
base64-encoded; the page inflates it with the browser's DecompressionStream.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np

from rhosr._version import __version__
from rhosr.core.elements import valence_charge
from rhosr.core.grid import Grid
from rhosr.core.sad import sad_density
from rhosr.core.units import BOHR
from rhosr.errors import InputError

HERE = Path(__file__).parent
VENDOR = HERE / "vendor"
LIBRARY = VENDOR / "3Dmol-min.js"
LIBRARY_VERSION = "2.5.5"

#: Default isovalue of the density, e/bohr³.
DEFAULT_ISOVALUE = 0.05

#: The surfaces a page offers: key, button label, title, isovalue slider range and default
#: (e/bohr³), surface colours (sign of the isovalue, colour, legend), opacity.
MODES = (
    {"key": "density", "label": "\u03c1", "title": "density \u03c1", "range": [0.002, 1.0],
     "default": DEFAULT_ISOVALUE, "opacity": 0.7,
     "surfaces": [{"sign": 1, "color": "#e8b400", "name": "\u03c1"}]},
    {"key": "deformation", "label": "\u03c1 \u2212 SAD",
     "title": "deformation density \u03c1 \u2212 SAD", "range": [0.001, 0.2], "default": 0.01,
     "opacity": 0.8, "surfaces": [{"sign": 1, "color": "#d7301f", "name": "gain"},
                                  {"sign": -1, "color": "#2166ac", "name": "loss"}]},
    {"key": "error", "label": "\u03c1 \u2212 \u03c1_ref", "title": "error \u03c1 \u2212 \u03c1_ref",
     "range": [0.0001, 0.05], "default": 0.001, "opacity": 0.8,
     "surfaces": [{"sign": 1, "color": "#1b9e77", "name": "\u03c1 > \u03c1_ref"},
                  {"sign": -1, "color": "#7b3294", "name": "\u03c1 < \u03c1_ref"}]},
    {"key": "none", "label": "atoms", "title": "atoms only", "range": [1.0, 2.0], "default": 1.0,
     "opacity": 1.0, "surfaces": []},
)
#: Values below this fraction of a field's smallest isovalue are sent as zero.
FLOOR_FRACTION = 0.5
#: Atoms may lie this many mesh steps outside the cell and still fit it.
OUTSIDE_STEPS = 1.0


def mode(key: str) -> dict:
    return next(m for m in MODES if m["key"] == key)


def view_stride(grid: Grid, mesh: str = "coarse") -> int:
    """Points of the fine mesh per point of the view mesh: 2 ('coarse'), 1 ('fine')."""
    if mesh not in ("coarse", "fine"):
        raise InputError(f"unknown view mesh {mesh!r} (coarse or fine)")
    return 2 if mesh == "coarse" and min(grid.mesh) >= 8 else 1


def check_fits(density, what: str) -> None:
    """Raise InputError unless ``density`` has atoms inside its cell and integrates to
    their valence electron count minus a whole charge."""
    pos = np.asarray(density.positions, dtype=float).reshape(-1, 3)
    if not len(pos):
        raise InputError(f"{what}: no atoms with the density (needs a cube, h5 or npy+json file "
                         f"written by rhosr)")
    cell, step = np.asarray(density.grid.cell), density.grid.spacing
    outside = np.any((pos < -OUTSIDE_STEPS * step) | (pos > cell + OUTSIDE_STEPS * step), axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        raise InputError(f"{what}: the mesh does not fit the structure: atom {i + 1} "
                         f"({density.symbols[i]}) at {np.round(pos[i], 2).tolist()} bohr lies "
                         f"outside the cell {np.round(cell, 2).tolist()} bohr")
    charge_of(density, what)


def charge_of(density, what: str = "density") -> int:
    """The net charge: the density's own when it has one, else (cube files do not store it)
    the one that makes its integral the valence count; InputError when the integral is no
    valence density of these atoms with that charge."""
    valence = sum(valence_charge(s) for s in density.symbols)
    electrons = density.electrons()
    charge = int(density.charge) or int(round(valence - electrons))
    if abs(valence - electrons - charge) > 0.05 + 1e-3 * valence or charge >= valence:
        raise InputError(f"{what}: the density integrates to {electrons:.3f} electrons, not the "
                         f"valence count of its {len(density.symbols)} atoms ({valence}) minus a "
                         f"whole charge: the mesh does not fit the structure")
    return charge


def check_same_structure(density, reference, what: str) -> None:
    """Raise InputError unless ``reference`` lies on the same mesh with the same atoms."""
    if tuple(reference.grid.mesh) != tuple(density.grid.mesh):
        raise InputError(f"{what}: reference mesh {tuple(reference.grid.mesh)} differs from "
                         f"{tuple(density.grid.mesh)}")
    if not np.allclose(reference.grid.cell, density.grid.cell, atol=1e-3):
        raise InputError(f"{what}: reference cell {np.round(reference.grid.cell, 3).tolist()} bohr "
                         f"differs from {np.round(density.grid.cell, 3).tolist()}")
    ref_pos = np.asarray(reference.positions, dtype=float).reshape(-1, 3)
    if len(ref_pos) and (tuple(reference.symbols) != tuple(density.symbols) or not np.allclose(
            ref_pos, np.asarray(density.positions, dtype=float).reshape(-1, 3), atol=0.05)):
        raise InputError(f"{what}: the reference holds other atoms or positions than the density")


def sad_on_view_mesh(density, stride: int) -> np.ndarray:
    """SAD of the density's atoms on its mesh taken every ``stride`` points, normalised to
    the density's electron count (computed on the coarser mesh directly when it divides)."""
    grid = density.grid
    step = stride if all(n % stride == 0 for n in grid.mesh) else 1
    sad = sad_density(density.symbols, density.positions, Grid(grid.cell, tuple(n // step for n in
                                                                                 grid.mesh)),
                      charge=charge_of(density))
    s = stride // step
    return sad[::s, ::s, ::s]


def encode(values: np.ndarray, floor: float) -> str:
    """float16, |v| < floor set to 0, zlib, base64 (C order, x slowest)."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.abs(v) < floor, 0.0, v).astype("<f2")
    return base64.b64encode(zlib.compress(v.tobytes(), 9)).decode("ascii")


def xyz_text(density, title: str) -> str:
    """The atoms as xyz text in Å (the frame of the mesh)."""
    pos = np.asarray(density.positions, dtype=float).reshape(-1, 3) * BOHR
    lines = [str(len(pos)), " ".join(title.split())]
    lines += [f"{s} {x:.5f} {y:.5f} {z:.5f}" for s, (x, y, z) in zip(density.symbols, pos)]
    return "\n".join(lines) + "\n"


def view_entry(density, reference=None, title: str | None = None, mesh: str = "coarse",
               what: str | None = None) -> dict:
    """One molecule's data for :func:`view_page` (the fields encoded; no arrays kept)."""
    title = title or str(density.meta.get("id") or "density")
    what = what or title
    check_fits(density, what)
    if reference is not None:
        check_same_structure(density, reference, what)
    s = view_stride(density.grid, mesh)
    rho = np.asarray(density.values)[::s, ::s, ::s]
    fields = {"density": rho, "deformation": rho - sad_on_view_mesh(density, s)}
    nmae = None
    if reference is not None:
        fields["error"] = rho - np.asarray(reference.values)[::s, ::s, ::s]
        nmae = 100 * density.nmae(reference)
    size = list(rho.shape)
    unit = (np.asarray(density.grid.spacing) * s * BOHR).tolist()
    encoded = {k: encode(v, FLOOR_FRACTION * mode(k)["range"][0]) for k, v in fields.items()}
    about = (f"{title}: {len(density.symbols)} atoms; mesh sent {'x'.join(map(str, size))} "
             f"({'every second point of' if s == 2 else 'the'} fine mesh "
             f"{'x'.join(map(str, density.grid.mesh))}, step {unit[0]:.3f} \u00c5), float16, "
             f"{sum(len(v) for v in encoded.values()) / 1e3:.0f} kB of data.")
    return {"id": str(density.meta.get("id") or title), "title": title,
            "xyz": xyz_text(density, title), "nmae_percent": nmae,
            "grid": {"size": size, "unit": unit, "origin": [0.0, 0.0, 0.0]},
            "fields": encoded, "about": about}


def check_isovalue(isovalue: float) -> None:
    """Raise InputError unless the density's isovalue lies on its slider."""
    lo, hi = mode("density")["range"]
    if not lo <= isovalue <= hi:
        raise InputError(f"--isovalue {isovalue:g}: choose between {lo:g} and {hi:g} e/bohr^3")


def view_page(entries: list[dict], isovalue: float = DEFAULT_ISOVALUE, title: str | None = None) -> str:
    """The HTML page of the entries (a selector when there are several)."""
    if not entries:
        raise InputError("no molecule to show")
    check_isovalue(isovalue)
    modes = [dict(m) for m in MODES]
    modes[0]["default"] = float(isovalue)
    data = json.dumps({"modes": modes, "molecules": entries}, separators=(",", ":"),
                      ensure_ascii=True).replace("<", "\\u003c")
    if title is None:
        title = entries[0]["title"] if len(entries) == 1 else f"{len(entries)} molecules"
    parts = {
        "@@TITLE@@": html.escape(f"{title} \u2014 rhosr view"),
        "@@VERSION@@": html.escape(__version__), "@@LIBVERSION@@": LIBRARY_VERSION,
        "@@LICENSE@@": _no_script_end((VENDOR / "LICENSE-3Dmol.txt").read_text(encoding="utf-8")),
        "@@LIB@@": _no_script_end(LIBRARY.read_text(encoding="utf-8")),
        "@@APP@@": _no_script_end((HERE / "templates" / "view.js").read_text(encoding="utf-8")),
        "@@DATA@@": data,
    }
    page = (HERE / "templates" / "view.html").read_text(encoding="utf-8")
    return re.sub(r"@@[A-Z]+@@", lambda m: parts[m.group(0)], page)  # one pass: no text rescanned


def _no_script_end(text: str) -> str:
    if "</script" in text.lower():
        raise ValueError("inlined text holds '</script'")
    return text


def check_writable(path) -> Path:
    """Raise InputError unless an HTML page can be written at ``path`` (nothing is created)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"-o {path}: is a directory (give FILE.html)")
    if not parent.is_dir():
        raise InputError(f"-o {path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"-o {path}: not writable")
    return path


def write_page(path, page: str) -> Path:
    """Write the page (through a temporary file, so that a failure leaves nothing behind)."""
    path = check_writable(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"-o {path}: cannot write ({exc.strerror or exc})") from None
    return path
