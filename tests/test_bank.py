"""The label bank: append-only checksummed shards of orbital records (rhosr.labels.bank, rhosr bank)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA

from rhosr.cli.main import main
from rhosr.dft.scf import level_of_theory
from rhosr.errors import BankError
from rhosr.labels.bank import Bank, open_labels
from rhosr.labels.bankwrite import add_records
from rhosr.labels.orbitals import density_from_record
from rhosr.labels.readers import source_records

LABELS = DATA / "labels"  # two training-pool and two test-split QM9 orbital labels
THEORY = level_of_theory()


@pytest.fixture(scope="module")
def labels():
    return source_records(LABELS, THEORY)


def _bank_files(path):
    return sorted(p.name for p in path.iterdir())


def test_round_trip_through_the_cli(tmp_path, labels, capsys):
    bank = tmp_path / "qm9"
    assert main(["bank", "add", str(bank), str(LABELS), "--theory", "default"]) == 0
    assert "added 4 records" in capsys.readouterr().out
    b = Bank(bank)
    assert b.ids() == sorted(r.id for r in labels) and len(b) == 4 and "qm9_000485" in b
    for rec in labels:
        back = b.read(rec.id, density=False)
        np.testing.assert_array_equal(back.mo_coeff, rec.mo_coeff)
        np.testing.assert_array_equal(back.mo_occ, rec.mo_occ)
        np.testing.assert_allclose(back.positions, rec.positions, rtol=0, atol=0)
        assert back.symbols == rec.symbols and back.fine_mesh == rec.fine_mesh
        assert back.energy == rec.energy and back.scf_iterations == rec.scf_iterations
        assert back.level_of_theory["xc"] == "PBE" and back.source == rec.source
    full = b.read("qm9_000485")
    np.testing.assert_array_equal(full.rho_dft, density_from_record(labels[0], cache=False))
    assert full.grid.integrate(full.rho_dft) == pytest.approx(full.nelectron, abs=1e-3)
    assert main(["bank", "check", str(bank)]) == 0
    assert "4 records in 1 shards" in capsys.readouterr().out
    assert main(["info", str(bank)]) == 0
    out = capsys.readouterr().out
    assert "records               4" in out and "test:2 train:2" in out
    assert main(["export", str(bank), "--ids", "qm9_000485", "--out", str(tmp_path / "x")]) == 0
    exported = np.load(tmp_path / "x" / "qm9_000485.dft.npy")
    np.testing.assert_array_equal(exported, full.rho_dft)
    assert isinstance(open_labels(bank), Bank)
    assert main(["predict", "qm9:485", "--reference", str(bank), "-o", str(tmp_path / "p.cube")]) == 0
    line = capsys.readouterr().out
    assert "% vs reference" in line and float(line.split("NMAE ")[1].split(" %")[0]) < 5.0


def test_evaluate_and_train_read_a_bank(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RHOSR_CACHE", str(tmp_path / "cache"))
    bank = tmp_path / "qm9"
    assert main(["bank", "add", str(bank), str(LABELS), "--theory", "default"]) == 0
    assert main(["bank", "expand", str(bank), "--workers", "2"]) == 0
    assert "4 densities evaluated" in capsys.readouterr().out
    assert main(["bank", "expand", str(bank), "--workers", "1"]) == 0
    assert "0 densities evaluated, 4 already cached" in capsys.readouterr().out
    js = tmp_path / "e.json"
    assert main(["evaluate", "--model", "default", str(bank), "--split", "test",
                 "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert [m["id"] for m in res["molecules"]] == ["qm9_128709", "qm9_130650"]
    assert 0.3 < res["summary"]["mean_nmae_percent"] < 3.0  # bundled model ~1.6 %, SAD ~13 %
    assert res["summary"]["mean_sad_nmae_percent"] > 8.0
    run = tmp_path / "run"
    assert main(["train", str(bank), "--out", str(run), "--preset", "tiny", "--steps", "2",
                 "--no-progress", "--val-every", "2"]) == 0
    assert (run / "best.pt").is_file() or (run / "last.pt").is_file()


def test_corrupted_shard_is_named_and_others_stay_usable(tmp_path, labels, capsys):
    bank = tmp_path / "b"
    add_records(bank, labels[:2], level_of_theory=THEORY)
    add_records(bank, labels[2:], level_of_theory=THEORY)
    shard = bank / "add-000002-00.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    b = Bank(bank)
    assert b.read(labels[0].id, density=False).id == labels[0].id  # the first shard still reads
    with pytest.raises(BankError, match="add-000002-00.npz.*checksum"):
        b.read(labels[3].id, density=False)
    assert main(["bank", "check", str(bank)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if line.startswith("problem:")]) == 1
    assert "add-000002-00.npz" in out[0]
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one flipped bit, same length
    assert Bank(bank).check() and "checksum" in Bank(bank).check()[0]


def test_duplicates_and_other_theories_are_refused(tmp_path, labels, capsys):
    bank = tmp_path / "b"
    add_records(bank, labels[:2], level_of_theory=THEORY)
    before = _bank_files(bank)
    assert main(["bank", "add", str(bank), str(LABELS), "--theory", "default"]) == 2
    err = capsys.readouterr().err
    assert "already in the bank" in err and len(err.strip().splitlines()) == 1
    assert _bank_files(bank) == before
    other = dict(THEORY, xc="LDA")
    with pytest.raises(BankError, match="level of theory differs.*xc"):
        add_records(bank, [source_records(LABELS, other)[3]])
    with pytest.raises(BankError, match="given twice"):
        add_records(bank, [labels[2], labels[2]])
    assert _bank_files(bank) == before
    assert main(["bank", "add", str(bank), str(LABELS), "--theory", "default", "--new-only"]) == 0
    assert "added 2 records" in capsys.readouterr().out and len(Bank(bank)) == 4


KILLED_ADD = """
import os, signal, sys
import rhosr.labels.bankwrite as bank
from rhosr.dft.scf import level_of_theory
from rhosr.labels.readers import source_records
def die(path, manifest):
    os.kill(os.getpid(), signal.SIGKILL)  # shards are written, the manifest is not
