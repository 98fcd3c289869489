"""The arguments of each command op: what is valid, in one place for both ends.

Portable (CPython and MicroPython). The HES checks an operator's arguments
with ``check_args`` before it signs and queues a command (a 4xx instead of a
command that can only fail); the agent checks them again before it touches a
meter (``failed: bad_args: …``). docs/command-format.md, *Operations*, is the
spec. Owns shapes and ranges only; must not know meters, DLMS encodings or
the agent's configuration (``config`` is validated by ``agent.config``).

API (stable):
    check_args(op, args) -> normalised args (a new dict); raises ArgsError
    ArgsError(CommandError-free AgentError) with .field
"""

from agent import AgentError

NAME_MAX = 16
TARIFF_MAX = 65535
LIMIT_KEYS = ("threshold_normal", "threshold_emergency", "min_over_threshold_duration",
              "min_under_threshold_duration")
MAX_U32 = 0xFFFFFFFF
MAX_ITEMS = 32


class ArgsError(AgentError):
    """Arguments that cannot be executed; ``field`` names the offending one."""

    field: str

    def __init__(self, field: str, why: str) -> None:
        super().__init__("%s: %s" % (field, why), field=field)


def _int(v: object, field: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ArgsError(field, "must be an integer %d..%d" % (lo, hi))
    return v


def _obj(v: object, field: str, known: "tuple[str, ...]") -> "dict[str, object]":
    if not isinstance(v, dict):
        raise ArgsError(field, "must be an object")
    for k in v:
        if k not in known:
            raise ArgsError("%s.%s" % (field, k) if field else k,
                            "unknown (known: %s)" % ", ".join(known))
    return v


def _list(v: object, field: str, lo: int = 1) -> "list[object]":
    if not isinstance(v, list) or not lo <= len(v) <= MAX_ITEMS:
        raise ArgsError(field, "must be a list of %d..%d items" % (lo, MAX_ITEMS))
    return v


def _name(v: object, field: str) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= NAME_MAX or \
            any(not 0x20 <= ord(c) < 0x7F for c in v):
        raise ArgsError(field, "must be 1..%d printable ASCII characters" % NAME_MAX)
    return v


def _clock_text(v: object, field: str, parts: int) -> "tuple[int, ...]":
    """'MM-DD' (parts=2, date) or 'HH:MM[:SS]' (parts=3, time)."""
    sep = "-" if parts == 2 else ":"
    if not isinstance(v, str):
        raise ArgsError(field, "must be a string")
    bits = v.split(sep)
    if not (len(bits) == parts or (parts == 3 and len(bits) == 2)) or \
            any(len(b) != 2 or not b.isdigit() for b in bits):
        raise ArgsError(field, "must be %s" % ("MM-DD" if parts == 2 else "HH:MM or HH:MM:SS"))
    nums = [int(b) for b in bits] + [0] * (3 - len(bits) if parts == 3 else 0)
    if parts == 2:
        if not (1 <= nums[0] <= 12 and 1 <= nums[1] <= 31):
            raise ArgsError(field, "not a date")
    elif not (nums[0] <= 23 and nums[1] <= 59 and nums[2] <= 59):
        raise ArgsError(field, "not a time of day")
    return tuple(nums)


def _obis(v: object, field: str) -> str:
    bits = v.split(".") if isinstance(v, str) else []
    if len(bits) != 6 or any(not b.isdigit() or int(b) > 255 for b in bits):
        raise ArgsError(field, "must be an OBIS code a.b.c.d.e.f")
    return ".".join(str(int(b)) for b in bits)


def _empty(args: "dict[str, object]") -> "dict[str, object]":
    _obj(args, "", ())
    return {}


def _read(args: "dict[str, object]") -> "dict[str, object]":
    _obj(args, "", ("registers", "profile"))
    out: "dict[str, object]" = {}
    if "registers" in args:
        regs = _list(args["registers"], "registers")
        out["registers"] = [_obis(r, "registers[%d]" % i) for i, r in enumerate(regs)]
    if "profile" in args:
        p = _obj(args["profile"], "profile", ("from", "to"))
        if "from" not in p or "to" not in p:
            raise ArgsError("profile", "needs from and to (epoch seconds)")
        start = _int(p["from"], "profile.from", 0, MAX_U32)
        end = _int(p["to"], "profile.to", start, MAX_U32)
        out["profile"] = {"from": start, "to": end}
    return out


def _tariff(args: "dict[str, object]") -> "dict[str, object]":
    _obj(args, "", ("name", "activate", "seasons", "weeks", "days"))
    for k in ("name", "activate", "seasons", "weeks", "days"):
        if k not in args:
            raise ArgsError(k, "missing")
    days, day_ids = [], []
    for i, d in enumerate(_list(args["days"], "days")):
        f = "days[%d]" % i
        d = _obj(d, f, ("id", "actions"))
        did = _int(d.get("id"), f + ".id", 0, 255)
        actions = []
        for j, a in enumerate(_list(d.get("actions"), f + ".actions")):
            fa = "%s.actions[%d]" % (f, j)
            a = _obj(a, fa, ("start", "tariff"))
            hms = _clock_text(a.get("start"), fa + ".start", 3)
            actions.append({"start": "%02d:%02d:%02d" % hms,
                            "tariff": _int(a.get("tariff"), fa + ".tariff", 1, TARIFF_MAX)})
        starts = [str(a["start"]) for a in actions]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ArgsError(f + ".actions", "start times must increase")
        if did in day_ids:
            raise ArgsError(f + ".id", "duplicate day id %d" % did)
        day_ids.append(did)
        days.append({"id": did, "actions": actions})
    weeks, week_names = [], []
    for i, w in enumerate(_list(args["weeks"], "weeks")):
        f = "weeks[%d]" % i
        w = _obj(w, f, ("name", "days"))
        name = _name(w.get("name"), f + ".name")
        ids = w.get("days")
        if not isinstance(ids, list) or len(ids) != 7:
            raise ArgsError(f + ".days", "must list 7 day ids, Monday to Sunday")
        for n, x in enumerate(ids):
            if _int(x, "%s.days[%d]" % (f, n), 0, 255) not in day_ids:
                raise ArgsError("%s.days[%d]" % (f, n), "no day profile %r" % x)
        if name in week_names:
            raise ArgsError(f + ".name", "duplicate week %r" % name)
        week_names.append(name)
        weeks.append({"name": name, "days": list(ids)})
    seasons, season_names = [], []
    for i, s in enumerate(_list(args["seasons"], "seasons")):
        f = "seasons[%d]" % i
        s = _obj(s, f, ("name", "start", "week"))
        name = _name(s.get("name"), f + ".name")
        mmdd = _clock_text(s.get("start"), f + ".start", 2)
        if s.get("week") not in week_names:
            raise ArgsError(f + ".week", "no week profile %r" % (s.get("week"),))
        if name in season_names:
            raise ArgsError(f + ".name", "duplicate season %r" % name)
        season_names.append(name)
        seasons.append({"name": name, "start": "%02d-%02d" % mmdd, "week": s["week"]})
    return {"name": _name(args["name"], "name"),
            "activate": _int(args["activate"], "activate", 0, MAX_U32),
            "seasons": seasons, "weeks": weeks, "days": days}


def _limit(args: "dict[str, object]") -> "dict[str, object]":
    _obj(args, "", LIMIT_KEYS)
    if not args:
        raise ArgsError("", "name at least one of %s" % ", ".join(LIMIT_KEYS))
    return {k: _int(args[k], k, 0, MAX_U32) for k in LIMIT_KEYS if k in args}


def _config(args: "dict[str, object]") -> "dict[str, object]":
    _obj(args, "", ("schedule", "retention", "bus"))
    if not args:
        raise ArgsError("", "name at least one of schedule, retention, bus")
    return dict(args)            # the agent's config parser validates the values


UPDATE_KEYS = ("package", "version", "sha256", "size", "target", "board")


def _hex(v: object, field: str, n: int) -> str:
    if not isinstance(v, str) or len(v) != n or any(c not in "0123456789abcdef" for c in v):
        raise ArgsError(field, "must be %d lowercase hex digits" % n)
    return v


def _update(args: "dict[str, object]") -> "dict[str, object]":
    """A signed update package announced (docs/firmware.md, "The update command")."""
    _obj(args, "", UPDATE_KEYS)
    for k in UPDATE_KEYS:
        if k not in args:
            raise ArgsError(k, "missing")
    digest = _hex(args["sha256"], "sha256", 64)
    if _hex(args["package"], "package", 16) != digest[:16]:
        raise ArgsError("package", "must be the first 16 hex digits of sha256")
    version = args["version"]
    if not isinstance(version, str) or not 1 <= len(version) <= 32 or any(
            not p.isdigit() for p in version.split(".")):
        raise ArgsError("version", "must be dotted integers")
    if args["target"] not in ("linux", "micropython"):
        raise ArgsError("target", "must be linux or micropython")
    board = args["board"]
    if not isinstance(board, str) or not 1 <= len(board) <= 64:
        raise ArgsError("board", "must be a board name")
    return {"package": args["package"], "version": version, "sha256": digest,
            "size": _int(args["size"], "size", 1, MAX_U32), "target": args["target"],
            "board": board}


CHECKS = {"disconnect": _empty, "reconnect": _empty, "read": _read, "tariff": _tariff,
          "limit": _limit, "time": _empty, "config": _config, "update": _update}


def check_args(op: str, args: "dict[str, object]") -> "dict[str, object]":
    """Valid ``args`` for ``op``, normalised (times as HH:MM:SS, OBIS without
    leading zeros), or ``ArgsError`` naming the field."""
    check = CHECKS.get(op)
    if check is None:
        raise ArgsError("op", "unknown op %r" % (op,))
    if not isinstance(args, dict):
        raise ArgsError("args", "must be an object")
    return check(args)
