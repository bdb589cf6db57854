"""Physical constants, from one place (PySCF's values).

rhosr works in atomic units inside: bohr, Hartree, e/bohr³.  Å appears only
where files and users meet.
"""

from pyscf.data.nist import BOHR  # Å per bohr, 0.52917721092

ANGSTROM_TO_BOHR = 1.0 / BOHR
#: Debye per e·bohr
AU_TO_DEBYE = 2.541746473

__all__ = ["BOHR", "ANGSTROM_TO_BOHR", "AU_TO_DEBYE"]
