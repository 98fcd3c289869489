"""What a constrained uplink sends first: the priority tier of a reading.

Owns the one table that classes a register by its OBIS value groups
(IEC 62056-61 §4.5–4.6): tier 1 (``ENERGY``) are the cumulative energy
registers billing rests on, and the meter's status and alarm registers;
everything else — instantaneous values, demand, power quality, registers
that are not OBIS codes — is tier 2 (``INSTANT``). Meter events are tier 0
(``EVENTS``). The uplink sends a backlog tier by tier (events, then energy
of every hour, then instantaneous values), and a batch goes up the mesh
with the priority of its most urgent content (docs/mesh.md §4: 0 events,
1 energy registers, 2 instantaneous values).

Must not know the archive, batches or transports. Plain code (portable).
"""

EVENTS = 0
ENERGY = 1
INSTANT = 2
NAMES = {EVENTS: "events", ENERGY: "energy", INSTANT: "instantaneous"}

# (value group A, value group C or None = any, value groups D or None = any) -> tier.
# First match wins; no match is INSTANT.
TABLE = (
    # Electricity (A = 1), the time integrals of any quantity: D = 8, 9, 10
    # (time integral 1–3: cumulative energy since reset, per billing period,
    # per ...), 29, 30 (time integral 5, 6: energy per recording interval, the
    # load profile's), 58 (time integral 4). Covers 1.8 import, 2.8 export,
    # 3.8/4.8 reactive, 5.8–8.8 quadrants, 9.8/10.8 apparent, 15.8/16.8
    # absolute/net, 21.8 … per phase, each tariff rate (value group E).
    (1, None, (8, 9, 10, 29, 30, 58), ENERGY),
    # Abstract objects (A = 0): 96.x.x the meter's status (relay state
    # 0.0.96.3.10, power failures, …) and 97.97.x the error/alarm registers:
    # small, rarely changing, and what an operator acts upon with the energy.
    (0, (96, 97), None, ENERGY),
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_cache: "dict[str, int]" = {}


def register_tier(key: str) -> int:
    """The tier (``ENERGY`` or ``INSTANT``) of a register key such as
    ``"1.0.1.8.0.255"``; keys that are not six dotted decimals are INSTANT."""
    tier = _cache.get(key)
    if tier is None:
        tier = _classify(key)
        if len(_cache) < 4096:          # bounded: keys come from meters
            _cache[key] = tier
    return tier


def _classify(key: str) -> int:
    parts = key.split(".")
    if len(parts) != 6:
        return INSTANT
    try:
        a, c, d = int(parts[0]), int(parts[2]), int(parts[3])
    except ValueError:
        return INSTANT
    for ta, tc, td, tier in TABLE:
        if a == ta and (tc is None or c in tc) and (td is None or d in td):
            return tier
    return INSTANT


def split(values: "dict[str, Any]") -> "tuple[dict[str, Any], dict[str, Any]]":
    """``values`` ({register: value}) as (energy part, instantaneous part)."""
    energy: "dict[str, Any]" = {}
    instant: "dict[str, Any]" = {}
    for k, v in values.items():
        if register_tier(k) == ENERGY:
            energy[k] = v
        else:
            instant[k] = v
    return energy, instant
