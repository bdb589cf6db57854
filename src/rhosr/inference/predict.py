"""Inference: a structure in, the predicted valence density on the fine mesh out.

    predict(structure, model="default", ...) -> Density

Steps: published box (:func:`rhosr.core.grid.box_for`), SAD on the coarse mesh
(and on the fine mesh for models that read it), the network without its
normalisation — on the whole box, or tile by tile (:func:`tiled_apply`) when
the box does not fit in ``max_memory_gb`` — and one normalisation of the
assembled density to the valence electron count minus the charge over the
whole box.  ``symmetrize=True`` averages over the 48 cube symmetries
(:func:`symmetrized_apply`) and records the spread of the members.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from rhosr.core.grid import UPSAMPLE
from rhosr.core.molecule import DEFAULT_MAX_VOXELS, Molecule
from rhosr.errors import InputError

#: Fine mesh points per coarse mesh point, per axis.
#: Fraction of the free memory used when ``max_memory_gb`` is not given.
MEMORY_FRACTION = 0.5


# --------------------------------------------------------------------------
# model and device


def default_model_path():
    """The bundled model file (a Traversable; may not exist yet)."""
    from importlib.resources import files

    return files("rhosr") / "models" / "default.pt"


def resolve_model(model="default", device="cpu"):
    """``(network, name)`` from "default", a model file path, or a module.

    Raises :class:`InputError` (one line) for a missing or unreadable file.
    """
    from torch import nn

    from rhosr.nn.modelfile import load_model

    if isinstance(model, nn.Module):
        return model.to(device).eval(), type(model).__name__
    if model is None or str(model) == "default":
        path = default_model_path()
        if not path.is_file():
            raise InputError("no bundled model yet: pass --model PATH")
        name = "default"
    else:
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model {path}: no such file")
        name = path.name
    try:
        net = load_model(str(path), map_location="cpu")
    except (ValueError, OSError) as exc:
        raise InputError(f"model {path}: {' '.join(str(exc).split())}") from None
    return net.to(device).eval(), name


def resolve_device(device="auto") -> str:
    import torch

    device = str(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"device {device}: choose auto, cpu or cuda")
    return device


# --------------------------------------------------------------------------
# memory and tiles


def bytes_per_voxel(model) -> float:
    """Rough peak activation memory of a no-grad forward pass, bytes per coarse voxel.

    float32; a few C-channel tensors alive at once plus the circular-padding
    copies; for ``srresnet`` the 8C-channel upsampling tensors dominate.
    """
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "channels", 32)
    up = UPSAMPLE ** 3
    per = 6 * c + (3 * up * c if getattr(cfg, "arch", "") == "srresnet" else 3 * up) + 2 * up + 2
    return 4.0 * per * 1.5


def available_memory_gb(device="cpu") -> float:
    """Free memory on ``device`` (GB): CUDA free memory, psutil, or sysconf."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free / 1e9
    try:
        import psutil

        return psutil.virtual_memory().available / 1e9
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def choose_tile(coarse_mesh, halo: int, per_voxel: float, max_memory_gb: float):
    """Tile edge (coarse voxels) that fits in ``max_memory_gb``, or None for the whole box."""
    mesh = np.asarray(coarse_mesh, dtype=np.int64)
    budget = float(max_memory_gb) * 1e9
    if np.prod(mesh) * per_voxel <= budget:
        return None
    # tiles much smaller than the halo waste most of the work: floor at max(4, halo)
    floor = int(min(max(4, halo), mesh.max()))
    best = floor
    for t in range(floor, int(mesh.max()) + 1):
        window = np.minimum(t, mesh) + 2 * halo
        if np.prod(window.astype(float)) * per_voxel <= budget:
            best = t
        else:
            break
    if np.prod((np.minimum(best, mesh) + 2 * halo).astype(float)) * per_voxel > budget:
        warnings.warn(f"tiles of {best} voxels with a halo of {halo} exceed {max_memory_gb} GB; "
                      "using them anyway", RuntimeWarning, stacklevel=2)
    return best


def _window(start: int, stop: int, halo: int, n: int, factor: int) -> np.ndarray:
    """Periodic (wrapped) indices of [start - halo, stop + halo) on a mesh ``factor`` times finer."""
    return np.arange(factor * (start - halo), factor * (stop + halo)) % (factor * n)


