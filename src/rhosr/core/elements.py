"""Which elements rhosr supports, and their valence charges.

An element is supported when PySCF has, for it, the GTH-PBE pseudopotential
and both basis sets of the published recipe: ``gth-szv`` (SAD) and
``gth-tzv2p`` (labels).  The valence charge is that of the GTH-PBE
pseudopotential.

The answer ships as a small table, ``rhosr/data/elements.json``, so that
reading a structure and predicting its density never import PySCF (half a
second or more of every ``rhosr predict`` process).  ``python
scripts/build_element_table.py`` rebuilds the table from PySCF; the tests check that it
matches.  Only the reason an element is *not* supported is asked of PySCF,
when someone asks.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ase.data import chemical_symbols

PSEUDOPOTENTIAL = "gth-pbe"
SAD_BASIS = "gth-szv"
LABEL_BASIS = "gth-tzv2p"

#: element symbols indexed by atomic number; index 0 is ASE's placeholder "X"
ELEMENTS = tuple(chemical_symbols)
_BY_UPPER = {s.upper(): s for s in ELEMENTS[1:]}
TABLE_FILE = "elements.json"


def _lookup(symbol: str) -> str | None:
    """The standard spelling of an element symbol in any letter case, or None."""
    return _BY_UPPER.get(str(symbol).strip().upper())


def standard_symbol(symbol: str) -> str:
    """'c' -> 'C', 'CL' -> 'Cl'; raises ValueError for an unknown symbol."""
    std = _lookup(symbol)
    if std is None:
        raise ValueError(f"unknown element symbol {symbol!r}")
    return std


def atomic_number(symbol: str) -> int:
    return ELEMENTS.index(standard_symbol(symbol))


@lru_cache(maxsize=1)
def _table() -> dict[str, int]:
    """{symbol: valence charge} of the supported elements (the shipped table)."""
    path = resources.files("rhosr") / "data" / TABLE_FILE
    data = json.loads(path.read_text())
    if (data["pseudopotential"], data["sad_basis"], data["label_basis"]) != (
            PSEUDOPOTENTIAL, SAD_BASIS, LABEL_BASIS):
        raise RuntimeError(f"{TABLE_FILE} was built for another recipe; run scripts/build_element_table.py")
    return {str(k): int(v) for k, v in data["valence"].items()}


# ---- asking PySCF (building the table, explaining a refusal)


@lru_cache(maxsize=None)
def _pyscf_pp_charge(symbol: str) -> int | None:
    from pyscf.pbc.gto import pseudo

    try:
        pp = pseudo.load(PSEUDOPOTENTIAL, symbol)
    except Exception:  # PySCF raises BasisNotFoundError (or KeyError) when absent
        return None
    return int(sum(pp[0]))


def _pyscf_has_basis(basis: str, symbol: str) -> bool:
    import warnings

    from pyscf.gto.basis import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySCF suggests basis-set-exchange
        try:
            return len(load(basis, symbol)) > 0
        except Exception:  # BasisNotFoundError, KeyError, ...
            return False


def _pyscf_reason(symbol: str) -> str | None:
    if _pyscf_pp_charge(symbol) is None:
        return f"element {symbol} has no {PSEUDOPOTENTIAL.upper()} pseudopotential in PySCF"
    for basis in (SAD_BASIS, LABEL_BASIS):
        if not _pyscf_has_basis(basis, symbol):
            return f"element {symbol} has no {basis} basis in PySCF"
    return None


def build_table() -> dict:
    """The element table, computed from the PySCF installed (what ships as elements.json)."""
    valence = {}
    for sym in ELEMENTS[1:]:
        if _pyscf_reason(sym) is None:
            valence[sym] = _pyscf_pp_charge(sym)
    return {"pseudopotential": PSEUDOPOTENTIAL, "sad_basis": SAD_BASIS,
            "label_basis": LABEL_BASIS, "valence": valence}


# ---- the public questions


def _canonical(symbol: str) -> str:
    return _lookup(symbol) or str(symbol)


def is_supported(symbol: str) -> bool:
    """True when the element has a GTH-PBE pseudopotential and both bases."""
    return _canonical(symbol) in _table()


def unsupported_reason(symbol: str) -> str | None:
    """None when supported, else a short reason."""
    symbol = _canonical(symbol)
    if symbol in _table():
        return None
    return _pyscf_reason(symbol) or f"element {symbol} is not in rhosr's element table"


def valence_charge(symbol: str) -> int:
    """Valence electrons of a neutral atom under the GTH-PBE pseudopotential."""
    symbol = _canonical(symbol)
    q = _table().get(symbol)
    if q is None:
        raise ValueError(unsupported_reason(symbol))
    return q


def supported_elements() -> list[str]:
    """All supported element symbols, in order of atomic number."""
    return sorted(_table(), key=ELEMENTS.index)
