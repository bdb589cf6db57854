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
    about the cost of a step of ``sr-narrow``.  Not exactly shift-equivariant
    on odd meshes, so predicted on whole boxes (not :func:`is_local`).

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

import json
import os
import pickle
import platform
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from rhosr.core.files import atomic_path

#: Fine mesh points per coarse mesh point, per axis (as in :mod:`rhosr.core.grid`).
UPSAMPLE = 2
#: ``format`` entry of a model file.
MODEL_FORMAT = "rhosr-model"
#: Version of the model-file layout.
MODEL_FORMAT_VERSION = 1

from rhosr.nn.config import (  # noqa: E402,F401 -- the configuration, re-exported
    ARCHS,
    DEFAULT_PRESET,
    TRAIN_PRESET,
    ELEMENT_CHANNELS,
    INPUTS,
    INPUT_TRANSFORMS,
    NORMS,
    OUTPUTS,
    PRESETS,
    ModelConfig,
    make_config,
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


def is_local(config=DEFAULT_PRESET) -> bool:
    """True if the output depends only on a neighbourhood the same way everywhere (no
    global norms, no strided levels), so that tiles and crops give the whole-box result."""
    c = make_config(config)
    return c.norm == "none" and c.arch != "sad-unet"


# --------------------------------------------------------------------------
# array functions


def pixel_shuffle_3d(x: torch.Tensor, factor: int = UPSAMPLE) -> torch.Tensor:
    """Rearrange channels into sub-voxels: (B, C·r³, X, Y, Z) → (B, C, rX, rY, rZ).

    Sub-voxel order (as torch's 2D ``pixel_shuffle``, one more axis): input
    channel ``c·r³ + (i·r + j)·r + k`` goes to output voxel
    ``(r·x + i, r·y + j, r·z + k)`` of channel c; for r = 2 channels
    ``8c + 4i + 2j + k``.
    """
    b, cr3, nx, ny, nz = x.shape
    r = factor
    if cr3 % r**3:
        raise ValueError(f"channels {cr3} are not divisible by {r}^3")
    c = cr3 // r**3
    x = x.reshape(b, c, r, r, r, nx, ny, nz)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # b, c, x, i, y, j, z, k
    return x.reshape(b, c, nx * r, ny * r, nz * r)


def pixel_unshuffle_3d(x: torch.Tensor, factor: int = UPSAMPLE) -> torch.Tensor:
    """Inverse of :func:`pixel_shuffle_3d`: (B, C, rX, rY, rZ) → (B, C·r³, X, Y, Z)."""
    b, c, fx, fy, fz = x.shape
    r = factor
    if fx % r or fy % r or fz % r:
        raise ValueError(f"mesh {(fx, fy, fz)} is not divisible by {r}")
    x = x.reshape(b, c, fx // r, r, fy // r, r, fz // r, r)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # b, c, i, j, k, x, y, z
    return x.reshape(b, c * r**3, fx // r, fy // r, fz // r)


def _per_sample(value, batch: int, name: str, device) -> torch.Tensor:
    """A (B,) float64 tensor from a scalar or a (B,) tensor/sequence."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} must have one value per sample ({batch}), got {t.numel()}")
    return t


def normalize(out: torch.Tensor, n_electrons, dv_fine) -> torch.Tensor:
    """Rescale each sample so that ``out.sum() * dv_fine == n_electrons``.

    Parameters
    ----------
    out : (B, 1, X, Y, Z) tensor, e/bohr³, non-negative
    n_electrons : (B,) tensor or scalar, electrons
    dv_fine : (B,) tensor or scalar, bohr³ per voxel

    The sum is taken in float64; gradients flow through the scale factor.
    """
    batch = out.shape[0]
    n = _per_sample(n_electrons, batch, "n_electrons", out.device)
    dv = _per_sample(dv_fine, batch, "dv_fine", out.device)
    total = out.sum(dim=tuple(range(1, out.dim())), dtype=torch.float64) * dv
    scale = n / total.clamp_min(torch.finfo(torch.float64).tiny)
    return out * scale.to(out.dtype).reshape((batch,) + (1,) * (out.dim() - 1))


# --------------------------------------------------------------------------
# modules


class _CircularPad(torch.autograd.Function):
    """``F.pad(x, pads, mode="circular")`` whose backward folds the halo gradients back
    onto the opposite edges in a few slice-adds (PyTorch's own backward of circular
    padding is ~8x slower, as slow as a 16-channel conv's forward on CPU)."""

    @staticmethod
    def forward(ctx, x, pads):
        ctx.pads = pads
        return nn.functional.pad(x, pads, mode="circular")

    @staticmethod
    def backward(ctx, grad):
        pads, nd = ctx.pads, grad.dim()
        g = grad.clone()
        core = []
        for k in range(len(pads) // 2):  # pads: (last lo, last hi, second-last lo, ...)
            lo, hi = pads[2 * k], pads[2 * k + 1]
            d = nd - 1 - k
            n = g.shape[d] - lo - hi
            # axis by axis, over the whole extent of the other axes, so that corners fold
            # twice: padded points past the end are copies of the first ones, padded
            # points before the start copies of the last ones
            if hi:
                g.narrow(d, lo, hi).add_(g.narrow(d, lo + n, hi))
            if lo:
                g.narrow(d, n, lo).add_(g.narrow(d, 0, lo))
            core.append((d, lo, n))
        for d, lo, n in core:
            g = g.narrow(d, lo, n)
        return g.contiguous(), None


def circular_pad(x: torch.Tensor, pads) -> torch.Tensor:
    """Periodic padding of the last dims (``pads`` as for ``F.pad``), fast backward."""
    pads = tuple(int(p) for p in pads)
    if not any(pads):
        return x
    if torch.is_grad_enabled() and x.requires_grad:
        return _CircularPad.apply(x, pads)
    return nn.functional.pad(x, pads, mode="circular")


class PeriodicConv3d(nn.Conv3d):
    """``nn.Conv3d`` with periodic 'same' padding that always takes oneDNN on the CPU.

    PyTorch picks its slow reference kernel for a float32 CPU conv of batch 1
    when ``N * C_in * D * H`` (padded) is at most 20480 — e.g. every 16-channel
    conv of a methane-sized box — which is ~10x slower than oneDNN there.
    This module calls oneDNN (``torch.mkldnn_convolution``) directly for
    every conv with more than one input channel (for one input channel,
    the network's first conv, PyTorch's own choice was measured faster); the
    result agrees with the reference kernel to float32 rounding.  The periodic
    padding is :func:`circular_pad` (a fast backward).  Same parameters and state
    dict as ``nn.Conv3d``.
    """

    def _conv_forward(self, input, weight, bias):
        x = circular_pad(input, self._reversed_padding_repeated_twice)
        if (input.device.type == "cpu" and input.dtype == torch.float32
                and weight.dtype == torch.float32 and _ONEDNN
                and torch.backends.mkldnn.enabled and self.groups == 1
                and self.in_channels > 1):  # one input channel: the reference kernel is faster
            return torch.mkldnn_convolution(x, weight, bias, [0, 0, 0], list(self.stride),
                                            list(self.dilation), self.groups)
        return nn.functional.conv3d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


_ONEDNN = hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available()


def _conv(cin: int, cout: int, kernel: int) -> nn.Conv3d:
    """A 3D conv with periodic 'same' padding (see :class:`PeriodicConv3d`)."""
    return PeriodicConv3d(cin, cout, kernel, padding=kernel // 2, padding_mode="circular")


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=True) if kind == "instance" else nn.Identity()


class PixelShuffle3d(nn.Module):
    """Module form of :func:`pixel_shuffle_3d`."""

    def __init__(self, factor: int = UPSAMPLE):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return pixel_shuffle_3d(x, self.factor)


class ResidualBlock(nn.Module):
    """x + [Conv → Norm → PReLU → Conv → Norm](x); (B, C, X, Y, Z) → same."""

    def __init__(self, channels: int, kernel: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, kernel), _norm(norm, channels), nn.PReLU(),
            _conv(channels, channels, kernel), _norm(norm, channels),
        )

    def forward(self, x):
        return x + self.body(x)


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
        self.head = nn.Sequential(_conv(1, c, k1), nn.PReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(c, k2, norm) for _ in range(config.blocks)))
        self.body_tail = nn.Sequential(_conv(c, c, k2), _norm(norm, c))
        self.upsample = nn.Sequential(
            _conv(c, c * UPSAMPLE**3, k2), _norm(norm, c * UPSAMPLE**3),
            PixelShuffle3d(UPSAMPLE), nn.PReLU(),
        )
        self.tail = _conv(c, 1, k1)

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
        self.tail = _conv(c, UPSAMPLE**3 * (1 + f), config.kernel_in)
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
        self.head = nn.Sequential(_conv(config.input_channels, c, k1), nn.PReLU())
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
    after each up-step, so the result is not exactly shift-equivariant (not
    :func:`is_local`: predicted on whole boxes)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        widths = (config.channels,) + tuple(config.widths)
        self.head = nn.Sequential(_conv(config.input_channels, widths[0], config.kernel_in),
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


def _versions() -> dict:
    from rhosr._version import __version__

    return {
        "rhosr": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "format_version": MODEL_FORMAT_VERSION,
    }


def save_model(path, model: DensityNet, extra: dict | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file + ``os.replace``).

    The file is ``torch.save`` of ``{"format": "rhosr-model", "config":
    asdict(config), "state_dict": ..., "extra": extra, "versions": ...}``;
    ``extra`` must be JSON-able (it is stored as its JSON round trip).
    """
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise ValueError("model has no ModelConfig; build it with rhosr.nn.model.build")
    try:
        extra = json.loads(json.dumps({} if extra is None else extra, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must be JSON-able: {exc}") from exc
    if not isinstance(extra, dict):
        raise ValueError("extra must be a dict")
    record = {
        "format": MODEL_FORMAT,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra": extra,
        "versions": _versions(),
    }
    path = Path(path)
    atomic_torch_save(record, path)
    return path


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename:
    a reader (or a kill) never sees a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def read_model_file(path, map_location="cpu") -> dict:
    """The checked record of a model file, read with the safe (weights-only) loader.

    Raises ValueError if the file is not a rhosr model file, including any
    file whose pickle references arbitrary code (refused, never executed).
    """
    not_ours = f"{path} is not a rhosr model file"
    try:
        record = torch.load(path, weights_only=True, map_location=map_location)
    except OSError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError,
            AttributeError, KeyError, IndexError) as exc:
        raise ValueError(f"{not_ours} (refused by the weights-only loader: {exc})") from exc
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(f"{not_ours} (no format={MODEL_FORMAT!r} entry)")
    state = record.get("state_dict")
    if not isinstance(record.get("config"), dict) or not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{not_ours} (config or state_dict missing or malformed)")
    record.setdefault("extra", {})
    record.setdefault("versions", {})
    return record


#: What QM9 holds: for model files whose training data predate the ``elements`` entry.
QM9_SEEN = {"elements": ["H", "C", "N", "O", "F"], "charges": [0]}


def seen_of(extra) -> dict | None:
    """``{"elements": [...], "charges": [...]}`` of a model file's training data (its
    ``extra``), or None when the file does not say.  Files trained on QM9 ids only
    (``qm9_*``) before the entry existed count as QM9's elements, neutral."""
    data = (extra or {}).get("training_data") or {}
    if isinstance(data.get("elements"), list) and isinstance(data.get("charges"), list):
        return {"elements": [str(e) for e in data["elements"]],
                "charges": sorted(int(c) for c in data["charges"])}
    ids = data.get("ids") or data.get("id_range") or []
    if ids and all(str(i).startswith("qm9_") for i in ids):
        return {k: list(v) for k, v in QM9_SEEN.items()}
    return None


def merge_seen(*seen) -> dict | None:
    """The union of several :func:`seen_of` results (None if any is unknown)."""
    if any(s is None for s in seen):
        return None
    from rhosr.core.elements import atomic_number

    elements = sorted({e for s in seen for e in s["elements"]}, key=atomic_number)
    return {"elements": elements, "charges": sorted({int(c) for s in seen for c in s["charges"]})}


def load_model(path, map_location="cpu") -> DensityNet:
    """Rebuild a network from a file written by :func:`save_model`, in eval mode.

    The state dict is loaded strictly; use :func:`read_model_file` for
    ``extra`` and ``versions``.  ``model.seen`` is :func:`seen_of` the file.
    """
    record = read_model_file(path, map_location=map_location)
    model = build(record["config"])
    try:
        model.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the stored config: {exc}") from exc
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    model.seen = seen_of(record["extra"])  # elements and charges of its training data
    return model.eval()
