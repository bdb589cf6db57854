"""Widen a trained ``sad-residual`` model to more channels without changing what it predicts.

    python scripts/widen_model.py src/rhosr/models/default.pt widened.pt --preset sr
    rhosr train STORE --out RUN --init widened.pt --lr 2e-4 ...

A trained narrow network that has stopped improving (training loss no lower than the
validation loss: too little capacity) can be continued as a wider one instead of being
trained again from scratch. The new channels get fresh random weights for everything they
read; every weight from a new channel into an old one (and into the output conv) is zero,
so the widened network returns exactly the narrow one's density until training makes
those weights non-zero. The script checks that on a small random input and writes a
model file whose ``extra["init"]`` names the source file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rhosr.nn.config import PRESETS  # noqa: E402
from rhosr.nn.modelfile import read_model_file, save_model
from rhosr.nn.nets import build, count_parameters  # noqa: E402


def widen(model, channels: int, seed: int = 0):
    """A ``sad-residual`` network with ``channels`` channels computing the same function as ``model``.

    Old weights are copied into the leading channels; weights reading new channels into
    old ones are zero; everything else keeps the fresh initialisation (seeded).
    """
    config = model.config
    if config.arch != "sad-residual":
        raise ValueError(f"only sad-residual networks can be widened, not {config.arch!r}")
    if channels < config.channels:
        raise ValueError(f"channels {channels} is fewer than the model's {config.channels}")
    torch.manual_seed(seed)
    wide = build(replace(config, channels=channels))
    old = model.state_dict()
    new = wide.state_dict()
    with torch.no_grad():
        for name, w in old.items():
            target = new[name]
            if w.shape == target.shape:  # PReLU slopes (one per layer)
                target.copy_(w)
                continue
            if w.dim() == 1:  # conv bias
                target[: w.shape[0]] = w
                continue
            out_old, in_old = w.shape[:2]
            target[:out_old, :in_old] = w
            if target.shape[1] > in_old:
                target[:out_old, in_old:] = 0  # new channels reach no old one, nor the output
    wide.load_state_dict(new, strict=True)
    return wide.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="model file to widen")
    parser.add_argument("out", help="model file to write")
    width = parser.add_mutually_exclusive_group(required=True)
    width.add_argument("--preset", choices=sorted(p for p, c in PRESETS.items()
                                                  if c.arch == "sad-residual"),
                       help="take the channel count of this preset")
    width.add_argument("--channels", type=int, help="channel count")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new channels' weights")
    args = parser.parse_args(argv)

    try:
        record = read_model_file(args.source)
        model = build(record["config"])
        model.load_state_dict(record["state_dict"], strict=True)
    except (OSError, ValueError, RuntimeError) as exc:
        parser.error(f"{args.source}: {exc}")
    model.eval()
    channels = PRESETS[args.preset].channels if args.preset else args.channels
    if args.preset and replace(PRESETS[args.preset], channels=model.config.channels) != model.config:
        parser.error(f"--preset {args.preset} differs from {args.source} in more than the width")
    wide = widen(model, channels, seed=args.seed)

    gen = torch.Generator().manual_seed(1)
    coarse = torch.rand(1, 1, 10, 12, 14, generator=gen) * 0.3
    fine = torch.rand(1, 1, 20, 24, 28, generator=gen) * 0.3
    with torch.no_grad():
        a, b = model(coarse, fine), wide(coarse, fine)
    diff = float((a - b).abs().max() / a.abs().max())
    if diff > 1e-5:
        raise SystemExit(f"widened network differs from the source: max relative {diff:.2e}")
    extra = {"init": str(args.source), "widened_from_channels": model.config.channels,
             "source_phases": record["extra"].get("phases", [])}
    save_model(args.out, wide, extra)
    print(f"{args.out}: {model.config.channels} -> {channels} channels, "
          f"{count_parameters(model)} -> {count_parameters(wide)} "
          f"parameters, same output (max relative difference {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