bank._write_manifest = die
theory = level_of_theory()
bank.add_records(sys.argv[1], source_records(sys.argv[2], theory)[2:], level_of_theory=theory)
"""


def test_killed_add_leaves_the_bank_as_it_was(tmp_path, labels):
    bank = tmp_path / "b"
    add_records(bank, labels[:2], level_of_theory=THEORY)
    before = Bank(bank).ids()
    proc = subprocess.run([sys.executable, "-c", KILLED_ADD, str(bank), str(LABELS)])
    assert proc.returncode == -9
    assert (bank / "add-000002-00.npz").is_file()  # an orphan shard, listed by no manifest
    assert Bank(bank).ids() == before and Bank(bank).check() == []
    add_records(bank, labels[2:], level_of_theory=THEORY)  # the next add cleans up and succeeds
    assert len(Bank(bank)) == 4 and Bank(bank).check() == []
    assert json.loads((bank / "add-000002.json").read_text())["added"] == 2


def test_records_without_orbitals_are_refused(tmp_path, labels):
    rec = labels[0]
    rec2 = type(rec)(**{**rec.__dict__, "mo_coeff": None, "rho_dft": np.zeros(rec.fine_mesh)})
    with pytest.raises(BankError, match="not an orbital record"):
        add_records(tmp_path / "b", [rec2], level_of_theory=THEORY)


def test_generate_never_relabels_what_the_bank_holds(tmp_path, labels, capsys):
    bank = tmp_path / "b"
    add_records(bank, labels, level_of_theory=THEORY)
    store = tmp_path / "s"
    assert main(["generate", "qm9:485", "qm9:775", "--out", str(store), "--skip-in", str(bank),
                 "--no-progress"]) == 0
    assert "done 0, failed 0, skipped 2" in capsys.readouterr().out
    assert not list((store / "records").glob("*.h5"))
    # a folder where a bank is yet to start (a datasheet only) skips nothing: here all are
    # in the store already; a path that does not exist is an error
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "DATASHEET.md").write_text("to come\n")
    assert main(["generate", "qm9:485", "--out", str(store), "--skip-in", str(bank),
                 str(tmp_path / "new"), "--no-progress", "--limit", "0"]) == 0
    capsys.readouterr()
    assert main(["generate", "qm9:485", "--out", str(store), "--skip-in", str(tmp_path / "nope"),
                 "--no-progress"]) == 2
    assert "--skip-in" in capsys.readouterr().err


def test_training_reads_two_banks(tmp_path, labels, capsys):
    """rhosr train BANK BANK: the banks' molecules train as one pool or by --mix; an id in
    both banks is refused."""
    from rhosr.nn.modelfile import read_model_file

    by_id = {r.id: r for r in labels}
    add_records(tmp_path / "a", [by_id["qm9_000485"], by_id["qm9_128709"]], level_of_theory=THEORY)
    add_records(tmp_path / "b", [by_id["qm9_000775"], by_id["qm9_130650"]], level_of_theory=THEORY)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(run),
                 "--preset", "tiny", "--steps", "2", "--mix", "1", "1", "--crop", "6",
                 "--no-progress"]) == 0
    data = read_model_file(run / "best.pt")["extra"]["training_data"]
    assert data["molecules"] == 2 and data["mix"] == [1.0, 1.0]  # the test-split ids never train
    assert [p.rsplit("/", 1)[-1] for p in data["store"]] == ["a", "b"]
    add_records(tmp_path / "c", [by_id["qm9_000485"]], level_of_theory=THEORY)
    assert main(["train", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "r2"),
                 "--preset", "tiny", "--steps", "1", "--no-progress"]) == 2
    assert "qm9_000485 is in both" in capsys.readouterr().err
