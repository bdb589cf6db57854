"""Which elements rhosr supports, and their valence charges.

An element is supported when PySCF has, for it, the GTH-PBE pseudopotential
and both basis sets of the published recipe: ``gth-szv`` (SAD) and
``gth-tzv2p`` (labels).  The valence charge is that of the GTH-PBE
pseudopotential.
"""

from __future__ import annotations

from functools import lru_cache

from pyscf.data.elements import ELEMENTS, _std_symbol

PSEUDOPOTENTIAL = "gth-pbe"
SAD_BASIS = "gth-szv"
LABEL_BASIS = "gth-tzv2p"


def standard_symbol(symbol: str) -> str:
    """'c' -> 'C', 'CL' -> 'Cl'; raises ValueError for an unknown symbol."""
    text = str(symbol).strip()
    std = _std_symbol(text) if text else ""
    if std not in ELEMENTS[1:] or std.upper() != text.upper():
        raise ValueError(f"unknown element symbol {symbol!r}")
    return std


@lru_cache(maxsize=None)
def _pp_charge(symbol: str) -> int | None:
    from pyscf.pbc.gto import pseudo

    try:
        pp = pseudo.load(PSEUDOPOTENTIAL, symbol)
    except Exception:  # PySCF raises BasisNotFoundError (or KeyError) when absent
        return None
    return int(sum(pp[0]))


@lru_cache(maxsize=None)
def _has_basis(basis: str, symbol: str) -> bool:
    import warnings

    from pyscf.gto.basis import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySCF suggests basis-set-exchange
        try:
            return len(load(basis, symbol)) > 0
        except Exception:  # BasisNotFoundError, KeyError, ...
            return False


def is_supported(symbol: str) -> bool:
    """True when the element has a GTH-PBE pseudopotential and both bases."""
    return (
        _pp_charge(symbol) is not None
        and _has_basis(SAD_BASIS, symbol)
        and _has_basis(LABEL_BASIS, symbol)
    )


def unsupported_reason(symbol: str) -> str | None:
    """None when supported, else a short reason."""
    if _pp_charge(symbol) is None:
        return f"element {symbol} has no {PSEUDOPOTENTIAL.upper()} pseudopotential in PySCF"
    for basis in (SAD_BASIS, LABEL_BASIS):
        if not _has_basis(basis, symbol):
            return f"element {symbol} has no {basis} basis in PySCF"
    return None


def valence_charge(symbol: str) -> int:
    """Valence electrons of a neutral atom under the GTH-PBE pseudopotential."""
    q = _pp_charge(symbol)
    if q is None:
        raise ValueError(unsupported_reason(symbol))
    return q


def supported_elements() -> list[str]:
    """All supported element symbols, in order of atomic number."""
    return [s for s in ELEMENTS[1:] if is_supported(s)]