def tiled_apply(fn, sad_coarse: np.ndarray, sad_fine, halo: int, tile) -> np.ndarray:
    """Apply ``fn(coarse, fine) -> fine`` tile by tile over a periodic box.

    Parameters
    ----------
    fn : callable
        ``fn(coarse (x, y, z), fine (2x, 2y, 2z) or None) -> (2x, 2y, 2z)``
        numpy arrays, periodic over its input (circular padding).
    sad_coarse : (X, Y, Z) array
    sad_fine : (2X, 2Y, 2Z) array or None
    halo : int
        Half-width of ``fn``'s receptive field, coarse voxels.
    tile : int, 3 ints, or None
        Interior edge per tile, coarse voxels; None: the whole box at once.

    Each tile is padded with ``halo`` coarse voxels (wrapped around the box),
    passed to ``fn``, and its interior (twice the tile on the fine mesh) is
    written into the output: identical to ``fn`` on the whole box when ``fn``
    only looks ``halo`` voxels away.
    """
    coarse = np.asarray(sad_coarse)
    mesh = coarse.shape[-3:]  # a leading axis holds the input channels of a multi-channel net
    if tile is None:
        return np.asarray(fn(coarse, sad_fine))
    tile = (int(tile),) * 3 if np.ndim(tile) == 0 else tuple(int(t) for t in tile)
    if min(tile) < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if all(t >= n for t, n in zip(tile, mesh)):
        return np.asarray(fn(coarse, sad_fine))
    r = UPSAMPLE
    out = None
    starts = [range(0, n, min(t, n)) for t, n in zip(tile, mesh)]
    for sx in starts[0]:
        for sy in starts[1]:
            for sz in starts[2]:
                lo = (sx, sy, sz)
                hi = tuple(min(s + min(t, n), n) for s, t, n in zip(lo, tile, mesh))
                # an axis covered by one tile needs no halo: the box is periodic
                h = [0 if (s == 0 and e == n) else halo for s, e, n in zip(lo, hi, mesh)]
                ic = [_window(s, e, hh, n, 1) for s, e, hh, n in zip(lo, hi, h, mesh)]
                c = coarse[(Ellipsis,) + np.ix_(*ic)]
                f = None
                if sad_fine is not None:
                    iff = [_window(s, e, hh, n, r) for s, e, hh, n in zip(lo, hi, h, mesh)]
                    f = np.asarray(sad_fine)[np.ix_(*iff)]
                y = np.asarray(fn(c, f))
                if out is None:
                    out = np.empty(tuple(r * n for n in mesh), dtype=y.dtype)
                crop = tuple(slice(r * hh, r * hh + r * (e - s)) for s, e, hh in zip(lo, hi, h))
                dest = tuple(slice(r * s, r * e) for s, e in zip(lo, hi))
                out[dest] = y[crop]
    return out


def symmetrized_apply(fn, sad_coarse: np.ndarray, sad_fine, ops=None):
    """Mean of ``op⁻¹ fn(op coarse, op fine)`` over cube symmetries, and the members.

    Returns ``(mean float64 array, spread_percent)`` with spread = mean over
    members of NMAE(member, mean) in %.  With ``ops`` the full group (default:
    the 48 cube symmetries) the mean is equivariant: transforming the input by
    any op only permutes the members.
    """
    from rhosr.core.density import nmae
    from rhosr.core.symmetry import CUBE_SYMMETRIES, apply_symmetry, invert_symmetry

    ops = CUBE_SYMMETRIES if ops is None else ops
    members = []
    total = None
    for op in ops:
        c = apply_symmetry(np.asarray(sad_coarse), op)
        f = None if sad_fine is None else apply_symmetry(np.asarray(sad_fine), op)
        y = apply_symmetry(np.asarray(fn(c, f)), invert_symmetry(op))
        members.append(y.astype(np.float32))
        total = y.astype(np.float64) if total is None else total + y
    mean = total / len(members)
    spread = 100.0 * float(np.mean([nmae(m, mean) for m in members]))
    return mean, spread


def _net_fn(net, device):
    """The network as a numpy -> numpy function, without normalisation."""
    import torch

    dtype = next(net.parameters()).dtype if any(True for _ in net.parameters()) else torch.float32

    def fn(coarse, fine):
        with torch.no_grad():
            c = torch.as_tensor(np.ascontiguousarray(coarse), dtype=dtype, device=device)
            c = c[None, None] if c.dim() == 3 else c[None]
            f = None
            if fine is not None and getattr(net, "uses_sad_fine", True):
                f = torch.as_tensor(np.ascontiguousarray(fine), dtype=dtype, device=device)[None, None]
            return net(c, f)[0, 0].float().cpu().numpy()

    return fn


# --------------------------------------------------------------------------
# prediction


def predict_arrays(net, sad_coarse, sad_fine, n_electrons: float, dv_fine: float,
                   device="cpu", symmetrize=False, max_memory_gb=None, tile=None):
    """Normalised prediction on the fine mesh from SAD arrays; returns ``(rho, info)``.

    ``tile`` forces a tile edge (coarse voxels); otherwise it follows from
    ``max_memory_gb`` (default: half the free memory of the device).
    """
    halo = int(getattr(net, "receptive_field", 0))
    local = bool(getattr(net, "is_local", False))
    if tile is None:
        budget = max_memory_gb if max_memory_gb is not None else \
            MEMORY_FRACTION * available_memory_gb(device)
        tile = choose_tile(np.shape(sad_coarse)[-3:], halo, bytes_per_voxel(net), budget)
    if tile is not None and not local:
        warnings.warn("this model is not local (global normalisation layers or strided levels): "
                      "running on the whole box instead of tiles", RuntimeWarning, stacklevel=2)
        tile = None
    base = _net_fn(net, device)

    def fn(c, f):
        return tiled_apply(base, c, f, halo, tile)

    info = {"tile": None if tile is None else (list(tile) if np.ndim(tile) else int(tile))}
    if symmetrize:
        rho, spread = symmetrized_apply(fn, sad_coarse, sad_fine)
        info["spread_percent"] = spread
    else:
        rho = np.asarray(fn(sad_coarse, sad_fine), dtype=np.float64)
    rho = np.clip(rho, 0.0, None)
    total = float(rho.sum(dtype=np.float64)) * dv_fine
    if total > 0:
        rho = rho * (float(n_electrons) / total)
    return rho, info


