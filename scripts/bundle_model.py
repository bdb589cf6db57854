"""Make a training run's best checkpoint the bundled model (``--model default``).

    python scripts/bundle_model.py RUN_DIR/best.pt --command "rhosr train data/qm9 --init default ..."

Writes a plain model file (no optimizer or RNG state) to ``--out`` (default
``src/rhosr/models/default.pt``) with the run's metadata, the command that made it, the
hardware, and the list of training phases: those of the file it replaces (``--previous``,
default the current bundled file, when the run started from it) and this one.  The
training ids and the elements and charges seen come from the run itself.  Update the
model card (``src/rhosr/models/default.md``) from measurements afterwards: this script
measures nothing.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rhosr.nn.modelfile import read_model_file, save_model  # noqa: E402
from rhosr.nn.nets import build  # noqa: E402

DEFAULT = ROOT / "src" / "rhosr" / "models" / "default.pt"


def portable_init(init) -> str | None:
    """The run's ``--init`` as the bundled file should name it: a path inside the
    repository relative to its root, any other file by its name (an absolute path
    names a file on the machine that trained it, which no user has)."""
    if not init:
        return None
    path = Path(init).expanduser().resolve()
    if path == DEFAULT.resolve():
        return "the bundled model it replaces (src/rhosr/models/default.pt)"
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def card_name(out: Path) -> str | None:
    """The model card beside the written file (its stem + ``.md``), or None when it has none."""
    card = Path(out).with_suffix(".md")
    return card.name if card.is_file() else None


def bundled_extra(run_extra: dict, previous: dict | None, run_name: str, command: str,
                  card: str | None = None) -> dict:
    """The metadata of the bundled file: the run's, plus command, hardware, phases and its
    card's file name; ``init`` as :func:`portable_init` gives it."""
    phase = {"run": run_name, "steps": run_extra.get("steps"), "seconds": run_extra.get("seconds"),
             "best_val_nmae_percent": run_extra.get("best_val_nmae_percent")}
    phases = list((previous or {}).get("phases") or []) + [phase]
    commands = [c for c in ((previous or {}).get("training_command"), command) if c]
    extra = dict(run_extra)
    extra.update(init=portable_init(run_extra.get("init")), phases=phases,
                 training_command=" && ".join(commands), card=card,
                 hardware=f"{platform.machine()}, {run_extra.get('world_size', 1)} process(es)")
    return extra


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="RUN_DIR/best.pt")
    ap.add_argument("--command", required=True, help="the command(s) that trained it")
    ap.add_argument("--out", type=Path, default=DEFAULT)
    ap.add_argument("--previous", type=Path, default=None,
                    help="the file it continues (its phases are kept; default: the run's --init "
                         "when that is the bundled file)")
    args = ap.parse_args(argv)
    record = read_model_file(args.checkpoint)
    extra = record["extra"]
    previous = args.previous
    if previous is None and extra.get("init") and Path(extra["init"]).resolve() == DEFAULT.resolve():
        previous = DEFAULT
    prev_extra = read_model_file(previous)["extra"] if previous is not None else None
    model = build(record["config"])
    model.load_state_dict(record["state_dict"], strict=True)
    out_extra = bundled_extra(extra, prev_extra, args.checkpoint.parent.name, args.command,
                              card=card_name(args.out))
    save_model(args.out, model, extra=out_extra)
    print(f"{args.out}: {extra.get('preset')}, best validation NMAE "
          f"{extra.get('best_val_nmae_percent'):.3f} %, {len(out_extra['phases'])} phase(s); "
          "now update the model card from measurements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
