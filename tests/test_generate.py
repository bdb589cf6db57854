"""End-to-end label generation on tiny molecules (a few seconds of SCF each)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rhosr.dft.generate import generate
from rhosr.errors import InputError
from rhosr.inference.predict import density_predictor
from rhosr.labels.store import Store


@pytest.fixture
def h2_frames(tmp_path):
    """Four H2 molecules (a multi-frame xyz) with different bond lengths."""
    path = tmp_path / "h2.xyz"
    frames = []
    for k, d in enumerate((0.70, 0.74, 0.78, 0.82)):
        frames.append(f"2\nframe {k}\nH 0 0 0\nH 0 0 {d}\n")
    path.write_text("".join(frames))
    return path


def _electrons(rec):
    return rec.grid.integrate(rec.rho_dft)


def test_generate_charged_and_open_shell(tmp_path):
    out = tmp_path / "store"
    summary = generate(["smiles:[OH-]", "smiles:[CH3]"], str(out), progress=False)
    assert summary.done == 2 and not summary.failed
    store = Store(out)
    assert len(store) == 2
    for rec in store.records():
        assert rec.converged and np.isfinite(rec.energy)
        assert _electrons(rec) == pytest.approx(rec.nelectron, abs=2e-3)
        assert rec.rho_dft.dtype == np.float32 and rec.rho_dft.min() > -1e-6
    oh = [r for r in store.records() if r.charge == -1][0]
    ch3 = [r for r in store.records() if r.spin == 1][0]
    assert oh.nelectron == 8 and ch3.nelectron == 7
    assert "PBE" in str(store.meta["level_of_theory"]).upper()
    # the same command again skips both
    again = generate(["smiles:[OH-]", "smiles:[CH3]"], str(out), progress=False)
    assert again.done == 0 and again.skipped == 2


def test_failed_scf_is_recorded_not_stored(tmp_path, h2_frames):
    out = tmp_path / "store"
    summary = generate([str(h2_frames)], str(out), limit=1, max_cycle=1, progress=False)
    assert summary.done == 0 and len(summary.failed) == 1
    store = Store(out)
    assert store.ids() == []
    (failed_id, info), = store.failures().items()
    assert failed_id == "h2_f0" and info["reason"]
    # skipped on rerun unless asked to retry
    assert generate([str(h2_frames)], str(out), limit=1, progress=False).done == 1
    assert "h2_f0" not in Store(out).ids()
    retry = generate([str(h2_frames)], str(out), retry_failed=True, limit=1, progress=False)
    assert retry.done == 1 and "h2_f0" in Store(out).ids()
    assert "h2_f0" not in Store(out).failures()


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "store"
    with pytest.raises(InputError):
        generate(["qm9:1", "smiles:C1CC"], str(out), progress=False)
    assert not out.exists()


def test_sigkill_then_resume_completes_without_duplicates(tmp_path, h2_frames):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "rhosr", "generate", str(h2_frames), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    records = out / "records"
    deadline = time.time() + 120
    while time.time() < deadline:
        if records.is_dir() and any(p.suffix == ".h5" for p in records.iterdir()):
            break
        if proc.poll() is not None:
            pytest.fail(f"generate ended early: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = Store(out).ids()
    assert 1 <= len(first) < 4, first
    for mol_id in first:  # what was written before the kill is complete
        assert Store(out).read(mol_id).rho_dft.shape == Store(out).read(mol_id).fine_mesh
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"skipped {len(first)}" in res.stdout
    store = Store(out)
    assert store.ids() == ["h2_f0", "h2_f1", "h2_f2", "h2_f3"]
    assert not [p for p in records.iterdir() if p.name.startswith(".")]
    for rec in store.records():
        assert _electrons(rec) == pytest.approx(2.0, abs=1e-3)


def test_dask_local_cluster_two_workers(tmp_path, h2_frames):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "store"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        summary = generate([str(h2_frames)], str(out), scheduler=cluster.scheduler_address,
                           limit=2, progress=False)
        assert summary.done == 2, summary.failed
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
    store = Store(out)
    assert store.ids() == ["h2_f0", "h2_f1"]
    energies = [r.energy for r in store.records()]
    assert all(np.isfinite(energies)) and energies[0] != energies[1]


def test_rhosr_guess_gives_the_same_labels(tmp_path):
    """--guess rhosr: the SCF starts from Kohn–Sham steps on the prediction, ends at the same label."""
    plain = generate(["smiles:O", "smiles:[CH3]"], str(tmp_path / "a"), workers=1, progress=False)
    fast = generate(["smiles:O", "smiles:[CH3]"], str(tmp_path / "b"), workers=1,
                    progress=False, guess=density_predictor())
    assert plain.done == fast.done == 2
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    for mol_id in a.ids():
        ra, rb = a.read(mol_id), b.read(mol_id)
        assert rb.energy == pytest.approx(ra.energy, abs=1e-8)
        assert np.abs(rb.rho_dft - ra.rho_dft).sum() / ra.rho_dft.sum() < 1e-6
        closed = ra.spin == 0
        assert rb.level_of_theory["init_guess"].startswith("rhosr" if closed else "minao")
        assert (rb.timings["guess"] > 0) == closed
    with pytest.raises(InputError, match="local workers"):
        generate(["smiles:O"], str(tmp_path / "c"), scheduler="tcp://nowhere:1", guess=lambda m: None)
    with pytest.raises(InputError, match="predictor"):
        generate(["smiles:O"], str(tmp_path / "d"), guess="rhosr")


def test_the_default_guess_is_the_measured_faster_one():
    """`rhosr generate`'s default start is the one docs/scf_start.json (benchmarks/refine.py
    with the SCF start's method, the record behind docs/benchmarks.md "SCF start") measured
    faster per label at conv_tol 1e-10, with the same energies; --scheduler falls back to
    'minao' (no predictor there)."""
    import json
    from pathlib import Path

    from rhosr.cli.main import build_parser, generate_guess

    from rhosr.dft.refine import SCF_START_METHOD

    rows = json.loads((Path(__file__).parents[1] / "docs" / "scf_start.json").read_text())
    assert len(rows) >= 20 and all(r["start"]["method"] == SCF_START_METHOD for r in rows)
    minao = sum(r["scf_seconds"] for r in rows)
    rhosr = sum(r["start"]["seconds"] for r in rows)
    assert all(r["start"]["converged"] and abs(r["start"]["de"]) < 1e-8 for r in rows)
    faster = "rhosr" if rhosr < minao else "minao"
    parse = build_parser().parse_args
    assert generate_guess(parse(["generate", "smiles:O", "--out", "x"])) == faster
    remote = parse(["generate", "smiles:O", "--out", "x", "--scheduler", "tcp://h:1"])
    assert generate_guess(remote) == "minao"
