"""Inference: a structure in, the predicted valence density on the fine mesh out.

    predict(structure, model="default", ...) -> Density

Steps: published box (:func:`rhosr.core.grid.box_for`), SAD on the coarse mesh
(and on the fine mesh for models that read it), padded to a multiple of the
network's stride, the network without its normalisation — on the whole box, or
tile by tile at aligned origins (:func:`tiled_apply`) when the box does not fit
in ``max_memory_gb`` — and one normalisation of the assembled density, cropped
to the box, to the valence electron count minus the charge.  ``symmetrize=True``
averages over the 48 cube symmetries (:func:`symmetrized_apply`) and records the
spread of the members.
"""

from __future__ import annotations

import math
import time
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from rhosr.core.density import Density
from rhosr.core.grid import UPSAMPLE, box_for, padded_mesh
from rhosr.core.molecule import DEFAULT_MAX_VOXELS, Molecule, validate
from rhosr.core.sources import load_molecules
from rhosr.errors import InputError
from rhosr.inference.tiling import (
    MEMORY_FRACTION,
    available_memory_gb,
    bytes_per_voxel,
    choose_tile,
    symmetrized_apply,
    tiled_apply,
)
from rhosr.nn.device import resolve_device
from rhosr.nn.inputs import features, model_inputs, normalize_density
from rhosr.nn.modelfile import load_model

# --------------------------------------------------------------------------
# model and device


def default_model_path():
    """The bundled model file (a Traversable; may not exist yet)."""
    return files("rhosr") / "models" / "default.pt"


def resolve_model(model="default", device="cpu"):
    """``(network, name)`` from "default", a model file path, or a module.

    Raises :class:`InputError` (one line) for a missing or unreadable file.
    """
    if isinstance(model, torch.nn.Module):
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


def net_fn(net, device):
    """The network as a numpy -> numpy function ``(coarse, fine) -> fine``, without its
    normalisation: ``coarse`` (C, X, Y, Z) or (X, Y, Z), ``fine`` (UX, UY, UZ) or None."""
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


#: Boxes with more fine-mesh points than this are predicted in float32 throughout (the
#: output, its normalisation in place) to keep memory at ~4.5 bytes per fine point.
FLOAT32_ABOVE_VOXELS = 64_000_000
#: The default memory budget (GB) when ``max_memory_gb`` is not given: at most this, and
#: at most MEMORY_FRACTION of the free memory.
DEFAULT_MEMORY_CAP_GB = 6.0


def memory_budget_gb(max_memory_gb, device) -> float:
    """The budget a prediction keeps to (GB): ``max_memory_gb``, or by default
    min(DEFAULT_MEMORY_CAP_GB, MEMORY_FRACTION of the free memory of the device)."""
    if max_memory_gb is not None:
        return float(max_memory_gb)
    return min(DEFAULT_MEMORY_CAP_GB, MEMORY_FRACTION * available_memory_gb(device))


def tiling_of(net, coarse_mesh, held_bytes: float, max_memory_gb=None, device="cpu", tile=None):
    """``(tile, halo)`` for a prediction on the (padded) ``coarse_mesh``: ``tile`` the
    interior edges (None: whole box) that keep the activations within the budget left after
    the ``held_bytes`` of input and output arrays, ``halo`` the receptive field rounded up to
    the network's stride (:func:`rhosr.nn.nets.tile_stride`).  A forced ``tile`` is rounded
    up to the stride."""
    stride = int(getattr(net, "tile_stride", 1))
    halo = padded_mesh([int(getattr(net, "receptive_field", 0))], stride)[0]
    if tile is None:
        budget = memory_budget_gb(max_memory_gb, device) - held_bytes / 1e9
        tile = choose_tile(coarse_mesh, halo, bytes_per_voxel(net), max(budget, 0.0), stride)
    elif stride > 1:
        tile = padded_mesh((tile,) * 3 if np.ndim(tile) == 0 else tile, stride)
    if tile is not None and not getattr(net, "is_tileable", False):
        warnings.warn("this model is not local (global normalisation layers): "
                      "running on the whole box instead of tiles", RuntimeWarning, stacklevel=3)
        tile = None
    return tile, halo


