import numpy as np
import pytest
from conftest import REFERENCE

from rhosr.core.molecule import default_spin
from rhosr.core.qm9 import QM9_SPLIT, qm9_split
from rhosr.core.sources import load_molecule, load_molecules
from rhosr.core.splits import split_of_id
from rhosr.core.units import ANGSTROM_TO_BOHR
from rhosr.errors import InputError


def test_xyz_file_gives_id_and_bohr_positions():
    mol = load_molecule(str(REFERENCE / "qm9_000001.xyz"))
    assert mol.id == "qm9_000001"
    assert mol.symbols == ("C", "H", "H", "H", "H")
    assert mol.positions[0, 0] == pytest.approx(2.8261216851847943 * ANGSTROM_TO_BOHR)
    assert mol.nelectron == 8 and mol.charge == 0 and mol.spin == 0


def test_multiframe_file_gives_one_molecule_per_frame(tmp_path):
    from ase.io import read, write

    frames = [read(REFERENCE / "c7o2h10_frame0.xyz"), read(REFERENCE / "c7o2h10_frame1.xyz")]
    path = tmp_path / "traj.extxyz"
    write(path, frames)
    mols = load_molecules(str(path))
    assert [m.id for m in mols] == ["traj_f0", "traj_f1"]
    assert not np.allclose(mols[0].positions, mols[1].positions)


@pytest.mark.parametrize("fmt", ["pdb", "sdf", "cif"])
def test_other_ase_formats(tmp_path, fmt):
    from ase.build import molecule
    from ase.io import write

    atoms = molecule("H2O")
    atoms.cell = [10, 10, 10]
    path = tmp_path / f"water.{fmt}"
    write(path, atoms)
    mol = load_molecule(str(path))
    assert sorted(mol.symbols) == ["H", "H", "O"]
    d = np.linalg.norm(mol.positions[0] - mol.positions[1]) / ANGSTROM_TO_BOHR
    assert d == pytest.approx(np.linalg.norm(atoms.positions[0] - atoms.positions[1]), abs=1e-3)


def test_qm9_matches_reference_geometry():
    mol = load_molecule("qm9:2")
    ref = load_molecule(str(REFERENCE / "qm9_000002.xyz"))
    assert mol.id == "qm9_000002" and mol.symbols == ref.symbols
    # same geometry up to a translation
    np.testing.assert_allclose(mol.positions - mol.positions.mean(0), ref.positions - ref.positions.mean(0),
                               atol=1e-6)


def test_qm9_range_skips_missing_indices_and_counts_them():
    missing = []
    mols = load_molecules("qm9:56-62", on_missing=missing.append)
    assert missing == [58, 61]
    assert [m.id for m in mols] == ["qm9_000056", "qm9_000057", "qm9_000059", "qm9_000060", "qm9_000062"]


def test_smiles_is_deterministic_with_hydrogens():
    a = load_molecule("smiles:CCO")
    b = load_molecule("smiles:CCO")
    assert a.id == b.id and a.id.startswith("smiles_")
    assert a.symbols.count("H") == 6
    np.testing.assert_allclose(a.positions, b.positions)
    # MMFF geometry: a C-O bond near 1.42 Å
    c_o = np.linalg.norm(a.positions[1] - a.positions[2]) / ANGSTROM_TO_BOHR
    assert 1.35 < c_o < 1.48


def test_charge_and_spin_defaults_and_options():
    assert load_molecule("smiles:[CH3]").spin == 1  # radical
    oh = load_molecule("smiles:[OH-]")
    assert oh.charge == -1 and oh.spin == 0 and oh.nelectron == 8
    assert default_spin(("C", "H", "H", "H")) == 1
    cation = load_molecule("qm9:1", charge=1)
    assert cation.spin == 1 and cation.nelectron == 7
    triplet = load_molecule("qm9:1", spin=2)
    assert triplet.spin == 2


@pytest.mark.parametrize("rows, message", [
    ([("Xx", 0, 0, 0), ("H", 0, 0, 1)], "unknown element"),
    ([("Fe", 0, 0, 0)], "no gth"),
    ([("C", "nan", 0, 0), ("H", 0, 0, 1)], "NaN or infinite"),
    ([("C", "inf", 0, 0), ("H", 0, 0, 1)], "NaN or infinite"),
    ([("C", 0, 0, 0), ("H", 0, 0, 0.3)], "apart"),
])
def test_bad_structures(write_xyz, rows, message):
    path = write_xyz("bad.xyz", rows)
    with pytest.raises(InputError, match=message):
        load_molecules(str(path))


