"""Training options: TrainConfig, the resume table (fixed / renewable / per call), the CLI
passing on only what is given, and resumes of checkpoints written before an option existed."""

import shutil
from dataclasses import fields

import pytest
import torch
from test_train import make_store

from rhosr.cli.main import build_parser
from rhosr.cli.main import main as cli_main
from rhosr.errors import InputError
from rhosr.nn.config import make_config
from rhosr.training.checkpoint import read_checkpoint
from rhosr.training.config import (
    CHOSEN_AT_START,
    DEFAULT_STEPS,
    FIXED,
    PER_CALL,
    RENEWABLE,
    RESUME,
    TrainConfig,
    given_options,
    resolved,
    saved_options,
)
from rhosr.training.run import run_options, train

#: QM9 ids: qm9_000001 and qm9_000003 train, qm9_110001 validates, qm9_120001 is test.
MOLECULES = [("qm9_000001", "C"), ("qm9_000003", "O"), ("qm9_110001", "[H][H]"),
             ("qm9_120001", "N")]

#: The base run's options: every fixed and renewable option away from its default where
#: a tiny run allows it, and the per-call ones too (a resume must not inherit them).
BASE = dict(preset="tiny", seed=3, batch=1, lr=2e-3, ema=0.9, precision="bf16", warmup=0.1,
            weight_decay=1e-3, clip=2.0, mix=[1.0], ids=["qm9_*"], val_ids=["qm9_11*"],
            val_max=1, steps=2, stop_after=1, minutes=30.0, val_every=1, checkpoint_every=1,
            checkpoint_minutes=5.0, workers=0, cache="all", device="cpu", progress=False)

#: A value other than the base run's, for every fixed option.
OTHER = {"preset": "tiny-paper", "init": "another.pt", "freeze": ["output"], "seed": 4,
         "batch": 2, "schedule": "constant", "warmup": 0.2, "weight_decay": 0.0, "clip": 0.5,
         "augment": False, "crop": 4, "sad_variant": "worsened", "val_fraction": 0.3}

