"""Plain configuration of the networks, without torch.

:class:`ModelConfig` and the presets live here so that ``rhosr --help`` and the option
parsers need not import torch (the options of training and their defaults:
:mod:`rhosr.training.config`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from rhosr.nn.inputs import ELEMENT_CHANNELS, INPUTS

ARCHS = ("srresnet", "sad-residual", "sad-unet")
NORMS = ("none", "instance")
INPUT_TRANSFORMS = ("none", "sqrt")
#: Allowed ``output`` per architecture.  For ``srresnet`` the activation acts
#: on the network output y; for ``sad-residual`` on base + corr with base =
#: sqrt(sad_fine) for "square" and sad_fine for "relu".
OUTPUTS = {"srresnet": ("softplus", "relu", "square"), "sad-residual": ("square", "relu"),
           "sad-unet": ("square", "relu")}


# --------------------------------------------------------------------------
# configuration


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_kernel(name, value):
    _check_int(name, value, 1)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd (for 'same' periodic padding), got {value}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Plain, JSON-able hyper-parameters of a network (``asdict`` round-trips).

    Attributes
    ----------
    arch : "srresnet" or "sad-residual" (see the module docstring)
    channels : int
        Feature channels C of the body.
    blocks : int
        Number N of residual blocks (0 allowed).
    kernel_in : int
        K1, odd: first conv and last conv.
    kernel : int
        K2, odd: body convs (and, for srresnet, the post-body and upsampling convs).
    norm : "instance" or "none"
        Normalisation after body convs (instance norm: affine, per sample).
    input_transform : "none" or "sqrt"
        Applied to ``sad_coarse`` (e/bohr³) before the first conv.
    input_scale : float
        Multiplies the transformed input.
    output : str
        Non-negative output parametrisation, see :data:`OUTPUTS`.
    widths : tuple of int
        ``sad-unet`` only: channels of the coarser levels (each half the points per axis
        of the one before); ``blocks`` residual blocks per level on the way down and up.
    fine_channels : int
        ``sad-residual``/``sad-unet``: F > 0 adds F point-wise terms z_k·sqrt(fine
        SAD)^k to the correction (z_k: more pixel-shuffled output channels), so that the
        fine SAD's sharp shape near the nuclei modulates it.
    inputs : str
        "sad" (one channel), "sad+elements" (the SAD, then its parts from H, C, N,
        O, F and all other elements: 7 channels) or "sad+charge" (the SAD, then q⁺·SAD and
        q⁻·SAD for a net charge Q, q = Q·min(1, 48/N): 3 channels, the last two zero for a
        neutral molecule),
        see :data:`rhosr.nn.inputs.INPUTS`.
    """

    arch: str = "sad-residual"
    channels: int = 32
    blocks: int = 6
    kernel_in: int = 3
    kernel: int = 3
    norm: str = "none"
    input_transform: str = "sqrt"
    input_scale: float = 1.0
    output: str = "square"
    widths: tuple = ()
    fine_channels: int = 0
    inputs: str = "sad"

    @property
    def input_channels(self) -> int:
        return {"sad": 1, "sad+charge": 3}.get(self.inputs, 2 + len(ELEMENT_CHANNELS))

    def __post_init__(self):
        _check_choice("arch", self.arch, ARCHS)
        _check_int("channels", self.channels, 1)
        _check_int("blocks", self.blocks, 0)
        _check_kernel("kernel_in", self.kernel_in)
        _check_kernel("kernel", self.kernel)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("input_transform", self.input_transform, INPUT_TRANSFORMS)
        if isinstance(self.input_scale, bool) or not isinstance(self.input_scale, (int, float)):
            raise ValueError(f"input_scale must be a number, got {self.input_scale!r}")
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be finite and > 0, got {self.input_scale}")
        object.__setattr__(self, "input_scale", float(self.input_scale))
        _check_choice(f"output (arch {self.arch!r})", self.output, OUTPUTS[self.arch])
        object.__setattr__(self, "widths", tuple(self.widths))
        for w in self.widths:
            _check_int("widths", w, 1)
        if (self.arch == "sad-unet") != bool(self.widths):
            raise ValueError("widths (coarser levels) are for arch 'sad-unet', which needs them")
        _check_int("fine_channels", self.fine_channels, 0)
        if self.fine_channels and self.arch == "srresnet":
            raise ValueError("fine_channels is for the sad-residual and sad-unet archs")
        _check_choice("inputs", self.inputs, INPUTS)


