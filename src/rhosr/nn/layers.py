"""Building blocks of the networks: periodic convolutions, 3D pixel shuffle, residual
blocks, the normalisation to the electron count."""

from __future__ import annotations

import torch
from torch import nn

from rhosr.core.grid import UPSAMPLE


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


def periodic_conv(cin: int, cout: int, kernel: int) -> nn.Conv3d:
    """A 3D conv with periodic 'same' padding (see :class:`PeriodicConv3d`)."""
    return PeriodicConv3d(cin, cout, kernel, padding=kernel // 2, padding_mode="circular")


def norm_layer(kind: str, channels: int) -> nn.Module:
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
            periodic_conv(channels, channels, kernel), norm_layer(norm, channels), nn.PReLU(),
            periodic_conv(channels, channels, kernel), norm_layer(norm, channels),
        )

    def forward(self, x):
        return x + self.body(x)
