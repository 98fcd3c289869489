"""What each command op accepts as arguments, checked at the HES before
anything is signed (an operator's typo answers 422, never reaches a meter).

The rules of docs/command-format.md (*Operations and their arguments*) live
in one place for both ends, ``agent.command_args.check_args`` (shapes,
ranges, cross-references, normalisation: the HES signs the normalised
arguments, so the agent's second check sees the very same). This module
adds, for ``config``, the shapes of the settings a utility may change
(``agent.config`` validates their values again on the concentrator).
Must not know HTTP, the store or how a meter executes an op.
"""

from __future__ import annotations

from typing import Any

from agent import command_args as shared
from hes_lite import HesError

OPS = ("disconnect", "reconnect", "read", "tariff", "limit", "time", "config", "update")
METER_OPS = ("disconnect", "reconnect", "read", "tariff", "limit", "time")
LIMIT_KEYS = shared.LIMIT_KEYS
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


def _int(v: Any, where: str, lo: int = 0, hi: int = (1 << 31) - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadArgs("%s must be an integer %d..%d" % (where, lo, hi))
    return v


def _config(args: dict[str, Any]) -> None:
    _obj(args, "args", ("schedule", "retention", "bus"))
    if not args:
        raise BadArgs("config needs at least one of schedule, retention, bus")
    if "schedule" in args:
        sched = _obj(args["schedule"], "schedule", SCHEDULE_KEYS)
        for k, v in sched.items():
            _int(v, "schedule." + k, 1 if k == "period" else 0, 31 * 86400)
    if "retention" in args:
        # the archive keeps 30..45 days (agent.config refuses anything else)
        _int(_obj(args["retention"], "retention", ("days",)).get("days"), "retention.days",
             30, 45)
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


def check(op: str, args: Any) -> dict[str, Any]:
    """The normalised ``args`` if they fit ``op`` (None is ``{}``);
    ``BadArgs`` otherwise, an unknown op included."""
    if op not in OPS:
        raise BadArgs("unknown op %r; one of %s" % (op, ", ".join(OPS)))
    if args is None:
        args = {}
    try:
        out: dict[str, Any] = shared.check_args(op, args)
    except shared.ArgsError as e:
        raise BadArgs(str(e)) from None
    if op == "config":
        _config(out)
    return out
