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
import time
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from rhosr.core.density import Density
from rhosr.core.grid import box_for
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


def predict_arrays(net, sad_coarse, sad_fine, n_electrons: float, dv_fine: float,
                   device="cpu", symmetrize=False, max_memory_gb=None, tile=None):
    """Normalised prediction on the fine mesh from the network's input arrays
    (:class:`rhosr.nn.inputs.Features`); returns ``(rho, info)``.

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
    base = net_fn(net, device)

    def fn(c, f):
        return tiled_apply(base, c, f, halo, tile)

    info = {"tile": None if tile is None else (list(tile) if np.ndim(tile) else int(tile))}
    if symmetrize:
        rho, spread = symmetrized_apply(fn, sad_coarse, sad_fine)
        info["spread_percent"] = spread
    else:
        rho = fn(sad_coarse, sad_fine)
    return normalize_density(rho, n_electrons, dv_fine), info


def predict_molecule(mol: Molecule, net, *, model_name: str = "", device="cpu",
                     symmetrize: bool = False, max_memory_gb=None, tile=None):
    """Predicted :class:`~rhosr.core.density.Density` of one molecule on its fine mesh."""
    t0 = time.perf_counter()
    _, fine, pos = box_for(mol.positions)
    feats = features(mol.symbols, pos, fine, mol.charge, model_inputs(net))
    rho, info = predict_arrays(net, feats.coarse, feats.sad_fine, mol.nelectron, fine.dv,
                               device=device, symmetrize=symmetrize,
                               max_memory_gb=max_memory_gb, tile=tile)
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