#: New values for every renewable option.
RENEWED = {"lr": 5e-4, "ema": 0.5, "precision": "fp32", "mix": (2.0,), "ids": ("qm9_000001",),
           "val_ids": ("*",), "val_max": None, "val_store": None}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(store, val store, run dir) of a run interrupted after step 1 of 2."""
    root = tmp_path_factory.mktemp("resume")
    store = make_store(root / "store", MOLECULES, coarse=8)
    val_store = make_store(root / "val", [("qm9_110002", "[H][H]")], coarse=8)
    res = train(store, root / "run", val_store=str(val_store.path), **BASE)
    assert res["steps"] == 1
    return store, val_store, root / "run"


def _copy(run, dst):
    shutil.copytree(run, dst)
    return dst


def test_the_table_names_every_option():
    names = {f.name for f in fields(TrainConfig)}
    assert set(RESUME) == names
    assert set(RESUME.values()) == {FIXED, RENEWABLE, PER_CALL}
    assert set(CHOSEN_AT_START) <= names
    assert set(OTHER) == {n for n, r in RESUME.items() if r == FIXED}
    assert set(RENEWED) == {n for n, r in RESUME.items() if r == RENEWABLE}
    with pytest.raises(TypeError, match="unexpected option"):
        given_options(sead=3)
    for bad in (dict(batch=0), dict(schedule="linear"), dict(ema=1.0), dict(val_fraction=1.0),
                dict(mix=[1, -1]), dict(preset="nonsense"), dict(workers=-1)):
        with pytest.raises(InputError) as err:
            TrainConfig(**bad)
        assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


def test_fixed_options_given_anew_are_refused(base, tmp_path):
    store, _, run = base
    run = _copy(run, tmp_path / "run")
    before = (run / "last.pt").read_bytes()
    for name, value in OTHER.items():
        with pytest.raises(InputError) as err:
            train(store, run, resume=True, steps=2, progress=False, **{name: value})
        message = str(err.value)
        assert "\n" not in message and name in message and message.startswith("--resume:"), message
    assert (run / "last.pt").read_bytes() == before  # nothing ran


def test_resume_inherits_fixed_and_renewable_options_not_per_call_ones(base):
    _, val_store, run = base
    ckpt = read_checkpoint(run / "last.pt")
    saved = saved_options(ckpt)
    o = run_options(*given_options(resume=True), ckpt, "cpu")
    for name, rule in RESUME.items():
        got = getattr(o, name)
        if name == "preset":
            assert make_config(got) == make_config("tiny")
        elif rule == PER_CALL:
            assert got == getattr(resolved(TrainConfig(resume=True), "cpu"), name), name
        else:
            assert got == saved[name], name
    assert (o.seed, o.batch, o.lr, o.ema, o.precision, o.val_max) == (3, 1, 2e-3, 0.9, "bf16", 1)
    assert o.val_store == str(val_store.path.resolve()) and o.ids == ("qm9_*",)
    assert o.steps == DEFAULT_STEPS and o.minutes is None and o.val_every != BASE["val_every"]
    # renewable options given anew win; fixed ones given with the run's value are accepted
    same = {"seed": 3, "batch": 1, "preset": "tiny", "warmup": 0.1, "schedule": "cosine"}
    o = run_options(*given_options(resume=True, **RENEWED, **same), ckpt, "cpu")
    for name, value in RENEWED.items():
        assert getattr(o, name) == value, name
    # an option passed as None that is chosen at the start counts as not given
    o = run_options(*given_options(resume=True, batch=None, lr=None, preset=None), ckpt, "cpu")
    assert (o.batch, o.lr) == (1, 2e-3)


def test_resume_without_seed_repeats_the_uninterrupted_run(base, tmp_path):
    """`rhosr train --resume` with only a budget: the run's seed, batch, lr, EMA, precision
    and molecules, so the weights are those of the run that was never interrupted."""
    store, val_store, run = base
    run = _copy(run, tmp_path / "run")
    argv = ["train", str(store.path), "--out", str(run), "--resume", "--steps", "2", "--no-progress"]
    assert set(vars(build_parser().parse_args(argv))) == {"command", "store", "out", "resume",
                                                          "steps", "progress"}
    assert cli_main(argv) == 0
    whole = train(store, tmp_path / "whole", val_store=str(val_store.path),
                  **{**BASE, "stop_after": None})
    resumed, uninterrupted = read_checkpoint(run / "last.pt"), read_checkpoint(whole["last"])
    assert resumed["training"]["step"] == 2
    assert resumed["training"]["args"]["seed"] == 3
    for key in ("model_state", "ema_state"):
        a, b = resumed["training"][key], uninterrupted["training"][key]
        assert all(torch.equal(a[k], b[k]) for k in a), key


def test_checkpoint_of_older_code_resumes(base, tmp_path):
    """Options a checkpoint does not record are unknown: what is given, else the default;
    a checkpoint without 'schedule' is a cosine run."""
    store, _, run = base
    run = _copy(run, tmp_path / "run")
    record = torch.load(run / "last.pt", weights_only=True)
    for key in ("schedule", "val_max", "val_store"):
        del record["training"]["args"][key]
    torch.save(record, run / "last.pt")
    with pytest.raises(InputError, match="schedule is 'cosine'"):
        train(store, run, resume=True, steps=2, schedule="constant", progress=False)
    res = train(store, run, resume=True, steps=2, val_every=2, progress=False)
    args = read_checkpoint(run / "last.pt")["training"]["args"]
    assert res["steps"] == 2 and res["val_molecules"] == 1  # the store's own validation split
    assert args["schedule"] == "cosine" and args["val_max"] is None and args["val_store"] is None
    assert args["seed"] == 3 and args["precision"] == "bf16" and args["ids"] == ["qm9_*"]


def test_auto_precision_follows_the_cpu(tmp_path, monkeypatch):
    """--precision auto: bf16 on CUDA and on a CPU with AMX or AVX-512 BF16, fp32 elsewhere."""
    from rhosr.training import config as cfg

    for flags, want in [("fpu sse2 avx512f amx_bf16 amx_tile", True),
                        ("fpu sse2 avx512f avx512_bf16", True), ("fpu sse2 avx2 avx512f", False)]:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cfg.cpu_has_bf16(str(info)) is want
    assert cfg.cpu_has_bf16(str(tmp_path / "missing")) is False
    base = TrainConfig(preset="tiny", steps=1)
    for has, device, want in [(True, "cpu", "bf16"), (False, "cpu", "fp32"), (False, "cuda", "bf16")]:
        monkeypatch.setattr(cfg, "cpu_has_bf16", lambda has=has: has)
        assert resolved(base, device).precision == want
    assert resolved(TrainConfig(preset="tiny", steps=1, precision="fp32"), "cpu").precision == "fp32"
