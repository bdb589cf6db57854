"""The one featurizer: what a network reads for a molecule, on every path.

Training (:class:`rhosr.training.data.DensityDataset`), evaluation
(:mod:`rhosr.inference.evaluate`) and prediction (:mod:`rhosr.inference.predict`) all
call :func:`features`, so a model sees the same input wherever it runs:

- the SAD of the model's ``sad_variant`` (recorded in its file, :func:`model_inputs`),
  normalised to the valence electrons minus the charge, computed in float32 on the
  coarse mesh (the network input) and on the fine mesh (read by the SAD-correcting
  networks, which predict a correction to it);
- for ``ModelConfig.inputs == "sad+elements"``, six more coarse channels: the SAD of
  the H, C, N, O, F atoms and of all other atoms (:func:`rhosr.nn.inputs.element_parts`);
- for ``"sad+charge"``, two more: q⁺·SAD and q⁻·SAD with q = Q·min(1, N_ref/N) for the net
  charge Q and N valence electrons (q⁺ = max(q, 0), q⁻ = max(−q, 0); N_ref =
  :data:`CHARGE_REF_ELECTRONS`): zero for a neutral molecule, the SAD itself on the channel
  of the charge's sign for a singly charged one of up to N_ref electrons — what the
  normalised SAD alone cannot say (a network sees the shape of the density, not its
  electron count).  Above N_ref electrons the channel follows the charge per electron, so
  that it stays within what training showed however large the molecule (a 206-atom pocket
  of charge −4 reads 0.30·SAD, not 4·SAD).  Non-negative, as the networks' square-root input
  transform needs.

The fine mesh is the coarse one refined ``UPSAMPLE`` times per axis (same origin), so
coarse point ``i`` is fine point ``2i``; the cube symmetries and coarse shifts of
:mod:`rhosr.core.symmetry` keep that pairing when applied to both arrays.

The network's output is normalised to the same electron count: inside the network
while training (:func:`rhosr.nn.layers.normalize`, differentiable), and once over the
assembled box by :func:`normalize_density` when predicting (tiles are normalised
together).  Both scale the non-negative output by ``n_electrons / (sum * dv)``.

NumPy only: importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rhosr.core.elements import standard_symbol
from rhosr.core.grid import UPSAMPLE, Grid, pad_periodic, padded_mesh
from rhosr.core.molecule import valence_electrons
from rhosr.core.sad import sad_density
from rhosr.core.sadatoms import VARIANTS

#: Elements with a channel of their own in :func:`element_parts` (the rest share one).
ELEMENT_CHANNELS = ("H", "C", "N", "O", "F")


#: What a network can read besides the SAD (``ModelConfig.inputs``).
INPUTS = ("sad", "sad+elements", "sad+charge")
#: Electrons up to which a "sad+charge" channel is |Q|·SAD (about the median of the training
#: ions of data/exotic, 42–52 valence electrons); above, Q·(N_ref/N)·SAD.
CHARGE_REF_ELECTRONS = 48


def charge_scale(charge: int, n_electrons: float) -> float:
    """q = Q·min(1, N_ref/N) of the "sad+charge" channels (see the module docstring)."""
    return float(charge) * min(1.0, CHARGE_REF_ELECTRONS / max(float(n_electrons), 1.0))


@dataclass(frozen=True)
class ModelInputs:
    """What a model file says about its input: ``inputs`` (``ModelConfig.inputs``),
    the SAD ``sad_variant`` it was trained on, and whether it reads the fine SAD."""

    inputs: str = "sad"
    sad_variant: str = "paper"
    uses_sad_fine: bool = True

    def __post_init__(self):
        if self.inputs not in INPUTS:
            raise ValueError(f"unknown network input {self.inputs!r}; expected one of {INPUTS}")
        if self.sad_variant not in VARIANTS:
            raise ValueError(f"unknown SAD variant {self.sad_variant!r}; expected one of {VARIANTS}")


def model_inputs(net) -> ModelInputs:
    """:class:`ModelInputs` of a network (its config, and the ``extra`` of its file when it
    was loaded from one: :func:`rhosr.nn.modelfile.load_model` attaches it)."""
    config = getattr(net, "config", None)
    extra = getattr(net, "extra", None) or {}
    return ModelInputs(inputs=getattr(config, "inputs", "sad"),
                       sad_variant=extra.get("sad_variant", "paper"),
                       uses_sad_fine=bool(getattr(net, "uses_sad_fine", False)))


@dataclass(frozen=True)
class Features:
    """A molecule as a network reads it.

    ``coarse``: (C, X, Y, Z) float32, e/bohr³ — channel 0 the SAD, then any element or
    charge channels; ``sad_fine``: (UX, UY, UZ) float32 SAD on the fine mesh, or None for a
    network that does not read it."""

    coarse: np.ndarray
    sad_fine: np.ndarray | None


def features(symbols, positions_bohr, fine: Grid, charge: int = 0,
             spec: ModelInputs | None = None, with_fine: bool | None = None,
             pad_to: int = 1) -> Features:
    """The network input of a molecule whose fine (label) mesh is ``fine``.

    ``positions_bohr`` in the box frame of ``fine``; ``with_fine`` overrides
    ``spec.uses_sad_fine`` (training and evaluation always want the fine SAD).
    ``pad_to`` > 1 returns both on the coarse mesh rounded up to a multiple of it (a
    strided network's stride, :func:`rhosr.core.grid.padded_mesh`), the box in the arrays'
    leading corner: the coarse input continued periodically beyond the box
    (:func:`rhosr.core.grid.pad_periodic`; measured on 133 held-out molecules, this
    changes the bundled model's NMAE by +0.0035 points on average, where a box with
    that much more vacuum changes it by +0.010), the fine SAD zero there (the
    SAD-correcting networks read it point by point, and the output there is cropped)."""
    spec = spec or ModelInputs()
    if any(n % UPSAMPLE for n in fine.mesh):
        raise ValueError(f"fine mesh {fine.mesh} is not divisible by {UPSAMPLE}")
    coarse = fine.coarsen()
    sad_c = sad_density(symbols, positions_bohr, coarse, charge=charge,
                        variant=spec.sad_variant, dtype=np.float32)
    channels = [sad_c[None]]
    if spec.inputs == "sad+elements":
        channels.append(element_parts(symbols, positions_bohr, coarse, spec.sad_variant,
                                      np.float32))
    elif spec.inputs == "sad+charge":
        q = charge_scale(charge, valence_electrons(symbols) - charge)
        channels.append(np.stack([max(q, 0.0) * sad_c, max(-q, 0.0) * sad_c]))
    x = channels[0] if len(channels) == 1 else np.concatenate(channels)
    padded = padded_mesh(coarse.mesh, pad_to)
    x = pad_periodic(x, padded)
    want_fine = spec.uses_sad_fine if with_fine is None else with_fine
    sad_f = None
    if want_fine:
        sad_f = np.zeros(tuple(UPSAMPLE * n for n in padded), dtype=np.float32)
        sad_density(symbols, positions_bohr, fine, charge=charge, variant=spec.sad_variant,
                    dtype=np.float32, out=sad_f[tuple(slice(0, n) for n in fine.mesh)])
    return Features(np.ascontiguousarray(x), sad_f)


def normalize_density(rho, n_electrons: float, dv_bohr3: float) -> np.ndarray:
    """The network's output as a density: negative values clipped, then scaled so that
    ``rho.sum() * dv_bohr3 == n_electrons`` (float64)."""
    rho = np.clip(np.asarray(rho, dtype=np.float64), 0.0, None)
    total = float(rho.sum(dtype=np.float64)) * dv_bohr3
    return rho * (float(n_electrons) / total) if total > 0 else rho


def element_parts(symbols, positions_bohr, grid: Grid, variant: str = "paper",
                  dtype=np.float32) -> np.ndarray:
    """The SAD split by element: ``(len(ELEMENT_CHANNELS) + 1, *grid.mesh)``, e/bohr³.

    Channel k holds the (neutral) SAD of the atoms of element ``ELEMENT_CHANNELS[k]``
    (H, C, N, O, F), the last one that of every other atom; zeros where the
    molecule has none.  Each part is normalised like :func:`sad_density` of its
    atoms alone."""
    symbols = [standard_symbol(s) for s in symbols]
    pos = np.asarray(positions_bohr, dtype=np.float64).reshape(-1, 3)
    out = np.zeros((len(ELEMENT_CHANNELS) + 1,) + tuple(grid.mesh), dtype=dtype)
    channel = [ELEMENT_CHANNELS.index(s) if s in ELEMENT_CHANNELS else len(ELEMENT_CHANNELS)
               for s in symbols]
    for k in sorted(set(channel)):
        members = [i for i, c in enumerate(channel) if c == k]
        out[k] = sad_density([symbols[i] for i in members], pos[members], grid,
                             variant=variant, dtype=dtype)
    return out
