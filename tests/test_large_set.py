"""data/large (scripts/large_set.py) and the 2 000-atom protein example (examples/adk_fragment.pdb)."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from rhosr.core.grid import box_for
from rhosr.core.sources import load_molecules, residue_charge_of
from rhosr.core.splits import split_of_id

ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "data" / "large"


@pytest.fixture(scope="module")
def committed():
    rows = list(csv.DictReader(open(LARGE / "molecules.csv")))
    mols = {m.id: m for m in load_molecules(str(LARGE / "structures.xyz"))}
    return rows, mols


def test_committed_set_matches_its_list(committed):
    rows, mols = committed
    listed = list(csv.DictReader(open(LARGE / "smiles.csv")))
    assert len(rows) == len(listed) == len(mols)
    assert {r["smiles"] for r in rows} == {r["smiles"] for r in listed}
    for r in rows:
        mol = mols[r["id"]]
        assert split_of_id(r["id"]) == r["role"]
        assert 30 <= mol.natm == int(r["atoms"]) <= 120
        assert set(mol.symbols) <= {"H", "C", "N", "O", "F", "S", "P"}
        assert mol.charge == int(r["charge"]) and mol.spin == 0


def test_held_out_molecules_span_the_sizes_and_come_first(committed):
    rows, _ = committed
    roles = [r["role"] for r in rows]
    assert roles == sorted(roles, key=("test", "val", "train").index)  # labelling order
    test = [int(r["atoms"]) for r in rows if r["role"] == "test"]
    assert len(test) >= 12 and test == sorted(test)
    assert min(test) < 40 and max(test) > 100
    assert len({r["group"] for r in rows if r["role"] == "test"}) >= 5
    # no held-out molecule is also a training or validation one
    test_smiles = {r["smiles"] for r in rows if r["role"] == "test"}
    assert not test_smiles & {r["smiles"] for r in rows if r["role"] != "test"}


def test_recipe_rebuilds_a_molecule_and_refuses_bad_rows(tmp_path):
    recipe = load_script("large_set")
    listed = tmp_path / "list.csv"
    listed.write_text("name,group,role,smiles\nibuprofen,drug,test,CC(C)Cc1ccc(cc1)C(C)C(=O)O\n"
                      "naproxen,drug,train,COc1ccc2cc(ccc2c1)C(C)C(=O)O\n")
    assert recipe.main(["--out", str(tmp_path / "out"), "--list", str(listed)]) == 0
    mols = load_molecules(str(tmp_path / "out" / "structures.xyz"))
    ref = {m.id: m for m in load_molecules(str(LARGE / "structures.xyz"))}
    assert [m.id for m in mols] == ["drug-test-000", "drug-train-001"]
    np.testing.assert_allclose(mols[0].positions, ref["drug-test-000"].positions, atol=1e-6)
    listed.write_text("name,group,role,smiles\nethanol,drug,test,CCO\n")
    with pytest.raises(SystemExit, match="outside 30-120"):
        recipe.main(["--out", str(tmp_path / "bad"), "--list", str(listed)])
    listed.write_text("name,group,role,smiles\na,drug,test,CCO\nb,drug,test,OCC\n")
    with pytest.raises(SystemExit, match="listed twice"):
        recipe.main(["--out", str(tmp_path / "bad"), "--list", str(listed)])


def test_residue_charge():
    names = ["MET", "MET", "MET", "LYS", "ASP", "GLU", "HSP", "ARG", "ALA", "ALA"]
    atoms = ["N", "HT1", "HT3", "NZ", "CG", "CD", "NE2", "CZ", "C", "OXT"]
    nums = [1, 1, 1, 2, 3, 4, 5, 6, 7, 7]
    # NH3+ +1, LYS +1, ASP -1, GLU -1, HSP +1, ARG +1, COO- -1
    assert residue_charge_of(names, atoms, nums) == 1


def test_protein_example_reads_with_its_charge():
    mol = load_molecules(str(ROOT / "examples" / "adk_fragment.pdb"), max_voxels=None)[0]
    assert mol.natm == 1997 and mol.charge == -2 and mol.spin == 0
    assert set(mol.symbols) == {"H", "C", "N", "O", "S"}
    assert np.prod(box_for(mol.positions)[1].mesh) > 1e8  # the box tiling is for
    import ase.io

    atoms = ase.io.read(ROOT / "examples" / "adk_fragment.pdb")
    assert atoms.get_chemical_symbols() == list(mol.symbols)
