"""Training: learning, checkpoints, exact resume, SIGKILL, seeds, fine-tuning, DDP, CLI."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rhosr.cli.main import main as cli_main
from rhosr.core.grid import Grid, box_for
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.inference.evaluate import evaluate
from rhosr.labels.store import Record, Store
from rhosr.nn.modelfile import load_model, read_model_file, save_model
from rhosr.nn.nets import build
from rhosr.training.checkpoint import read_checkpoint, weights_hash
from rhosr.training.run import HASH_DIR_ENV, train

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: QM9-style ids so that the standard split decides: 2 train, 1 val, 1 test.
MOLECULES = [("qm9_000001", "C"), ("qm9_000003", "O"), ("qm9_110001", "[H][H]"),
             ("qm9_120001", "N")]


def synthetic_target(sad, grid, n_electrons, sigma=0.6, mix=0.5):
    """SAD partly blurred (periodic Gaussian, sigma bohr), normalised: something to learn."""
    k = [2 * np.pi * np.fft.fftfreq(n, d=h) for n, h in zip(grid.mesh, grid.spacing)]
    kx, ky, kz = np.meshgrid(*k, indexing="ij", sparse=True)
    blur = np.fft.ifftn(np.fft.fftn(sad) * np.exp(-0.5 * sigma**2 * (kx**2 + ky**2 + kz**2))).real
    rho = np.clip((1 - mix) * sad + mix * blur, 0, None)
    return rho * (n_electrons / grid.integrate(rho))


def make_store(path, molecules=MOLECULES, coarse=10):
    """A store of small molecules in their published boxes on a reduced mesh."""
    st = Store(path, "a")
    for mol_id, smiles in molecules:
        mol = load_molecule("smiles:" + smiles)
        _, fine, pos = box_for(mol.positions)
        grid = Grid(fine.cell, (2 * coarse,) * 3)
        sad = sad_density(mol.symbols, pos, grid, charge=mol.charge)
        rho = synthetic_target(sad, grid, mol.nelectron).astype(np.float32)
        st.write(Record(mol_id, mol.symbols, pos, np.asarray(grid.cell), grid.mesh, mol.charge,
                        mol.spin, "test", rho))
    return st


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"))


def _weights(path):
    return load_model(path).state_dict()


def _assert_same(a, b, **kw):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **kw)


def test_overfits_one_molecule_below_sad(tmp_path):
    st = make_store(tmp_path / "one", [("water", "O")], coarse=12)
    # no augmentation: the plain conv net would first have to learn all 48 orientations
    result = train(st, tmp_path / "run", preset="tiny", steps=30, batch=1, lr=3e-3,
                   augment=False, val_fraction=0.0, val_every=30, progress=False)
    assert result["val_molecules"] == 0 and result["steps"] == 30
    ev = evaluate(result["best"], st, ids=["water"])
    row = ev["molecules"][0]
    assert row["sad_nmae_percent"] > 10
    assert row["nmae_percent"] < 0.25 * row["sad_nmae_percent"], row
    assert abs(row["electron_error"]) < 1e-3


def test_checkpoints_are_model_files_and_metrics(store, tmp_path):
    run = tmp_path / "run"
    result = train(store, run, preset="tiny", steps=3, batch=2, val_every=2, ema=0.9,
                   progress=False)
    assert result["train_molecules"] == 2 and result["val_molecules"] == 1
    for name in ("last.pt", "best.pt"):
        raw = torch.load(run / name, weights_only=True)
        assert {"format", "config", "state_dict", "extra", "versions", "training"} <= raw.keys()
        tr = raw["training"]
        assert {"step", "optimizer", "schedule", "rng", "model_state", "ema_state"} <= tr.keys()
        model = load_model(run / name)
        assert model.config.channels == 8
    last = read_checkpoint(run / "last.pt")
    assert last["training"]["step"] == 3
    extra = last["extra"]
    assert extra["preset"] == "tiny" and extra["steps"] == 3 and extra["parameters"] > 0
    assert extra["training_data"]["molecules"] == 2
    assert extra["training_data"]["id_range"] == ["qm9_000001", "qm9_000003"]
    assert extra["best_val_nmae_percent"] == result["best_val_nmae_percent"] > 0
    assert extra["seconds"] > 0
    # EMA weights are the model weights of the file; raw weights kept for resuming
    _assert_same(last["state_dict"], last["training"]["ema_state"])
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert rows[0]["val_nmae_percent"] == "" and float(rows[1]["val_nmae_percent"]) > 0
    with pytest.raises(ValueError, match="already holds a run"):
        train(store, run, preset="tiny", steps=1, progress=False)


def test_info_of_a_model_file(store, tmp_path, capsys):
    run = tmp_path / "run"
    result = train(store, run, preset="tiny", steps=2, batch=1, val_every=2, progress=False)
    assert cli_main(["info", str(run / "best.pt")]) == 0
    out = capsys.readouterr().out
    n_params = sum(p.numel() for p in load_model(run / "best.pt").parameters())
    assert "preset" in out and "tiny" in out
    assert f"{n_params:,}" in out
    assert "2 molecules (qm9_000001 .. qm9_000003), 1 validation" in out
    assert f"{result['best_val_nmae_percent']:.3f} %" in out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert cli_main(["info", str(bad)]) == 2
    assert "not a rhosr model file" in capsys.readouterr().err


def test_same_seed_same_weights_and_exact_resume(store, tmp_path):
    kw = dict(preset="tiny", steps=4, batch=2, val_every=2, ema=0.8, progress=False)
    a = train(store, tmp_path / "a", seed=5, **kw)
    b = train(store, tmp_path / "b", seed=5, workers=1, **kw)  # samples from a worker process
    assert a["weights_sha256"] == b["weights_sha256"]
    c = train(store, tmp_path / "c", seed=6, **kw)
    assert c["weights_sha256"] != a["weights_sha256"]
    # interrupted after 2 of 4 steps, then resumed
    half = train(store, tmp_path / "r", seed=5, stop_after=2, **kw)
    assert half["steps"] == 2
    full = train(store, tmp_path / "r", seed=5, resume=True, **kw)
    assert full["steps"] == 4
    ra, rr = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "r" / "last.pt")
    _assert_same(ra["training"]["model_state"], rr["training"]["model_state"], rtol=1e-6, atol=1e-7)
    _assert_same(ra["state_dict"], rr["state_dict"], rtol=1e-6, atol=1e-7)
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_fine_tune_with_frozen_parts(store, tmp_path):
    torch.manual_seed(1)
    base = build("tiny")
    torch.nn.init.normal_(base.tail.weight, std=0.01)
    init = save_model(tmp_path / "base.pt", base, {"preset": "tiny"})
    result = train(store, tmp_path / "ft", init=init, freeze=["input", "body"], steps=2,
                   batch=1, progress=False)
    assert result["frozen"] and all(n.startswith(("head.", "blocks.")) for n in result["frozen"])
    after = _weights(tmp_path / "ft" / "last.pt")
    before = base.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == name.startswith(("head.", "blocks.")), name
    info = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert info["training"]["args"]["lr"] == pytest.approx(3e-4)  # the fine-tuning default
    assert info["extra"]["init"] == str(init)
    with pytest.raises(ValueError, match="cannot freeze"):
        train(store, tmp_path / "ft2", init=init, freeze=["nonsense"], steps=1, progress=False)


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_sigkill_leaves_loadable_last(store, tmp_path):
    run = tmp_path / "run"
    code = (f"from rhosr.training.run import train; train({str(store.path)!r}, {str(run)!r}, "
            "preset='tiny', steps=100000, batch=1, checkpoint_every=1, val_every=10**6, "
            "progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        last = run / "last.pt"
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        first = last.stat().st_mtime_ns
        while last.stat().st_mtime_ns == first and time.time() < deadline:
            time.sleep(0.01)  # kill while it keeps rewriting last.pt
        time.sleep(0.03)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    load_model(last)
    step = torch.load(last, weights_only=True)["training"]["step"]
    assert step >= 1
    # and the run goes on from there
    result = train(store, run, preset="tiny", steps=step + 1, batch=1, resume=True,
                   val_every=10**6, progress=False)
    assert result["steps"] == step + 1


def test_ddp_two_processes_identical_weights(store, tmp_path):
    module = "rhosr"
    run, hashes = tmp_path / "ddp", tmp_path / "hashes"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", module, "train", str(store.path), "--out", str(run), "--preset", "tiny",
           "--steps", "3", "--batch", "2", "--val-every", "2", "--no-progress"]
    res = subprocess.run(cmd, env=_env(**{HASH_DIR_ENV: str(hashes), "OMP_NUM_THREADS": "1"}),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    # rank 0 reports once, and the report is flushed before the ranks leave
    assert res.stdout.count("rhosr train: 3 steps in") == 1, res.stdout
    h0 = (hashes / "rank0.sha256").read_text().strip()
    h1 = (hashes / "rank1.sha256").read_text().strip()
    assert h0 == h1 == weights_hash(load_model(run / "last.pt"))
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["extra"]["world_size"] == 2 and ckpt["training"]["step"] == 3
    # the same global batch in one process gives the same weights (up to summation order)
    single = train(store, tmp_path / "one", preset="tiny", steps=3, batch=2, val_every=2,
                   progress=False)
    _assert_same(ckpt["state_dict"], read_model_file(single["last"])["state_dict"],
                 rtol=1e-4, atol=1e-6)
    assert ckpt["extra"]["best_val_nmae_percent"] == pytest.approx(
        single["best_val_nmae_percent"], rel=1e-4)


def test_cli_train_and_user_errors(store, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", str(store.path), "--out", str(run), "--preset", "tiny", "--steps", "2",
            "--batch", "1", "--no-progress"]
    assert cli_main(argv) == 0
    assert "best validation NMAE" in capsys.readouterr().out
    assert (run / "best.pt").is_file()
    assert cli_main(argv) == 2  # run directory taken, no --resume
    assert "already holds a run" in capsys.readouterr().err
    argv[argv.index("--steps") + 1] = "4"
    assert cli_main(argv + ["--resume"]) == 0
    assert read_checkpoint(run / "last.pt")["training"]["step"] == 4
    assert cli_main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert cli_main(["train", str(store.path), "--out", str(tmp_path / "y"), "--init",
                     str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("rhosr train: error:") for e in err)


def test_crops_and_time_budget(tmp_path):
    st = make_store(tmp_path / "big", [("water", "O")], coarse=20)
    t0 = time.perf_counter()
    result = train(st, tmp_path / "run", preset="tiny", minutes=0.02, crop=4, batch=1,
                   val_fraction=0.0, progress=False)
    assert result["steps"] >= 1 and 1.2 <= result["seconds"] < 1.2 + 20
    assert time.perf_counter() - t0 < 30
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == result["steps"] and all(float(r["loss_nmae_percent"]) > 0 for r in rows)
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["training"]["args"]["crop"] == 4 and ckpt["extra"]["steps"] == result["steps"]


def test_default_batch_is_one_on_a_cpu_and_a_resumed_runs(store, tmp_path):
    run = tmp_path / "run"
    train(store, run, preset="tiny", steps=2, val_every=2, progress=False, device="cpu",
          batch=2, stop_after=1)
    assert read_checkpoint(run / "last.pt")["training"]["args"]["batch"] == 2
    train(store, run, preset="tiny", steps=2, val_every=2, progress=False, device="cpu",
          resume=True)  # no batch given: the run's own
    assert read_checkpoint(run / "last.pt")["training"]["args"]["batch"] == 2
    fresh = tmp_path / "fresh"
    train(store, fresh, preset="tiny", steps=1, progress=False, device="cpu")
    assert read_checkpoint(fresh / "last.pt")["training"]["args"]["batch"] == 1


def test_mixed_position_interleaves_by_weight():
    from rhosr.training.sampling import mixed_position

    w = [0.25, 0.5, 0.25]
    got = [mixed_position(g, w) for g in range(400)]
    for s in range(3):
        positions = [p for t, p in got if t == s]
        assert positions == list(range(len(positions)))  # each stream in order, no gaps
        assert abs(len(positions) - 400 * w[s]) <= 1
    # every prefix keeps stream 0 within one sample of its share
    n0 = np.cumsum([t == 0 for t, _ in got])
    assert np.all(np.abs(n0 - 0.25 * np.arange(1, 401)) <= 1)
    assert [mixed_position(g, [1.0, 0.0])[0] for g in range(5)] == [0] * 5


def test_two_stores_mix_and_id_patterns(store, tmp_path, capsys):
    """Training reads two stores as one: --mix draws by weight, --ids filters, and the
    model file records the elements and charges it has seen."""
    from rhosr.errors import BankError
    from rhosr.labels.bank import Union
    from rhosr.nn.modelfile import seen_of
    from rhosr.training.data import training_ids
    from rhosr.training.sampling import StepSamples, mix_streams

    other = make_store(tmp_path / "other", [("S-train-000", "S"), ("S-train-001", "CS"),
                                            ("S-test-002", "CCS"), ("anion-train-000", "[OH-]")],
                       coarse=10)
    both = Union([store.path, other.path])
    train_ids, val_ids = training_ids(both, None, 0.1)
    # ids that name their split: the 'test' one never trains or validates
    assert "S-test-002" not in train_ids + val_ids
    assert set(train_ids) == {"qm9_000001", "qm9_000003", "S-train-000", "S-train-001",
                              "anion-train-000"}
    assert training_ids(both, None, 0.1, ["qm9_*", "S-*"])[0] == [
        "qm9_000001", "qm9_000003", "S-train-000", "S-train-001"]
    with pytest.raises(BankError, match="both"):
        Union([store.path, store.path])

    result = train([store.path, other.path], tmp_path / "run", preset="tiny", steps=4,
                   mix=[3, 1], ids=["qm9_*", "S-*"], val_every=4, progress=False)
    extra = read_model_file(result["best"])["extra"]
    assert extra["training_data"]["molecules"] == 4
    assert seen_of(extra) == {"elements": ["H", "C", "O", "S"], "charges": [0]}
    assert len(extra["training_data"]["store"]) == 2

    # the sample order follows the weights: 3 of every 4 samples from the first store
    ds_ids = ["qm9_000001", "qm9_000003", "S-train-000", "S-train-001"]
    streams = mix_streams(both, ds_ids, [3, 1])
    samples = StepSamples(type("D", (), {"__len__": lambda self: 4})(), 0, 1, streams)
    picked = [ds_ids[samples.index(step, 0)] for step in range(40)]
    assert sum(i.startswith("qm9_") for i in picked) == 30
    assert set(picked) == set(ds_ids)

    # CLI: two stores, a mix weight per store, @FILE patterns
    (tmp_path / "ids.txt").write_text("qm9_*\nanion-*\n")
    rc = cli_main(["train", str(store.path), str(other.path), "--out", str(tmp_path / "cli"),
                   "--preset", "tiny", "--steps", "2", "--mix", "1", "1", "--ids",
                   "@" + str(tmp_path / "ids.txt"), "--no-progress"])
    assert rc == 0
    extra = read_model_file(tmp_path / "cli" / "best.pt")["extra"]
    assert seen_of(extra) == {"elements": ["H", "C", "O"], "charges": [-1, 0]}
    rc = cli_main(["evaluate", "--model", str(tmp_path / "cli" / "best.pt"), str(store.path),
                   str(other.path), "--split", "all"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "8 molecules (all)" in out and "  qm9: 4 molecules" in out and "  S: 3 molecules" in out
    rc = cli_main(["train", str(store.path), str(other.path), "--out", str(tmp_path / "bad"),
                   "--preset", "tiny", "--steps", "2", "--mix", "1", "--no-progress"])
    assert rc == 2
    assert "--mix gives 1 weight(s) for 2 store(s)" in capsys.readouterr().err


def test_bakeoff_designs_train_and_evaluate(store, tmp_path):
    """The multi-scale body with element channels and fine terms trains, resumes and
    evaluates like the default design; crops are refused for it (not local)."""
    from rhosr.errors import InputError

    run = tmp_path / "unet"
    res = train(store, run, preset="tiny-unet", steps=3, val_every=3, progress=False)
    assert res["steps"] == 3 and tuple(read_model_file(res["best"])["config"]["widths"]) == (8, 8)
    ev = evaluate(res["best"], store, split="all")
    assert ev["summary"]["n"] == 4 and ev["summary"]["mean_nmae_percent"] > 0
    res = train(store, run, preset="tiny-unet", steps=5, resume=True, val_every=5, progress=False)
    assert res["steps"] == 5
    with pytest.raises(InputError, match="--crop needs a local network"):
        train(store, tmp_path / "crop", preset="tiny-unet", steps=1, crop=4, progress=False)


def test_bf16_precision_on_the_cpu(store, tmp_path):
    """--precision bf16 trains under bfloat16 autocast on a CPU, float32 weights; a resumed
    run keeps it."""
    res = train(store, tmp_path / "bf16", preset="tiny", steps=2, precision="bf16", val_every=2,
                progress=False)
    ckpt = read_checkpoint(tmp_path / "bf16" / "last.pt")
    assert ckpt["training"]["args"]["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())
    train(store, tmp_path / "bf16", preset="tiny", steps=3, resume=True, val_every=3, progress=False)
    assert read_checkpoint(tmp_path / "bf16" / "last.pt")["training"]["args"]["precision"] == "bf16"
    plain = train(store, tmp_path / "fp32", preset="tiny", steps=2, val_every=2, precision="fp32",
                  progress=False)
    assert read_checkpoint(tmp_path / "fp32" / "last.pt")["training"]["args"]["precision"] == "fp32"
    assert res["weights_sha256"] != plain["weights_sha256"]  # bf16 rounding changes the steps
    with pytest.raises(Exception, match="precision must be one of"):
        train(store, tmp_path / "bad", preset="tiny", steps=1, precision="fp16", progress=False)


def test_bundle_script_writes_a_plain_model_file(store, tmp_path):
    from conftest import load_script

    bundle = load_script("bundle_model")
    res = train(store, tmp_path / "run", preset="tiny", steps=2, val_every=2, progress=False)
    prev = tmp_path / "prev.pt"
    save_model(prev, build("tiny"), extra={"phases": [{"run": "p0"}], "training_command": "a"})
    out = tmp_path / "bundled.pt"
    assert bundle.main([res["best"], "--command", "b", "--out", str(out), "--previous", str(prev)]) == 0
    record = read_model_file(out)
    assert "training" not in record  # no optimizer state
    extra = record["extra"]
    assert [p["run"] for p in extra["phases"]] == ["p0", "run"] and extra["training_command"] == "a && b"
    assert extra["training_data"]["ids"] == ["qm9_000001", "qm9_000003"]
    _assert_same(load_model(out).state_dict(), _weights(res["best"]))
    assert extra["init"] is None
    assert extra["card"] is None  # no bundled.md beside it
    (tmp_path / "bundled.md").write_text("# card\n")
    assert bundle.card_name(out) == "bundled.md"
    assert bundle.portable_init(bundle.ROOT / "runs" / "x" / "best.pt") == "runs/x/best.pt"
    assert bundle.portable_init(tmp_path / "start.pt") == "start.pt"  # not a path on this machine
    assert "bundled model it replaces" in bundle.portable_init(bundle.DEFAULT)


def test_resume_keeps_the_data_selection(store, tmp_path):
    run = tmp_path / "sel"
    train(store, run, preset="tiny", steps=2, ids=["qm9_000001"], val_every=2, progress=False)
    res = train(store, run, preset="tiny", steps=3, resume=True, val_every=3, progress=False)
    assert res["train_molecules"] == 1
    assert read_checkpoint(run / "last.pt")["training"]["args"]["ids"] == ["qm9_000001"]


def test_constant_schedule_and_slim_resume_point(store, tmp_path):
    """A 'constant' run resumed from its slim resume point goes on at the same rate with
    the same raw and EMA weights (to the float16 difference) and without the optimizer."""
    from rhosr.training.checkpoint import slim_checkpoint

    run = tmp_path / "run"
    train(store, run, preset="tiny", steps=3, batch=1, ema=0.9, schedule="constant",
          val_every=3, progress=False)
    full = read_checkpoint(run / "last.pt")
    assert full["training"]["args"]["schedule"] == "constant"
    size = slim_checkpoint(run / "last.pt", tmp_path / "slim.pt")
    assert size < 0.7 * (run / "last.pt").stat().st_size
    slim = read_checkpoint(tmp_path / "slim.pt")
    assert "optimizer" not in slim["training"] and "model_delta" in slim["training"]
    _assert_same(slim["state_dict"], full["training"]["ema_state"])
    run2 = tmp_path / "run2"
    run2.mkdir()
    (run2 / "last.pt").write_bytes((tmp_path / "slim.pt").read_bytes())
    (run2 / "metrics.csv").write_bytes((run / "metrics.csv").read_bytes())
    with pytest.raises(ValueError, match="schedule is 'constant'"):
        train(store, run2, steps=5, resume=True, schedule="cosine", progress=False)
    train(store, run2, steps=5, batch=1, ema=0.9, resume=True, val_every=5, progress=False)
    rows = list(csv.DictReader(open(run2 / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    lrs = [float(r["lr"]) for r in rows]
    # the 200-step warm-up goes on across the resume: no restart, no decay
    np.testing.assert_allclose(lrs, lrs[0] * np.arange(1, 6), rtol=1e-9)


def test_best_weights_travel_only_when_not_the_resume_points(store, tmp_path):
    from rhosr.training.checkpoint import best_weights

    run = tmp_path / "run"
    train(store, run, preset="tiny", steps=2, batch=1, val_every=1, lr=1e-9, progress=False)
    dst = tmp_path / "best.pt"
    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    said = best_weights(run / "best.pt", run / "last.pt", dst)
    if best["training"]["step"] == last["training"]["step"]:
        assert not dst.exists() and "resume point" in said
    else:
        written = read_model_file(dst)
        assert "training" not in written and "step 1" in said
        _assert_same(written["state_dict"], best["state_dict"])
    dst.write_bytes(b"stale")
    best_weights(run / "last.pt", run / "last.pt", dst)  # the same step: nothing travels
    assert not dst.exists()
