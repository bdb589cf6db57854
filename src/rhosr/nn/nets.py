"""The super-resolution networks, their presets, and the model file.

A network maps the SAD density on the coarse periodic mesh to the valence
density on the fine mesh (twice as many points per axis, same cell):

    forward(sad_coarse, sad_fine=None, n_electrons=None, dv_fine=None)

    sad_coarse  (B, 1, X, Y, Z)      e/bohr³, SAD on the coarse mesh
    sad_fine    (B, 1, 2X, 2Y, 2Z)   e/bohr³, SAD on the fine mesh (only read
                                     by models with ``uses_sad_fine``)
    n_electrons (B,)                 valence electrons per sample
    dv_fine     (B,)                 fine-mesh voxel volume, bohr³
    returns     (B, 1, 2X, 2Y, 2Z)   e/bohr³, non-negative; if both
                                     ``n_electrons`` and ``dv_fine`` are given,
                                     ``out.sum() * dv_fine == n_electrons``

Every convolution pads circularly ("same" size): the box is periodic.  Two
architectures, chosen by ``ModelConfig.arch``:

``"srresnet"`` (preset ``paper``, the published network)
    Conv(1→C, K1) + PReLU; N residual blocks [Conv(K2) → InstanceNorm →
    PReLU → Conv(K2) → InstanceNorm] + identity; Conv(K2) + InstanceNorm;
    long skip from the first conv; ×2 upsampling Conv(C→8C, K2) +
    InstanceNorm + 3D pixel shuffle + PReLU; Conv(C→1, K1); softplus.
    Instance norms use per-sample global statistics, so the output at a voxel
    depends on the whole box (no exact tiling).  Published size C = 32,
    N = 32, K1 = K2 = 5: 9,359,075 parameters (9.35 M + 0.1 %) with affine
    instance norms (γ, β per channel, as SRResNet's batch norms) and one
    shared slope per PReLU.  The count does not pin these flags (norms
    without affine: 9,354,403; per-channel PReLU: +1,054); the convs with
    biases make up 9,354,370 of it.

``"sad-residual"`` (presets ``sr-narrow``, ``sr``, ``sr-wide``, ``sr-deep``, ``tiny``)
    Works on the coarse mesh only and predicts a correction to the SAD on the
    fine mesh: x = input_scale·sqrt(sad_coarse); Conv(1→C, K1) + PReLU; N
    blocks [Conv(K2) → PReLU → Conv(K2)] + identity; long skip; Conv(C→8,
    K1); pixel shuffle → corr (B, 1, 2X, 2Y, 2Z).  With ``output="square"``
    (default) out = (sqrt(sad_fine) + corr)²: non-negative and smooth
    everywhere, exactly the SAD when corr = 0 (the last conv starts at zero,
    so an untrained model returns the SAD), and vacuum stays near zero
    without the network having to fight a softplus floor.  No normalisation
    layers: the output at a fine voxel depends only on coarse input within
    :func:`receptive_field` voxels and on sad_fine at that same voxel, so
    tiled inference and crop training are exact.

``"sad-unet"`` (preset ``unet``: the bundled model)
    The same output as ``sad-residual`` from a multi-scale body: the coarse
    mesh and ``len(widths)`` coarser levels (stride-2 conv down, stride-2
    transposed conv up, additive skips), N blocks per level each way, more
    channels where there are fewer points: more reach and parameters for
    about the cost of a step of ``sr-narrow``.  Shift-equivariant by multiples of
    its total stride (:func:`tile_stride`, 4) on meshes that are multiples of it, so
    prediction pads the box to such a mesh and tiles it at aligned origins (not
    :func:`is_local`: training crops are not exact).

Two options of both SAD-correcting architectures: ``inputs="sad+elements"``
(preset ``sr-elements``) reads 7 input channels, the SAD and its parts from
H, C, N, O, F and all other atoms (:func:`rhosr.core.sad.network_input`);
``fine_channels=F`` (preset ``sr-fine``) adds F point-wise terms
z_k·sqrt(sad_fine)^k to the correction, which let coarse features act on the
sharp fine-mesh shape of the SAD near the nuclei.

Model files (:func:`save_model`, :func:`load_model`) hold only plain data and
tensors and are read with ``torch.load(weights_only=True)``; the network is
rebuilt from its config.  Nothing in this module does I/O inside ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from rhosr.core.grid import UPSAMPLE
from rhosr.nn.config import DEFAULT_PRESET, ModelConfig, make_config

#: Fine mesh points per coarse mesh point, per axis (as in :mod:`rhosr.core.grid`).
from rhosr.nn.layers import (
    PeriodicConv3d,
    PixelShuffle3d,
    ResidualBlock,
    norm_layer,
    normalize,
    periodic_conv,
    pixel_shuffle_3d,
)


def receptive_field(config=DEFAULT_PRESET) -> int:
    """Half-width of the receptive field, in coarse voxels.

    The output at fine voxel f (per axis) depends on coarse input voxels i
    with ``|i - f // 2| <= R`` only (periodic distance), and, for
    ``sad-residual``, on ``sad_fine`` at f itself.  Counted from the convs
    alone: for configs with ``norm != "none"`` (see :func:`is_local`) every
    output voxel also depends on the whole box through the norm statistics.

    ``sad-residual``: R = 2·(K1//2) + 2N·(K2//2)  (sr: 14, tiny: 6).
    ``sad-unet``: an upper bound (level l counts 2^l coarse voxels per voxel); it is
    not local in the tiling sense (:func:`is_local`).
    ``srresnet``: R = K1//2 + (2N + 2)·(K2//2) + ceil((K1//2) / 2) (paper: 135).
    """
    c = make_config(config)
    h1, h2 = c.kernel_in // 2, c.kernel // 2
    if c.arch == "sad-residual":
        return 2 * h1 + 2 * c.blocks * h2
    if c.arch == "sad-unet":
        levels = len(c.widths)
        r = sum(2 * (2 * c.blocks * h2 * 2**lv + 2**lv) for lv in range(levels))
        return 2 * h1 + r + 2 * c.blocks * h2 * 2**levels
    # coarse part: first conv, blocks, post-body conv, upsampling conv;
    # then the last conv on the fine mesh, h1 fine voxels = ceil(h1/2) coarse
    return h1 + (2 * c.blocks + 2) * h2 + (h1 + UPSAMPLE - 1) // UPSAMPLE


def tile_stride(config=DEFAULT_PRESET) -> int:
    """The network's total stride, coarse voxels: 2**len(widths) for ``sad-unet`` (each level
    halves the mesh), 1 for the single-scale bodies.  On a box whose coarse mesh is a multiple
    of it, the output is equivariant under shifts by multiples of it, so that tiles whose
    origins are such multiples, with a halo of :func:`receptive_field` (rounded up to one),
    reproduce the whole box (:func:`rhosr.inference.tiling.tiled_apply`)."""
    c = make_config(config)
    return 2 ** len(c.widths) if c.arch == "sad-unet" else 1


def is_tileable(config=DEFAULT_PRESET) -> bool:
    """True if aligned tiles reproduce the whole box (:func:`tile_stride`): no global
    normalisation layers."""
    return make_config(config).norm == "none"


def is_local(config=DEFAULT_PRESET) -> bool:
    """True if the output depends only on a neighbourhood the same way everywhere (no
    global norms, no strided levels), so that tiles and crops give the whole-box result."""
    c = make_config(config)
    return c.norm == "none" and c.arch != "sad-unet"


# --------------------------------------------------------------------------
# array functions


# --------------------------------------------------------------------------
# modules


class DensityNet(nn.Module):
    """Common interface of the networks: checks inputs, output, normalisation.

    Subclasses implement ``_density(x, sad_fine)`` with x the transformed
    coarse input (B, 1, X, Y, Z), returning the non-negative, unnormalised
    density (B, 1, 2X, 2Y, 2Z).
    """

    uses_sad_fine = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.config)

    @property
    def is_local(self) -> bool:
        return is_local(self.config)

    @property
    def tile_stride(self) -> int:
        return tile_stride(self.config)

    @property
    def is_tileable(self) -> bool:
        return is_tileable(self.config)

    @staticmethod
    def normalize(out, n_electrons, dv_fine):
        """See :func:`normalize`."""
        return normalize(out, n_electrons, dv_fine)

    def forward(self, sad_coarse, sad_fine=None, n_electrons=None, dv_fine=None):
        """(B, 1, X, Y, Z) coarse SAD [+ fine SAD] → (B, 1, 2X, 2Y, 2Z) density, e/bohr³."""
        n_in = self.config.input_channels
        if sad_coarse.dim() != 5 or sad_coarse.shape[1] != n_in:
            raise ValueError(f"sad_coarse must be (B, {n_in}, X, Y, Z), got {tuple(sad_coarse.shape)}")
        if self.uses_sad_fine:
            b, _, nx, ny, nz = sad_coarse.shape
            expected = (b, 1, UPSAMPLE * nx, UPSAMPLE * ny, UPSAMPLE * nz)
            if sad_fine is None:
                raise ValueError(f"this model ({self.config.arch}) needs sad_fine {expected}")
            if tuple(sad_fine.shape) != expected:
                raise ValueError(f"sad_fine must be {expected}, got {tuple(sad_fine.shape)}")
        if (n_electrons is None) != (dv_fine is None):
            raise ValueError("give both n_electrons and dv_fine to normalise, or neither")
        x = sad_coarse.clamp_min(0)
        if self.config.input_transform == "sqrt":
            x = torch.sqrt(x)
        x = x * self.config.input_scale
        out = self._density(x, sad_fine)
        if n_electrons is not None:
            out = normalize(out, n_electrons, dv_fine)
        return out

    def _density(self, x, sad_fine):  # pragma: no cover - abstract
        raise NotImplementedError


class SRResNet(DensityNet):
    """The published network (arch ``srresnet``), see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c, k1, k2, norm = config.channels, config.kernel_in, config.kernel, config.norm
        self.head = nn.Sequential(periodic_conv(1, c, k1), nn.PReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(c, k2, norm) for _ in range(config.blocks)))
        self.body_tail = nn.Sequential(periodic_conv(c, c, k2), norm_layer(norm, c))
        self.upsample = nn.Sequential(
            periodic_conv(c, c * UPSAMPLE**3, k2), norm_layer(norm, c * UPSAMPLE**3),
            PixelShuffle3d(UPSAMPLE), nn.PReLU(),
        )
        self.tail = periodic_conv(c, 1, k1)

    def _density(self, x, sad_fine):
        h = self.head(x)
        y = self.tail(self.upsample(self.body_tail(self.blocks(h)) + h))
        if self.config.output == "softplus":
            return nn.functional.softplus(y)
        if self.config.output == "relu":
            return torch.relu(y)
        return y * y