def predict_molecule(mol: Molecule, net, *, model_name: str = "", device="cpu",
                     symmetrize: bool = False, max_memory_gb=None, tile=None):
    """Predicted :class:`~rhosr.core.density.Density` of one molecule on its fine mesh."""
    from rhosr.core.density import Density
    from rhosr.core.grid import box_for
    from rhosr.core.sad import network_input, sad_density

    t0 = time.perf_counter()
    coarse, fine, pos = box_for(mol.positions)
    # float32: what the network reads (agrees with float64 to ~1e-6, faster)
    sad_c = sad_density(mol.symbols, pos, coarse, charge=mol.charge, dtype=np.float32)
    config = getattr(net, "config", None)
    if config is not None and config.inputs != "sad":
        sad_c = network_input(config.inputs, sad_c, mol.symbols, pos, coarse)
    sad_f = sad_density(mol.symbols, pos, fine, charge=mol.charge, dtype=np.float32) \
        if getattr(net, "uses_sad_fine", False) else None
    rho, info = predict_arrays(net, sad_c, sad_f, mol.nelectron, fine.dv, device=device,
                               symmetrize=symmetrize, max_memory_gb=max_memory_gb, tile=tile)
    seconds = time.perf_counter() - t0
    electrons = fine.integrate(rho)
    meta = {
        "comment": f"rhosr predicted valence density of {mol.id} ({model_name}), e/bohr^3, "
                   "periodic mesh, spacing L/n",
        "id": mol.id, "model": model_name, "seconds": seconds, "electrons": electrons,
        "device": str(device), "symmetrized": bool(symmetrize), **info,
    }
    unseen = unseen_by(net, mol)
    if unseen:
        meta["unseen"] = unseen
    return Density(rho, fine, tuple(mol.symbols), pos, int(mol.charge), meta)


def unseen_by(net, mol: Molecule) -> dict:
    """What of ``mol`` the network's training data never held: ``{"elements": [...],
    "charges": [...]}`` with the non-empty entries only; {} when all was seen or the
    model file does not say (``net.seen``, see :func:`rhosr.nn.modelfile.seen_of`)."""
    seen = getattr(net, "seen", None)
    if not seen:
        return {}
    out = {}
    elements = [e for e in dict.fromkeys(mol.symbols) if e not in seen["elements"]]
    if elements:
        out["elements"] = elements
    if int(mol.charge) not in seen["charges"]:
        out["charges"] = [int(mol.charge)]
    return out


def unseen_warning(unseen: dict) -> str:
    """'' or a short sentence for a summary line from :func:`unseen_by`."""
    if not unseen:
        return ""
    what = []
    if unseen.get("elements"):
        what.append("element" + ("s " if len(unseen["elements"]) > 1 else " ")
                    + ", ".join(unseen["elements"]))
    if unseen.get("charges"):
        what.append(f"charge {unseen['charges'][0]:+d}")
    return "warning: the model was never trained on " + " or ".join(what) + \
        " (expect a larger error; fine-tune with rhosr train --init)"


def predict(structure, model="default", charge=None, spin=None, device="auto",
            symmetrize=False, max_memory_gb=None, tile=None,
            max_voxels=DEFAULT_MAX_VOXELS):
    """Predict the valence density of one structure.

    Parameters
    ----------
    structure : str or Molecule
        A spec for :func:`rhosr.core.sources.load_molecules` (file, ``smiles:``,
        ``qm9:``; the first molecule is used) or a :class:`Molecule`.
    model : "default", a model file path, or a network module
    charge, spin : override the molecule's charge and 2S
    device : "auto" (CUDA if available), "cpu" or "cuda"
    symmetrize : average over the 48 cube symmetries; ``meta["spread_percent"]``
    max_memory_gb : activation memory budget; larger boxes run in tiles
    tile : force a tile edge in coarse voxels (testing)

    Returns
    -------
    Density on the fine mesh, normalised to the valence electrons minus the
    charge; ``meta`` holds model, seconds, electrons (and spread_percent).
    """
    from rhosr.core.molecule import validate
    from rhosr.core.sources import load_molecules

    if isinstance(structure, Molecule):
        mol = structure
        if charge is not None or spin is not None:
            mol = mol.with_charge_spin(charge, spin)
        mol = validate(mol, max_voxels)
    else:
        mol = load_molecules(str(structure), charge=charge, spin=spin, max_voxels=max_voxels)[0]
    dev = resolve_device(device)
    net, name = resolve_model(model, dev)
    return predict_molecule(mol, net, model_name=name, device=dev, symmetrize=symmetrize,
                            max_memory_gb=max_memory_gb, tile=tile)


def max_relative_difference(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), math.ulp(0.0)))
