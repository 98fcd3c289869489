"""Units of electricity OBIS codes (IEC 62056-61 value groups C and D), for
batches, which carry values without units.

Owns only this table-as-rules; must not know any protocol or the store.
"""

from __future__ import annotations

_ACTIVE = {1, 2, 15, 16, 21, 22, 41, 42, 61, 62}
_REACTIVE = {3, 4, 5, 6, 7, 8, 23, 24, 43, 44, 63, 64}
_APPARENT = {9, 10, 29, 30, 49, 50, 69, 70}
_CURRENT = {11, 31, 51, 71, 91}
_VOLTAGE = {12, 32, 52, 72}
_ENERGY_D = {8, 9, 10, 17, 18, 19, 20, 29}  # time integrals


def unit_for(obis: str) -> str:
    """``"1.0.1.8.0.255"`` → ``"Wh"``; ``""`` when unknown or dimensionless."""
    try:
        a, _b, c, d = (int(x) for x in obis.split(".")[:4])
    except ValueError:
        return ""
    if a != 1:
        return ""
    energy = d in _ENERGY_D
    if c in _ACTIVE:
        return "Wh" if energy else "W"
    if c in _REACTIVE:
        return "varh" if energy else "var"
    if c in _APPARENT:
        return "VAh" if energy else "VA"
    if c in _CURRENT:
        return "A"
    if c in _VOLTAGE:
        return "V"
    if c == 14:
        return "Hz"
    return ""