#: Named configurations.  ``paper``: the published network (9.35 M
#: parameters).  ``sr-narrow``: 87 k, best of the single-scale bodies at an equal 90-minute
#: budget.  ``unet``: the multi-scale body that won the bake-off (0.68 M; TRAIN_PRESET and
#: the bundled model).  ``sr``: ``sr-narrow`` with C = 32 (0.34 M).  ``sr-wide``/``sr-deep``:
#: ablations.  ``tiny``/``tiny-paper``: for tests.
PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(
        arch="srresnet", channels=32, blocks=32, kernel_in=5, kernel=5, norm="instance",
        input_transform="none", output="softplus",
    ),
    "sr": ModelConfig(arch="sad-residual", channels=32, blocks=6, kernel_in=3, kernel=3),
    "sr-wide": ModelConfig(arch="sad-residual", channels=48, blocks=6, kernel_in=3, kernel=3),
    # 2.7x cheaper per step than "sr", and better at equal training time
    "sr-narrow": ModelConfig(arch="sad-residual", channels=16, blocks=6, kernel_in=3, kernel=3),
    "sr-deep": ModelConfig(arch="sad-residual", channels=32, blocks=12, kernel_in=3, kernel=3),
    # the bake-off's rows (benchmarks/bakeoff.py): about sr-narrow's cost per step
    "unet": ModelConfig(arch="sad-unet", channels=16, blocks=1, widths=(40, 80)),
    # unet reading the net charge (q⁺·SAD, q⁻·SAD): trained from unet's weights, the new
    # input weights starting at zero (rhosr.training.run.widen_inputs)
    "unet-charge": ModelConfig(arch="sad-unet", channels=16, blocks=1, widths=(40, 80),
                               inputs="sad+charge"),
    "sr-elements": ModelConfig(arch="sad-residual", channels=16, blocks=6,
                               inputs="sad+elements"),
    "sr-fine": ModelConfig(arch="sad-residual", channels=16, blocks=6, fine_channels=2),
    "tiny": ModelConfig(arch="sad-residual", channels=8, blocks=2, kernel_in=3, kernel=3),
    "tiny-unet": ModelConfig(arch="sad-unet", channels=4, blocks=1, widths=(8, 8),
                             fine_channels=2, inputs="sad+elements"),
    "tiny-paper": ModelConfig(
        arch="srresnet", channels=4, blocks=1, kernel_in=3, kernel=3, norm="instance",
        input_transform="none", output="softplus",
    ),
}
#: the base of a configuration given as a dict (model files record their fields over it)
DEFAULT_PRESET = "sr-narrow"
#: what ``rhosr train`` builds from scratch without ``--preset``: the bake-off's winner, the
#: lowest validation NMAE after the same CPU-minutes (docs/benchmarks.md, "Bake-off")
TRAIN_PRESET = "unet"


def make_config(preset_or_config=DEFAULT_PRESET, **overrides) -> ModelConfig:
    """A checked :class:`ModelConfig` from a preset name, a dict or a config.

    A dict may name a base preset under ``"preset"``; its other keys (and
    ``overrides``) replace fields of that preset (default :data:`DEFAULT_PRESET`).
    """
    if isinstance(preset_or_config, ModelConfig):
        base, changes = preset_or_config, {}
    elif isinstance(preset_or_config, str):
        if preset_or_config not in PRESETS:
            raise ValueError(f"unknown model preset {preset_or_config!r}; known: {sorted(PRESETS)}")
        base, changes = PRESETS[preset_or_config], {}
    elif isinstance(preset_or_config, dict):
        changes = dict(preset_or_config)
        base = make_config(changes.pop("preset", DEFAULT_PRESET))
    else:
        raise ValueError(
            f"expected a preset name, a dict or a ModelConfig, got {type(preset_or_config).__name__}"
        )
    changes.update(overrides)
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown model hyper-parameter(s) {unknown}; known: {sorted(known)}")
    return replace(base, **changes) if changes else base
