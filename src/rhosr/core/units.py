"""Physical constants, from one place (PySCF's values, written out so that
importing rhosr does not import PySCF; ``tests/test_molecule.py`` checks them).

rhosr works in atomic units inside: bohr, Hartree, e/bohr³.  Å appears only
where files and users meet.
"""

#: Å per bohr (pyscf.data.nist.BOHR)
BOHR = 0.52917721092

ANGSTROM_TO_BOHR = 1.0 / BOHR
#: Debye per e·bohr
AU_TO_DEBYE = 2.541746473

__all__ = ["BOHR", "ANGSTROM_TO_BOHR", "AU_TO_DEBYE"]
