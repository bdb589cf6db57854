"""scripts/exotic_set.py: the beyond-QM9 molecule set (S, Cl, P, Si, B, anions, cations)."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

from rhosr.core.qm9 import qm9_columns
from rhosr.core.sources import from_smiles, load_molecules
from rhosr.core.splits import split_of_id

EXOTIC = Path(__file__).resolve().parents[1] / "data" / "exotic"
ELEMENT = {"S": "S", "Cl": "Cl", "P": "P", "Si": "Si", "B": "B"}
CHARGE = {"anion": -1, "cation": 1}
QM9_ELEMENTS = {"H", "C", "N", "O", "F"}


@pytest.fixture(scope="module")
def recipe():
    return load_script("exotic_set")


def _check_group(mol, group):
    heavy = [s for s in mol.symbols if s != "H"]
    assert 1 <= len(heavy) <= 9
    if group in ELEMENT:
        assert mol.charge == 0
        assert set(mol.symbols) - QM9_ELEMENTS == {ELEMENT[group]}
        assert mol.symbols.count(ELEMENT[group]) == 1
    else:
        assert mol.charge == CHARGE[group] and set(mol.symbols) <= QM9_ELEMENTS
    assert mol.spin == 0


def test_small_set_is_reproducible_and_valid(recipe, tmp_path):
    rows = recipe.build(per_group=2, n_test=1, n_val=0)
    again = recipe.build(per_group=2, n_test=1, n_val=0)
    assert [r["smiles"] for r in rows] == [r["smiles"] for r in again]
    for a, b in zip(rows, again):
        np.testing.assert_array_equal(a["molecule"].positions, b["molecule"].positions)
    assert [r["id"] for r in rows[:3]] == ["S-test-000", "Cl-test-000", "P-test-000"]
    assert [r["role"] for r in rows] == ["test"] * 7 + ["train"] * 7
    assert len({r["parent"] for r in rows}) == len(rows)  # one group per parent
    recipe.write(rows, tmp_path)
    mols = load_molecules(str(tmp_path / "structures.xyz"))
    assert [m.id for m in mols] == [r["id"] for r in rows]
    for mol, row in zip(mols, rows):
        _check_group(mol, row["group"])
        assert split_of_id(mol.id) == row["role"]
        np.testing.assert_allclose(mol.positions, row["molecule"].positions, atol=1e-7)


def test_substitutions(recipe):
    assert recipe.substitute("CCO", "S") == "CCS"
    assert recipe.substitute("CCO", "Cl") == "CCCl"
    assert recipe.substitute("CCN", "P") == "CCP"
    assert recipe.substitute("CCN", "B") == "BCC"
    assert recipe.substitute("CC(=O)O", "anion") == "CC(=O)[O-]"
    assert recipe.substitute("CCN", "cation") == "CC[NH3+]"
    assert recipe.substitute("c1ccncc1", "cation") == "c1cc[nH+]cc1"
    assert recipe.substitute("C#N", "cation") is None  # no protonated nitriles
    assert recipe.substitute("CC", "Cl") is None
    g2 = recipe.g2_formulas()  # ASE's and RDKit's Hill formulas agree: g2 stays out
    assert {recipe._formula(s) for s in ("[SiH4]", "CS", "CCl", "P", "CC(=O)O")} <= g2


def test_committed_set(recipe):
    """data/exotic: per group 12 test, 5 val, 50 train; the first rows of each group are
    the recipe's substitution of their QM9 parent, and the geometry RDKit's."""
    with open(EXOTIC / "molecules.csv") as fh:
        rows = list(csv.DictReader(fh))
    mols = {m.id: m for m in load_molecules(str(EXOTIC / "structures.xyz"))}
    assert [r["id"] for r in rows] == list(mols)
    for group in recipe.GROUPS:
        mine = [r for r in rows if r["group"] == group]
        roles = [r["role"] for r in mine]
        assert roles == ["test"] * 12 + ["val"] * 5 + ["train"] * 50
        for r in mine:
            _check_group(mols[r["id"]], group)
    parents = {int(r["parent"][4:]): r for r in rows if r["id"].endswith(("-000", "-017"))}
    assert all(i <= 110_000 for i in parents)
    for index, smiles in qm9_columns("Index", "SMILES", parts=None):
        r = parents.get(int(index))
        if r is not None:
            assert recipe.substitute(smiles, r["group"], seed=int(index)) == r["smiles"]
            rebuilt = from_smiles(r["smiles"])
            assert rebuilt.symbols == mols[r["id"]].symbols
            np.testing.assert_allclose(rebuilt.positions, mols[r["id"]].positions, atol=2e-3)


def test_committed_labels(recipe):
    """data/exotic is a bank whose shards verify, at rhosr generate's level of theory, with
    every labelled id a molecule of the set and >= 10 held-out molecules in every group."""
    from rhosr.core.splits import group_of_id
    from rhosr.dft.scf import level_of_theory
    from rhosr.labels.bank import Bank, theory_signature

    bank = Bank(EXOTIC)
    assert bank.check() == []
    assert theory_signature(bank.meta["level_of_theory"]) == theory_signature(level_of_theory())
    ids = set(bank.ids())
    assert ids <= {m.id for m in load_molecules(str(EXOTIC / "structures.xyz"))}
    for group in recipe.GROUPS:
        mine = [i for i in ids if group_of_id(i) == group]
        assert sum(split_of_id(i) == "test" for i in mine) >= 10
        assert sum(split_of_id(i) == "train" for i in mine) >= 49
