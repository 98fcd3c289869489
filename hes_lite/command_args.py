"""What each command op accepts as arguments, checked at the HES before
anything is signed (an operator's typo answers 422, never reaches a meter).

Owns the per-op argument rules of docs/command-format.md (*Operations and
their arguments*): the shapes, ranges and cross-references (a tariff
season names a week, a week names seven day ids). The agent checks again
before executing; the canonical encoding (integers only, sorted keys,
≤ 4096 bytes) is ``agent.command.canonical_args``'s, applied by the caller.
Must not know HTTP, the store or how a meter executes an op.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hes_lite import HesError

OPS = ("disconnect", "reconnect", "read", "tariff", "limit", "time", "config")
METER_OPS = ("disconnect", "reconnect", "read", "tariff", "limit", "time")
I32 = (1 << 31) - 1
U32 = (1 << 32) - 1

_OBIS = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_MMDD = re.compile(r"^(\d\d)-(\d\d)$")
_HHMM = re.compile(r"^(\d\d):(\d\d)(?::(\d\d))?$")
LIMIT_KEYS = ("threshold_normal", "threshold_emergency", "min_over_threshold_duration",
              "min_under_threshold_duration")
SCHEDULE_KEYS = ("period", "jitter", "meter_budget", "retries", "clock_threshold")
PROTOCOLS = ("dlms", "iec62056-21", "modbus")


class BadArgs(HesError):
    """``args`` do not fit the op; ``detail`` says where and why."""

    detail: str

    def __init__(self, detail: str) -> None:
        super().__init__(detail, detail=detail)


def _obj(v: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadArgs("%s must be an object" % where)
    if allowed is not None:
        extra = sorted(set(v) - set(allowed))
        if extra:
            raise BadArgs("%s: unknown key(s) %s" % (where, ", ".join(extra)))
    return v


def _list(v: Any, where: str, lo: int = 0, hi: int = 1000) -> list[Any]:
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise BadArgs("%s must be a list of %d..%d items" % (where, lo, hi))
    return v


def _int(v: Any, where: str, lo: int = 0, hi: int = I32) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadArgs("%s must be an integer %d..%d" % (where, lo, hi))
    return v


def _str(v: Any, where: str, hi: int = 64, ascii_only: bool = False) -> str:
    if not isinstance(v, str) or not 1 <= len(v.encode()) <= hi or (
            ascii_only and not v.isascii()):
        raise BadArgs("%s must be a %sstring of 1..%d bytes" % (
            where, "ASCII " if ascii_only else "", hi))
    return v


def _none(args: dict[str, Any]) -> None:
    _obj(args, "args", ())


def _read(args: dict[str, Any]) -> None:
    _obj(args, "args", ("registers", "profile"))
    if "registers" in args:
        for i, r in enumerate(_list(args["registers"], "registers", 1, 256)):
            if not isinstance(r, str) or not _OBIS.match(r) or any(
                    int(g) > 255 for g in r.split(".")):
                raise BadArgs("registers[%d] must be an OBIS code a.b.c.d.e.f" % i)
    if "profile" in args:
        p = _obj(args["profile"], "profile", ("from", "to"))
        lo = _int(p.get("from"), "profile.from", 0, U32)
        if _int(p.get("to"), "profile.to", 0, U32) < lo:
            raise BadArgs("profile.to is before profile.from")


def _tariff_days(days: list[Any]) -> set[int]:
    ids: set[int] = set()
    for i, d in enumerate(days):
        d = _obj(d, "days[%d]" % i, ("id", "actions"))
        day = _int(d.get("id"), "days[%d].id" % i, 0, 255)
        if day in ids:
            raise BadArgs("days[%d].id %d is used twice" % (i, day))
        ids.add(day)
        for j, a in enumerate(_list(d.get("actions"), "days[%d].actions" % i, 1, 64)):
            a = _obj(a, "days[%d].actions[%d]" % (i, j), ("start", "tariff"))
            start = a.get("start")
            m = _HHMM.match(start) if isinstance(start, str) else None
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(
                    m.group(3) or 0) > 59:
                raise BadArgs("days[%d].actions[%d].start must be HH:MM or HH:MM:SS" % (i, j))
            _int(a.get("tariff"), "days[%d].actions[%d].tariff" % (i, j), 1, 65535)
    return ids


def _tariff(args: dict[str, Any]) -> None:
    _obj(args, "args", ("name", "activate", "seasons", "weeks", "days"))
    _str(args.get("name"), "name", 16, ascii_only=True)
    _int(args.get("activate"), "activate", 0, U32)
    ids = _tariff_days(_list(args.get("days"), "days", 1, 32))
    weeks: set[str] = set()
    for i, w in enumerate(_list(args.get("weeks"), "weeks", 1, 32)):
        w = _obj(w, "weeks[%d]" % i, ("name", "days"))
        weeks.add(_str(w.get("name"), "weeks[%d].name" % i, 16, ascii_only=True))
        for j, d in enumerate(_list(w.get("days"), "weeks[%d].days" % i, 7, 7)):
            if _int(d, "weeks[%d].days[%d]" % (i, j), 0, 255) not in ids:
                raise BadArgs("weeks[%d].days[%d]: no day with id %d" % (i, j, d))
    for i, s in enumerate(_list(args.get("seasons"), "seasons", 1, 32)):
        s = _obj(s, "seasons[%d]" % i, ("name", "start", "week"))
        _str(s.get("name"), "seasons[%d].name" % i, 16, ascii_only=True)
        start = s.get("start")
        m = _MMDD.match(start) if isinstance(start, str) else None
        if not m or not 1 <= int(m.group(1)) <= 12 or not 1 <= int(m.group(2)) <= 31:
            raise BadArgs("seasons[%d].start must be MM-DD" % i)
        if s.get("week") not in weeks:
            raise BadArgs("seasons[%d].week names no week" % i)


def _limit(args: dict[str, Any]) -> None:
    _obj(args, "args", LIMIT_KEYS)
    if not args:
        raise BadArgs("limit needs at least one of " + ", ".join(LIMIT_KEYS))
    for k, v in args.items():
        _int(v, k, 0, I32 if k.startswith("threshold") else U32)


def _config(args: dict[str, Any]) -> None:
    _obj(args, "args", ("schedule", "retention", "bus"))
    if not args:
        raise BadArgs("config needs at least one of schedule, retention, bus")
    if "schedule" in args:
        sched = _obj(args["schedule"], "schedule", SCHEDULE_KEYS)
        for k, v in sched.items():
            _int(v, "schedule." + k, 1 if k == "period" else 0, 31 * 86400)
    if "retention" in args:
        _int(_obj(args["retention"], "retention", ("days",)).get("days"), "retention.days",
             1, 3660)
    if "bus" in args:
        for name, bus in _obj(args["bus"], "bus").items():
            bus = _obj(bus, "bus.%s" % name, ("meter",))
            for i, m in enumerate(_list(bus.get("meter"), "bus.%s.meter" % name, 0, 247)):
                m = _obj(m, "bus.%s.meter[%d]" % (name, i))
                if not isinstance(m.get("address"), (str, int)) or isinstance(
                        m.get("address"), bool):
                    raise BadArgs("bus.%s.meter[%d].address is missing" % (name, i))
                if m.get("protocol", "dlms") not in PROTOCOLS:
                    raise BadArgs("bus.%s.meter[%d].protocol must be one of %s" % (
                        name, i, ", ".join(PROTOCOLS)))


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "disconnect": _none, "reconnect": _none, "time": _none, "read": _read,
    "tariff": _tariff, "limit": _limit, "config": _config}


def check(op: str, args: Any) -> dict[str, Any]:
    """``args`` if they fit ``op``; ``BadArgs`` otherwise (``KeyError`` is not
    raised: an unknown op is ``BadArgs`` too)."""
    if op not in CHECKS:
        raise BadArgs("unknown op %r; one of %s" % (op, ", ".join(OPS)))
    if args is None:
        args = {}
    CHECKS[op](_obj(args, "args"))
    return dict(args)