def test_bad_specs(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    cases = [
        (str(empty), "empty"),
        (str(tmp_path / "absent.xyz"), "no such file"),
        ("smiles:C1CC", "invalid SMILES"),
        ("qm9:58", "not in qm9pack"),
        ("qm9:abc", "expected qm9"),
        ("qm9:200000", "outside"),
    ]
    for spec, message in cases:
        with pytest.raises(InputError, match=message):
            load_molecules(spec)
    with pytest.raises(InputError, match="inconsistent"):
        load_molecules("qm9:1", spin=1)
    with pytest.raises(InputError, match="max-voxels"):
        load_molecules("qm9:1", max_voxels=1000)


def test_standard_split():
    assert QM9_SPLIT["train"] == (1, 110_000)
    assert qm9_split(110_000) == "train" and qm9_split(110_001) == "val"
    assert qm9_split(120_000) == "val" and qm9_split(120_001) == "test"
    assert qm9_split(133_885) == "test"
    assert split_of_id("qm9_000001") == "train" and split_of_id("smiles_ab") is None


def test_qm9_random_sample_of_a_split_is_stable_and_extends():
    from rhosr.core.qm9 import qm9_sample

    first = qm9_sample("test", 5)
    assert first == qm9_sample("test", 8)[:5]
    assert all(qm9_split(i) == "test" for i in first)
    assert first != qm9_sample("test", 5, seed=1)
    mols = load_molecules("qm9:val/3")
    assert [split_of_id(m.id) for m in mols] == ["val"] * 3
    with pytest.raises(InputError, match="split must be"):
        load_molecules("qm9:dev/3")


def test_shipped_element_table_matches_pyscf():
    # rhosr.core.elements answers from data/elements.json so that prediction never imports PySCF;
    # the table must say what the installed PySCF says (scripts/build_element_table.py rebuilds it)
    import json
    from importlib import resources

    from pyscf.data.nist import BOHR as PYSCF_BOHR

    from rhosr.core import elements
    from rhosr.core.units import BOHR

    shipped = json.loads((resources.files("rhosr") / "data" / elements.TABLE_FILE).read_text())
    assert shipped == elements.build_table()
    assert elements.supported_elements()[:8] == ["H", "He", "Li", "Be", "B", "C", "N", "O"]
    assert [elements.valence_charge(s) for s in ("H", "C", "N", "O", "Cl", "cl")] == [1, 4, 5, 6, 7, 7]
    assert elements.is_supported("si") and not elements.is_supported("Fe")
    assert elements.standard_symbol(" cl ") == "Cl" and elements.atomic_number("CL") == 17
    with pytest.raises(ValueError, match="unknown element"):
        elements.standard_symbol("Qx")
    assert "gth-szv" in elements.unsupported_reason("Fe")
    assert BOHR == PYSCF_BOHR


def test_reading_and_predicting_do_not_import_pyscf():
    import subprocess
    import sys

    code = ("import sys, rhosr, rhosr.cli.predict, rhosr.inference.predict, rhosr.core.density;"
            "from rhosr.core.sources import load_molecule; load_molecule('smiles:CO');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyscf'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_ids_from_extxyz_and_ids_that_name_their_split(tmp_path):
    from rhosr.core.sources import load_molecules
    from rhosr.core.splits import split_of_id
    from rhosr.errors import InputError

    frame = '2\nProperties=species:S:1:pos:R:3 id={} charge={} pbc="F F F"\nO 0 0 0\nH 0 0 0.97\n'
    path = tmp_path / "two.xyz"
    path.write_text(frame.format("anion-test-003", -1) + frame.format("anion-train-004", -1))
    mols = load_molecules(str(path))
    assert [m.id for m in mols] == ["anion-test-003", "anion-train-004"]
    assert [m.charge for m in mols] == [-1, -1]
    assert [split_of_id(m.id) for m in mols] == ["test", "train"]
    assert split_of_id("qm9_120001") == "test" and split_of_id("S-val-12") == "val"
    assert split_of_id("water") is None and split_of_id("S-tests-1") is None
    path.write_text(frame.format("x", 0) + frame.format("x", 0))
    with pytest.raises(InputError, match="id x appears twice"):
        load_molecules(str(path))


def test_group_of_id_and_group_summary():
    from rhosr.core.splits import group_of_id
    from rhosr.inference.evaluate import group_summary

    assert [group_of_id(i) for i in ("qm9_000001", "S-test-003", "anion-train-12", "water")] == [
        "qm9", "S", "anion", None]
    rows = [{"id": "S-test-000", "nmae_percent": 2.0, "sad_nmae_percent": 10.0},
            {"id": "qm9_120001", "nmae_percent": 1.0, "sad_nmae_percent": 12.0},
            {"id": "S-test-001", "nmae_percent": 4.0, "sad_nmae_percent": 14.0},
            {"id": "water", "nmae_percent": 3.0, "sad_nmae_percent": 9.0}]
    assert group_summary(rows) == {
        "S": {"n": 2, "mean_nmae_percent": 3.0, "mean_sad_nmae_percent": 12.0},
        "qm9": {"n": 1, "mean_nmae_percent": 1.0, "mean_sad_nmae_percent": 12.0},
        "other": {"n": 1, "mean_nmae_percent": 3.0, "mean_sad_nmae_percent": 9.0}}


def test_qm9_geometries_with_bare_decimal_points():
    """qm9pack writes some coordinates as '0.' or '1.' (not JSON): acetylene, qm9:4."""
    mol = load_molecule("qm9:4")
    assert mol.symbols == ("C", "C", "H", "H") and np.isfinite(mol.positions).all()
    assert abs(np.linalg.norm(mol.positions[0] - mol.positions[1]) - 1.2 * 1.8897) < 0.1
