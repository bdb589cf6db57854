"""data/pocket: the GTP–Mg microtubule pocket labelled by rhosr generate, against the
published energy of the same frame (tests/data/reference, copied from the published data)."""

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from rhosr.core.grid import box_for
from rhosr.core.sources import load_molecules
from rhosr.core.units import BOHR
from rhosr.core.splits import split_of_id
from rhosr.labels.bank import open_labels

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "reference"


def test_pocket_label_matches_the_published_energy():
    case = json.loads((REF / "cases.json").read_text())["gtp_microtubule_1996"]
    bank = open_labels(str(ROOT / "data" / "pocket"))
    assert bank.ids() == ["pocket-test-000"] and split_of_id("pocket-test-000") == "test"
    rec = bank.read("pocket-test-000", density=False)
    assert rec.charge == case["charge"] == -4
    assert rec.fine_mesh == tuple(case["fine_mesh"])
    assert rec.level_of_theory["smearing"]["sigma_hartree"] == case["fermi_smearing_hartree"]
    assert rec.energy == pytest.approx(case["energy_hartree"], abs=1e-4)
    assert float(np.sum(rec.mo_occ)) == pytest.approx(case["valence_electrons"], abs=1e-6)


def test_pocket_structure_is_the_published_frame():
    mol = load_molecules(str(ROOT / "data" / "pocket" / "pocket.xyz"))[0]
    assert mol.id == "pocket-test-000" and mol.charge == -4
    ref = read(REF / "gtp_microtubule_1996.xyz")
    np.testing.assert_allclose(mol.positions * BOHR, ref.positions, rtol=0, atol=1e-7)  # bohr, Å
    assert box_for(mol.positions)[1].mesh == (248, 226, 220)
