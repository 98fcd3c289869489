"""Modbus device profiles: register maps as data files, loaded into typed objects.

Owns: reading ``drivers/modbus/profiles/<vendor>-<model>.json``, the register
types (u16, s16, u32, s32, u64, s64, float32) and word orders, the exact
conversion between a register's raw words and the OBIS value at the
register's declared resolution (both ways: the simulator encodes with the
same table), vendor quirks keyed by model, and planning few, contiguous
read requests for a set of registers.

Must not know: serial ports, pymodbus, timing.

A profile file (JSON): ``name`` (lower-case vendor-model), ``vendor``,
``model``, ``word_order`` (big: high word first), ``max_registers`` per
request, ``identity`` (the serial-number register), ``serial_format``,
``registers`` (each: ``obis``, ``table`` input|holding, ``address``,
``type``, ``unit``, optional ``decimals``, ``raw_unit``, ``derived``,
``optional``),
``controls`` (holding registers: relay, clock, profile_cursor),
``load_profile`` (row layout behind the cursor), ``spaces`` (address ranges
the device answers, so reads may span unmapped gaps) and ``quirks``.

Optional registers: meters of one model differ by firmware, so a register
may be marked ``"optional": true``; a meter that refuses it (Modbus exception
02 illegal data address or 03 illegal data value, Modbus Application Protocol
V1.1b3 §7, for a request of that register alone) loses that register only,
and the client reports the skip (``drivers.modbus.client``). ``plan`` never
lets a request span a register it is told to avoid, so the registers a meter
refuses can be read around. The identity (serial) register is optional
unless it says ``"optional": false``: a meter without one is named by its
callers' fallback id (docs/INTERFACES.md). Other registers are mandatory
unless marked; a mandatory register refused fails the read. Eastron: where
the serial number lives differs between firmware and protocol-document
versions (holding 0xFC00 in the newer ones; public SDM630 input-register
maps list no serial at all), hence optional in both Eastron profiles.

A register's resolution is ``decimals`` in its own ``raw_unit`` (e.g. kWh with
2 decimals); the OBIS ``unit`` may be a decimal multiple of it (Wh), so the
value comes out as ``mantissa × 10^exponent`` with
``exponent = unit_exponent(raw_unit → unit) − decimals``, through
``drivers.meter.scaled`` (an int when exponent >= 0, the nearest float of the
decimal otherwise).
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

from drivers import LocalProtocolError
from drivers.meter import scaled

PROFILE_DIR = os.path.join(os.path.dirname(__file__), "profiles")
INPUT, HOLDING = "input", "holding"
IDENTITY = "0.0.96.1.0.255"      # the serial number's OBIS code
TYPES = {  # name: (registers, struct format of the big-endian bytes)
    "u16": (1, ">H"), "s16": (1, ">h"), "u32": (2, ">I"), "s32": (2, ">i"),
    "u64": (4, ">Q"), "s64": (4, ">q"), "float32": (2, ">f"),
}
# Decimal exponent from a raw unit to the OBIS unit (kWh -> Wh is 10^3).
UNIT_EXPONENT = {("kWh", "Wh"): 3, ("kvarh", "varh"): 3, ("kW", "W"): 3,
                 ("kvar", "var"): 3, ("MWh", "Wh"): 6}


class ProfileError(LocalProtocolError):
    """A profile file is missing or malformed (fields: profile)."""


class Register:
    """One map entry: OBIS ``obis`` at ``table``/``address`` of ``type``."""

    __slots__ = ("obis", "table", "address", "type", "words", "decimals", "unit",
                 "raw_unit", "exponent", "word_order", "derived", "optional")

    def __init__(self, obis: str, table: str, address: int, type: str, unit: str,
                 decimals: int = 0, raw_unit: str | None = None, word_order: str = "big",
                 derived: list[str] | None = None, optional: bool = False) -> None:
        if type not in TYPES or table not in (INPUT, HOLDING):
            raise ProfileError("bad register %s: %s/%s" % (obis, table, type), obis=obis)
        self.obis, self.table, self.address, self.type = obis, table, address, type
        self.words = TYPES[type][0]
        self.unit = unit
        self.raw_unit = raw_unit or unit
        self.decimals = decimals
        ratio = 0 if self.raw_unit == unit else UNIT_EXPONENT.get((self.raw_unit, unit))
        if ratio is None:
            raise ProfileError("no conversion %s -> %s" % (self.raw_unit, unit), obis=obis)
        self.exponent = ratio - decimals
        self.word_order = word_order
        self.derived = derived or []     # simulator: sum of these OBIS values
        self.optional = bool(optional)   # a meter may refuse it (see the module docstring)

    @property
    def end(self) -> int:
        return self.address + self.words

    def decode(self, words: list[int]) -> int | float:
        """Raw register words -> value in ``unit`` at the declared resolution."""
        if self.word_order == "little":
            words = list(reversed(words))
        raw = struct.unpack(TYPES[self.type][1], struct.pack(">%dH" % len(words), *words))[0]
        if self.type == "float32":
            if not math.isfinite(raw):
                raise ValueError("register %s holds %r" % (self.obis, raw))
            mantissa = round(raw * 10 ** self.decimals)
        else:
            mantissa = raw
        value: int | float = scaled(mantissa, self.exponent)
        return value

    def encode(self, value: int | float) -> list[int]:
        """Value in ``unit`` -> register words (what the meter holds: the value
        truncated to the register's resolution, like a meter's counter)."""
        if self.exponent >= 0:
            mantissa = int(value) // 10 ** self.exponent
        else:
            mantissa = round(value * 10 ** -self.exponent)
        if self.type == "float32":
            raw: int | float = mantissa / 10 ** self.decimals
        else:
            bits = 16 * self.words
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.type[0] == "s" \
                else (0, (1 << bits) - 1)
            raw = min(max(mantissa, lo), hi)
        words = list(struct.unpack(">%dH" % self.words, struct.pack(TYPES[self.type][1], raw)))
        return list(reversed(words)) if self.word_order == "little" else words

    def __repr__(self) -> str:
        return "Register(%s %s@%d %s)" % (self.obis, self.table, self.address, self.type)


class Block:
    """One read request: ``count`` registers of ``table`` from ``start``."""

    __slots__ = ("table", "start", "count", "registers")

    def __init__(self, table: str, start: int, count: int, registers: list[Register]) -> None:
        self.table, self.start, self.count, self.registers = table, start, count, registers

    def decode(self, words: list[int]) -> dict[str, int | float]:
        return {r.obis: r.decode(words[r.address - self.start:r.end - self.start])
                for r in self.registers}

    def __repr__(self) -> str:
        return "Block(%s %d+%d)" % (self.table, self.start, self.count)


class Profile:
    """A device profile: name (``vendor-model``), register map, identity and
    control registers, request limits and quirks."""

    def __init__(self, data: dict[str, Any]) -> None:
        try:
            self.name = data["name"]
            self.vendor = data.get("vendor", "")
            self.model = data.get("model", "")
            order = data.get("word_order", "big")
            self.registers = [Register(word_order=order, **r) for r in data["registers"]]
            ident = data.get("identity")
            self.identity = Register(word_order=order, obis=IDENTITY, unit="",
                                     **{"optional": True, **ident}) if ident else None
            self.serial_format = data.get("serial_format", "%d")
            self.controls = {k: Register(word_order=order, obis=k, unit="", **v)
                             for k, v in data.get("controls", {}).items()}
            self.max_registers = int(data.get("max_registers", 125))
            self.spaces = {t: [tuple(s) for s in v] for t, v in data.get("spaces", {}).items()}
            self.quirks = list(data.get("quirks", []))
            self.load_profile = data.get("load_profile")
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError("malformed profile: %s" % e, profile=data.get("name")) from e
        self.by_obis = {r.obis: r for r in self.registers}
        self.quirks += [q for q in BY_MODEL.get(self.name, []) if q not in self.quirks]
        for q in self.quirks:
            if q not in QUIRKS:
                raise ProfileError("unknown quirk %r" % q, profile=self.name)
            QUIRKS[q](self)

    def register(self, obis: str) -> Register:
        try:
            return self.by_obis[obis]
        except KeyError:
            raise ProfileError("profile %s has no register %s" % (self.name, obis),
                               profile=self.name, obis=obis) from None

    def readable(self, table: str, start: int, end: int) -> bool:
        """True if registers [start, end) may be read in one request: inside a
        declared space, or exactly covered by mapped registers."""
        for lo, hi in self.spaces.get(table, []):
            if lo <= start and end <= hi + 1:
                return True
        covered: set[int] = set()
        for r in self.registers + ([self.identity] if self.identity else []):
            if r.table == table:
                covered.update(range(r.address, r.end))
        return all(a in covered for a in range(start, end))

    @property
    def optional(self) -> list[Register]:
        """The registers a meter of this model may refuse (identity included)."""
        regs = self.registers + ([self.identity] if self.identity is not None else [])
        return [r for r in regs if r.optional]

    def plan(self, registers: list[Register], avoid: list[Register] | None = None) -> list[Block]:
        """Group ``registers`` into as few read requests as the map allows; no
        request spans a register of ``avoid`` (one the meter may refuse)."""
        blocks: list[Block] = []
        holes = [(a.table, a.address, a.end) for a in avoid or ()]
        for r in sorted(set(registers), key=lambda r: (r.table, r.address)):
            last = blocks[-1] if blocks else None
            if last is not None and last.table == r.table:
                end = max(last.start + last.count, r.end)
                if (end - last.start <= self.max_registers
                        and self.readable(r.table, last.start, end)
                        and not any(t == r.table and lo < end and last.start < hi
                                    for t, lo, hi in holes)):
                    last.count = end - last.start
                    last.registers.append(r)
                    continue
            blocks.append(Block(r.table, r.address, r.words, [r]))
        return blocks


# -- quirks: device oddities registered by model ------------------------------
def _eastron_forty_parameters(profile: Profile) -> None:
    """Eastron SDM meters answer at most 40 float parameters (80 registers)."""
    profile.max_registers = min(profile.max_registers, 80)


QUIRKS = {"eastron-max-40-parameters": _eastron_forty_parameters}
# Quirks every profile of a model gets (a site's own JSON for the model too);
# a profile may also list more under "quirks".
BY_MODEL = {
    "eastron-sdm630": ["eastron-max-40-parameters"],
    "eastron-sdm120": ["eastron-max-40-parameters"],
}

_CACHE: dict[str, Profile] = {}


def names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".json"))


def load(name: str) -> Profile:
    """The profile ``name`` (lower-case vendor-model, or a path to a JSON file)."""
    if name in _CACHE:
        return _CACHE[name]
    path = name if name.endswith(".json") else os.path.join(PROFILE_DIR, name.lower() + ".json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ProfileError("no usable profile %r (known: %s)" % (name, ", ".join(names())),
                           profile=name) from e
    prof = Profile(data)
    _CACHE[name] = prof
    return prof
