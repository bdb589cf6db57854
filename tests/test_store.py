import multiprocessing as mp
import os

import numpy as np
import pytest

from rhosr.errors import StoreError
from rhosr.labels.store import Record, Store


def _record(mol_id="m1", seed=0):
    rng = np.random.default_rng(seed)
    mesh = (8, 6, 10)
    return Record(id=mol_id, symbols=("O", "H", "H"), positions=rng.random((3, 3)) + 3.0,
                  cell=np.array([6.0, 5.0, 7.0]), fine_mesh=mesh, charge=-1, spin=1, source="test",
                  rho_dft=rng.random(mesh).astype(np.float32), energy=-17.25, converged=True,
                  scf_iterations=12, seconds=3.5, timings={"scf": 3.0, "density": 0.5},
                  level_of_theory={"xc": "PBE"})


def test_round_trip_and_listing(tmp_path):
    store = Store(tmp_path / "s", mode="a", meta={"level_of_theory": {"xc": "PBE"}})
    rec = _record()
    store.write(rec)
    again = Store(tmp_path / "s")
    assert again.ids() == ["m1"] and "m1" in again and len(again) == 1
    back = again.read("m1")
    np.testing.assert_array_equal(back.rho_dft, rec.rho_dft)
    np.testing.assert_allclose(back.positions, rec.positions)
    assert back.symbols == rec.symbols and back.charge == -1 and back.spin == 1
    assert back.coarse_mesh == (4, 3, 5) and back.grid.mesh == (8, 6, 10)
    assert back.energy == -17.25 and back.scf_iterations == 12
    assert back.timings["scf"] == 3.0 and back.level_of_theory == {"xc": "PBE"}
    assert back.rhosr_version and back.nelectron == 9
    assert again.meta["level_of_theory"] == {"xc": "PBE"}
    assert again.read("m1", density=False).rho_dft is None


def test_partial_writes_are_invisible_and_cleaned(tmp_path):
    store = Store(tmp_path / "s", mode="a")
    # what a writer killed in the middle of a write leaves behind
    (store.path / "records" / ".m2.abc.tmp").write_bytes(b"\x89HDF partial")
    assert store.ids() == []
    assert store.clean_partial() == 1


def test_rewriting_a_record_replaces_it(tmp_path):
    store = Store(tmp_path / "s", mode="a")
    store.write(_record(seed=1))
    store.write(_record(seed=2))
    assert store.ids() == ["m1"]
    np.testing.assert_array_equal(store.read("m1").rho_dft, _record(seed=2).rho_dft)


def test_failures_are_kept_apart(tmp_path):
    store = Store(tmp_path / "s", mode="a")
    store.write_failure("bad", {"reason": "SCF not converged"})
    assert store.ids() == [] and store.failures()["bad"]["reason"] == "SCF not converged"
    # a later success clears the failure
    store.write(_record("bad"))
    assert store.failures() == {} and store.ids() == ["bad"]


def test_errors(tmp_path):
    with pytest.raises(StoreError, match="not a rhosr store"):
        Store(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="non-empty"):
        Store(tmp_path / "junk", mode="a")
    Store(tmp_path / "s", mode="a")
    with pytest.raises(StoreError, match="read-only"):
        Store(tmp_path / "s").write(_record())


def _read_sum(args):
    path, mol_id = args
    return float(Store(path).read(mol_id).rho_dft.sum())


def test_concurrent_readers(tmp_path):
    store = Store(tmp_path / "s", mode="a")
    for k in range(4):
        store.write(_record(f"m{k}", seed=k))
    jobs = [(str(store.path), f"m{k % 4}") for k in range(16)]
    with mp.get_context("spawn").Pool(4) as pool:
        sums = pool.map(_read_sum, jobs)
    expected = [float(_record(f"m{k % 4}", seed=k % 4).rho_dft.sum()) for k in range(16)]
    np.testing.assert_allclose(sums, expected, rtol=1e-6)


def test_files_get_the_usual_mode(tmp_path):
    # atomic writes go through a temp file; the renamed file must not stay owner-only (0600)
    old_mask = os.umask(0o022)
    try:
        store = Store(tmp_path / "s", mode="a")
        store.write(_record())
    finally:
        os.umask(old_mask)
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert any(p.suffix == ".h5" for p in files)
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o644 for p in files}