class _SADCorrection(DensityNet):
    """Shared output of the SAD-correcting networks: ``tail`` (coarse conv, zero at
    initialisation, so an untrained model returns the SAD) → pixel shuffle →
    channels z₀ … z_F on the fine mesh → the correction
    ``z₀ + Σ_k z_k · sqrt(fine SAD)^k`` (F = ``fine_channels``, 0 by default): with
    F > 0 the coarse features shape the correction by the fine SAD itself, whose
    cusps near the nuclei are sharper than the coarse mesh resolves.  Point-wise
    on the fine mesh (no fine-mesh convolutions: those cost as much as the body)."""

    uses_sad_fine = True

    def _make_output(self, c: int):
        config, f = self.config, self.config.fine_channels
        self.tail = periodic_conv(c, UPSAMPLE**3 * (1 + f), config.kernel_in)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def _output(self, features, sad_fine):
        z = pixel_shuffle_3d(self.tail(features), UPSAMPLE)
        root = torch.sqrt(sad_fine.clamp_min(0))
        corr = z[:, :1]
        power = root
        for k in range(1, 1 + self.config.fine_channels):
            corr = corr + z[:, k:k + 1] * power
            power = power * root
        if self.config.output == "square":
            return (root + corr) ** 2
        return torch.relu(sad_fine + corr)