def predict_arrays(net, sad_coarse, sad_fine, n_electrons: float, dv_fine: float,
                   device="cpu", symmetrize=False, max_memory_gb=None, tile=None,
                   mesh=None, progress=False, overwrite_fine=False):
    """Normalised prediction on the box's fine mesh from the network's input arrays
    (:func:`rhosr.nn.inputs.features`); returns ``(rho, info)``.

    A strided network (``tile_stride`` > 1) reads arrays on a mesh that is a multiple of its
    stride: ``features(..., pad_to=net.tile_stride)``, the box plus a little vacuum, with
    ``mesh`` the box's coarse mesh (the arrays' leading corner; default: their shape).  It
    runs whole or in aligned tiles, which give the whole padded box's result, and the
    output is cropped to the box.  ``tile`` forces interior edges (coarse voxels, rounded up
    to the stride); otherwise they follow from ``max_memory_gb`` (:func:`memory_budget_gb`),
    which bounds the input, output and activation arrays together.  With
    ``overwrite_fine`` the fine SAD array becomes the output of a tiled prediction (no
    second fine-mesh array).  Boxes above FLOAT32_ABOVE_VOXELS fine points come back in
    float32.
    """
    shape = tuple(int(n) for n in np.shape(sad_coarse)[-3:])
    box = tuple(int(n) for n in mesh) if mesh is not None else shape
    stride = int(getattr(net, "tile_stride", 1))
    if any(n % stride for n in shape) or any(b > n for b, n in zip(box, shape)):
        raise ValueError(f"arrays on a coarse mesh {shape} for a box of {box}: this network "
                         f"needs a multiple of {stride} (features(..., pad_to={stride}))")
    big = UPSAMPLE**3 * int(np.prod(box, dtype=np.int64)) > FLOAT32_ABOVE_VOXELS
    fine_bytes = 4.0 * UPSAMPLE**3 * np.prod(shape, dtype=float)
    # float32 fine SAD (the output too when big), else + float32 output + float64 density
    held = 4.0 * np.prod(np.shape(sad_coarse), dtype=float) + fine_bytes * (1 if big else 4)
    tile, halo = tiling_of(net, shape, held, max_memory_gb, device, tile)
    base = net_fn(net, device)
    in_place = (getattr(net, "uses_sad_fine", False) and not symmetrize and tile is not None
                and sad_fine is not None)

    def fn(c, f):
        return tiled_apply(base, c, f, halo, tile, progress=progress)

    info = {"tile": None if tile is None else (list(tile) if np.ndim(tile) else int(tile))}
    if symmetrize:
        rho, spread = symmetrized_apply(fn, sad_coarse, sad_fine)
        info["spread_percent"] = spread
    elif in_place:
        out = sad_fine if overwrite_fine else np.array(sad_fine, dtype=np.float32)
        rho = tiled_apply(base, sad_coarse, out, halo, tile, out=out, progress=progress)
    else:
        rho = fn(sad_coarse, sad_fine)
    rho = rho[tuple(slice(0, UPSAMPLE * n) for n in box)]
    if big:
        return normalize_in_place(rho, n_electrons, dv_fine), info
    return normalize_density(rho, n_electrons, dv_fine), info


def normalize_in_place(rho: np.ndarray, n_electrons: float, dv_bohr3: float) -> np.ndarray:
    """:func:`rhosr.nn.inputs.normalize_density` without a float64 copy: clipped and scaled
    in place (float32 stays float32; the sum is taken in float64)."""
    np.clip(rho, 0.0, None, out=rho)
    total = float(rho.sum(dtype=np.float64)) * dv_bohr3
    if total > 0:
        rho *= rho.dtype.type(float(n_electrons) / total)
    return rho


def predict_on_grid(net, symbols, positions_bohr, fine, charge: int, n_electrons: float,
                    device="cpu", keep_sad: bool = False, **options):
    """``(rho, info, sad_fine)``: the prediction on the fine mesh ``fine`` (positions in
    its box frame) through the one path of every caller: :func:`rhosr.nn.inputs.features`
    padded to the network's stride, :func:`predict_arrays` (``options``: symmetrize,
    max_memory_gb, tile, progress), crop to the box.  ``sad_fine`` is the fine SAD on the
    box when ``keep_sad`` (the baseline of an evaluation), else None and its array is
    reused for the output of a tiled prediction."""
    stride = int(getattr(net, "tile_stride", 1))
    feats = features(symbols, positions_bohr, fine, charge, model_inputs(net), pad_to=stride,
                     with_fine=True if keep_sad else None)
    box = tuple(n // UPSAMPLE for n in fine.mesh)
    sad = None
    if keep_sad:
        sad = np.array(feats.sad_fine[tuple(slice(0, n) for n in fine.mesh)])
    rho, info = predict_arrays(net, feats.coarse, feats.sad_fine, n_electrons, fine.dv,
                               device=device, mesh=box, overwrite_fine=not keep_sad, **options)
    return rho, info, sad


def predict_molecule(mol: Molecule, net, *, model_name: str = "", device="cpu",
                     symmetrize: bool = False, max_memory_gb=None, tile=None,
                     progress: bool = False):
    """Predicted :class:`~rhosr.core.density.Density` of one molecule on its fine mesh."""
    t0 = time.perf_counter()
    _, fine, pos = box_for(mol.positions)
    rho, info, _ = predict_on_grid(net, mol.symbols, pos, fine, mol.charge, mol.nelectron,
                                   device=device, symmetrize=symmetrize,
                                   max_memory_gb=max_memory_gb, tile=tile, progress=progress)
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


def density_predictor(model="default", threads: int | None = 1):
    """``mol -> predicted fine-mesh density`` on the CPU with ``threads`` torch threads
    (one beside ``rhosr generate``'s workers): the start of ``--guess rhosr``."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    net, name = resolve_model(model, "cpu")
    return lambda mol: predict_molecule(mol, net, model_name=name, device="cpu").values


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