class SADResidual(_SADCorrection):
    """Coarse-mesh body predicting a fine-mesh correction to the SAD (arch
    ``sad-residual``), see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c, k1, k2, norm = config.channels, config.kernel_in, config.kernel, config.norm
        self.head = nn.Sequential(periodic_conv(config.input_channels, c, k1), nn.PReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(c, k2, norm) for _ in range(config.blocks)))
        self._make_output(c)

    def _density(self, x, sad_fine):
        h = self.head(x)
        return self._output(self.blocks(h) + h, sad_fine)


def _level(channels: int, config: ModelConfig) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels, config.kernel, config.norm)
                           for _ in range(config.blocks)))


class SADUNet(_SADCorrection):
    """A multi-scale body (arch ``sad-unet``): the coarse mesh and ``len(widths)``
    coarser levels, each with half the points per axis (stride-2 conv down,
    stride-2 transposed conv up, skip connections by addition) and more channels,
    so that a step of about the same cost reaches farther and holds more
    parameters; the same output as ``sad-residual``.  Odd meshes are cut back
    after each up-step, so the result is shift-equivariant only by multiples of
    :func:`tile_stride` on meshes that are multiples of it (prediction pads to one)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        widths = (config.channels,) + tuple(config.widths)
        self.head = nn.Sequential(periodic_conv(config.input_channels, widths[0], config.kernel_in),
                                  nn.PReLU())
        self.enc = nn.ModuleList(_level(w, config) for w in widths[:-1])
        self.down = nn.ModuleList(
            nn.Sequential(PeriodicConv3d(a, b, 3, stride=2, padding=1, padding_mode="circular"),
                          nn.PReLU()) for a, b in zip(widths[:-1], widths[1:]))
        self.bottom = _level(widths[-1], config)
        self.up = nn.ModuleList(nn.ConvTranspose3d(b, a, 2, stride=2)
                                for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(_level(w, config) for w in widths[:-1])
        self._make_output(widths[0])

    def _density(self, x, sad_fine):
        h = self.head(x)
        skips = []
        for enc, down in zip(self.enc, self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        for k in reversed(range(len(skips))):
            skip = skips[k]
            h = self.up[k](h)[..., :skip.shape[2], :skip.shape[3], :skip.shape[4]] + skip
            h = self.dec[k](h)
        return self._output(h, sad_fine)


_ARCH_CLASSES = {"srresnet": SRResNet, "sad-residual": SADResidual, "sad-unet": SADUNet}


def build(preset_or_config=DEFAULT_PRESET, **overrides) -> DensityNet:
    """A freshly initialised network from a preset name, dict or :class:`ModelConfig`.

    ``overrides`` replace single fields, e.g. ``build("sr", blocks=8)``.
    """
    config = make_config(preset_or_config, **overrides)
    return _ARCH_CLASSES[config.arch](config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------
# model files


