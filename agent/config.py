"""The concentrator's configuration: one TOML file, validated into typed
objects with errors that name the bad key.

Owns parsing and validation only. Example (see docs/agent.toml.example)::

    [concentrator]
    id = "DC-0001"
    archive = "/var/lib/wum/archive.db"

    [schedule]
    period = 3600        # seconds; cycles start aligned to multiples of it
    jitter = 120         # seconds of random delay after the boundary
    meter_budget = 20    # seconds one meter may take per cycle
    retries = 2
    clock_threshold = 10 # set a meter's clock when it drifts more than this
    initial_backfill = 86400  # seconds of profile to fetch from a meter seen first

    [retention]
    days = 45            # 30..45

    [time]
    source = "auto"      # auto: the system clock when NTP-synchronised, else the HES's

    [uplink]
    transport = "http"   # or "mqtt", or "mesh" (a node without its own uplink)
    url = "http://hes.example:8080"
    key = "…64 hex…"     # the device root key (or key_file = "/etc/wum/key")
    max_bytes_per_cycle = 200000
    max_batch_bytes = 2048   # a sealed batch's size cap (default: 2048 on a LoRa mesh, else 60000)

    [[bus]]
    name = "bus1"
    port = "/dev/ttyUSB0"
    baud = 9600
    protocol = "dlms"    # default for its meters
    discover = false

    [[bus.meter]]
    address = "17"
    protocol = "modbus"  # overrides the bus default
    profile = "eastron-sdm630"

    [mesh]               # optional: agent.mesh_config (role, network key, links)

    [update]             # optional: signed updates (agent.update_config, docs/firmware.md)

    [commands]           # signed commands from the HES (docs/command-format.md)
    verify_key = "…64 hex…"   # the HES's Ed25519 public command key (or a list,
                              # or verify_key_file = "/etc/wum/command.pub")
    revoked_keys = []         # key ids (16 hex) or public keys (64 hex) refused
    max_disconnects_per_hour = 10
    poll_interval = 30        # seconds between idle polls over HTTP (0: never)

A remote ``config`` command overlays the TOML (``with_overlay``): see
docs/agent.md, "Remote configuration".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import AgentError

if TYPE_CHECKING:
    from agent.mesh_config import MeshConfig
    from agent.update_config import UpdateConfig

PROTOCOLS = ("dlms", "iec62056-21", "modbus")
# [uplink] max_batch_bytes: a sealed batch's size cap. The envelope carries at most
# 65535 payload bytes; on a LoRa mesh (SF9, 1 % duty cycle: ~7 kB per node and
# hour, spent again on every hop) a batch of 2 kB is ~21 frames, ~13 s of air.
MAX_BATCH_BYTES = 60000
LORA_BATCH_BYTES = 2048
MIN_BATCH_BYTES = 512       # one row of a meter's registers in a keyframe fits
LORA_MTU = 255              # a [mesh] mtu at or below this is a LoRa district's


class ConfigError(AgentError):
    """The configuration cannot be used; ``key`` names the offending entry."""


@dataclass(frozen=True)
class MeterConfig:
    address: str
    protocol: str
    profile: str = ""
    auth: str = "none"
    password: str = ""
    ek: str = ""
    ak: str = ""
    client: int = 16
    logical_device: int = 1


@dataclass(frozen=True)
class BusConfig:
    name: str
    port: str
    baud: int
    protocol: str
    discover: bool
    timeout: float
    meters: tuple[MeterConfig, ...]


@dataclass(frozen=True)
class CommandsConfig:
    verify_keys: tuple[bytes, ...] = ()
    revoked_keys: tuple[bytes, ...] = ()       # 8-byte key ids or 32-byte public keys
    max_disconnects_per_hour: int = 10
    poll_interval: float = 30.0


@dataclass(frozen=True)
class Config:
    concentrator_id: str
    archive: str
    period: int = 3600
    jitter: float = 0.0
    meter_budget: float = 20.0
    retries: int = 2
    clock_threshold: float = 10.0
    retention_days: int = 45
    transport: str = "http"
    url: str = ""
    key_hex: str = ""
    max_bytes_per_cycle: int = 1_000_000
    max_batch_bytes: int = MAX_BATCH_BYTES
    initial_backfill: int = 86400
    time_source: str = "auto"
    buses: tuple[BusConfig, ...] = field(default_factory=tuple)
    log_file: str = ""
    mesh: MeshConfig | None = None
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    update: UpdateConfig | None = None      # [update] (agent.update_config); parse fills it
    # What it was parsed from (a remote ``config`` command overlays it).
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    base: str = field(default="", compare=False, repr=False)


def _get(table: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
         default: Any = ..., ) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError("missing required key %s.%s" % (where, key), key="%s.%s" % (where, key))
        return default
    val = table[key]
    if kind is float and isinstance(val, int) and not isinstance(val, bool):
        val = float(val)
    if isinstance(val, bool) and kind is not bool:
        raise ConfigError("%s.%s must be %s, got a boolean" % (where, key, _kind_name(kind)),
                          key="%s.%s" % (where, key))
    if not isinstance(val, kind):
        raise ConfigError("%s.%s must be %s, got %r" % (where, key, _kind_name(kind), val),
                          key="%s.%s" % (where, key))
    return val


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return {"str": "a string", "int": "an integer", "float": "a number",
            "bool": "true or false", "list": "a list", "dict": "a table"}.get(kind.__name__,
                                                                             kind.__name__)


def _check_known(table: dict[str, Any], known: set[str], where: str) -> None:
    for k in table:
        if k not in known:
            raise ConfigError("unknown key %s.%s (known: %s)" % (where, k, ", ".join(sorted(known))),
                              key="%s.%s" % (where, k))


def _meter(t: dict[str, Any], where: str, default_protocol: str) -> MeterConfig:
    _check_known(t, {"address", "protocol", "profile", "auth", "password", "ek", "ak",
                     "client", "logical_device"}, where)
    addr = t.get("address")
    if isinstance(addr, int) and not isinstance(addr, bool):
        addr = str(addr)
    if not isinstance(addr, str):
        raise ConfigError("%s.address must be a string or integer" % where, key=where + ".address")
    proto = _get(t, "protocol", where, str, default_protocol)
    if proto not in PROTOCOLS:
        raise ConfigError("%s.protocol must be one of %s, got %r" % (where, ", ".join(PROTOCOLS), proto),
                          key=where + ".protocol")
    auth = _get(t, "auth", where, str, "none")
    if auth not in ("none", "lls", "hls"):
        raise ConfigError("%s.auth must be none, lls or hls" % where, key=where + ".auth")
    return MeterConfig(address=addr, protocol=proto, profile=_get(t, "profile", where, str, ""),
                       auth=auth, password=_get(t, "password", where, str, ""),
                       ek=_get(t, "ek", where, str, ""), ak=_get(t, "ak", where, str, ""),
                       client=_get(t, "client", where, int, 16),
                       logical_device=_get(t, "logical_device", where, int, 1))


def _bus(t: dict[str, Any], i: int) -> BusConfig:
    where = "bus[%d]" % i
    _check_known(t, {"name", "port", "baud", "protocol", "discover", "timeout", "meter"}, where)
    proto = _get(t, "protocol", where, str, "modbus")
    if proto not in PROTOCOLS:
        raise ConfigError("%s.protocol must be one of %s, got %r" % (where, ", ".join(PROTOCOLS), proto),
                          key=where + ".protocol")
    meters_t = _get(t, "meter", where, list, [])
    meters = tuple(_meter(m, "%s.meter[%d]" % (where, j), proto) for j, m in enumerate(meters_t))
    discover = _get(t, "discover", where, bool, False)
    if not meters and not discover:
        raise ConfigError("%s has no meters and discover is false" % where, key=where + ".meter")
    addrs = [m.address for m in meters]
    if len(set(addrs)) != len(addrs):
        raise ConfigError("%s has duplicate meter addresses" % where, key=where + ".meter")
    if len(meters) > 64:
        raise ConfigError("%s has %d meters; an RS-485 bus carries at most 64" % (where, len(meters)),
                          key=where + ".meter")
    return BusConfig(name=_get(t, "name", where, str, "bus%d" % (i + 1)),
                     port=_get(t, "port", where, str), baud=_get(t, "baud", where, int, 9600),
                     protocol=proto, discover=discover,
                     timeout=_get(t, "timeout", where, float, 1.0), meters=meters)


def _uplink_key(u: dict[str, Any], base: Path | None) -> str:
    key_hex: str = _get(u, "key", "uplink", str, "")
    if "key_file" in u:
        kf = Path(_get(u, "key_file", "uplink", str))
        if base and not kf.is_absolute():
            kf = base / kf
        try:
            key_hex = kf.read_text().strip()
        except OSError as e:
            raise ConfigError("uplink.key_file unreadable: %s" % e, key="uplink.key_file") from e
    if key_hex:
        try:
            if len(bytes.fromhex(key_hex)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError("uplink.key must be 64 hex digits (a 256-bit key)",
                              key="uplink.key") from None
    return key_hex


def _hex_key(v: object, where: str, sizes: tuple[int, ...]) -> bytes:
    try:
        if not isinstance(v, str):
            raise ValueError
        b = bytes.fromhex(v.strip())
        if len(b) not in sizes:
            raise ValueError
    except ValueError:
        raise ConfigError("%s must be %s hex digits, got %r" % (
            where, " or ".join(str(2 * n) for n in sizes), v), key=where) from None
    return b


def _commands(t: dict[str, Any], base: Path | None) -> CommandsConfig:
    _check_known(t, {"verify_key", "verify_key_file", "revoked_keys", "max_disconnects_per_hour",
                     "poll_interval"}, "commands")
    keys: list[object] = []
    vk = t.get("verify_key", [])
    keys.extend(vk if isinstance(vk, list) else [vk])
    if "verify_key_file" in t:
        kf = Path(_get(t, "verify_key_file", "commands", str))
        if base and not kf.is_absolute():
            kf = base / kf
        try:
            keys.extend(ln.strip() for ln in kf.read_text().splitlines()
                        if ln.strip() and not ln.startswith("#"))
        except OSError as e:
            raise ConfigError("commands.verify_key_file unreadable: %s" % e,
                              key="commands.verify_key_file") from e
    revoked = _get(t, "revoked_keys", "commands", list, [])
    limit = _get(t, "max_disconnects_per_hour", "commands", int, 10)
    if limit < 0:
        raise ConfigError("commands.max_disconnects_per_hour must be >= 0",
                          key="commands.max_disconnects_per_hour")
    poll = _get(t, "poll_interval", "commands", float, 30.0)
    if poll < 0:
        raise ConfigError("commands.poll_interval must be >= 0 (0: no idle poll)",
                          key="commands.poll_interval")
    return CommandsConfig(
        verify_keys=tuple(_hex_key(k, "commands.verify_key", (32,)) for k in keys),
        revoked_keys=tuple(_hex_key(k, "commands.revoked_keys", (8, 32)) for k in revoked),
        max_disconnects_per_hour=limit, poll_interval=poll)


# What a remote ``config`` command may change (docs/agent.md, "Remote configuration").
OVERLAY_KEYS = {"schedule": {"period", "jitter", "meter_budget", "retries", "clock_threshold"},
                "retention": {"days"}}


def merge_overlay(raw: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The TOML document with ``overlay`` applied: ``schedule``/``retention`` keys
    replace the file's; ``bus.<name>.meter`` replaces that bus's meter list.
    Unknown sections, keys or bus names raise ``ConfigError`` naming them."""
    out = {k: v for k, v in raw.items()}
    for section, table in overlay.items():
        where = "overlay.%s" % section
        if not isinstance(table, dict):
            raise ConfigError("%s must be a table" % where, key=where)
        if section in OVERLAY_KEYS:
            _check_known(table, OVERLAY_KEYS[section], where)
            merged = dict(out.get(section, {}))
            merged.update(table)
            out[section] = merged
        elif section == "bus":
            buses = [dict(b) for b in out.get("bus", [])]
            names = {str(b.get("name", "bus%d" % (i + 1))): b for i, b in enumerate(buses)}
            for name, bt in table.items():
                if name not in names:
                    raise ConfigError("%s.%s: no such bus (known: %s)" % (
                        where, name, ", ".join(sorted(names))), key="%s.%s" % (where, name))
                if not isinstance(bt, dict):
                    raise ConfigError("%s.%s must be a table" % (where, name),
                                      key="%s.%s" % (where, name))
                _check_known(bt, {"meter"}, "%s.%s" % (where, name))
                names[name]["meter"] = bt["meter"]
            out["bus"] = buses
        else:
            raise ConfigError("unknown key %s (a remote config may change: schedule, "
                              "retention, bus)" % where, key=where)
    return out


def with_overlay(cfg: Config, overlay: dict[str, Any]) -> Config:
    """``cfg`` re-parsed from its TOML with ``overlay`` applied (validated the same way)."""
    return parse(merge_overlay(cfg.raw, overlay), Path(cfg.base) if cfg.base else None)


def parse(data: dict[str, Any], base: Path | None = None) -> Config:
    _check_known(data, {"concentrator", "schedule", "retention", "uplink", "bus", "log", "time",
                        "mesh", "commands", "update"}, "config")
    tm = _get(data, "time", "config", dict, {})
    _check_known(tm, {"source"}, "time")
    time_source = _get(tm, "source", "time", str, "auto")
    if time_source not in ("auto", "system", "hes"):
        raise ConfigError("time.source must be auto, system or hes", key="time.source")
    c = _get(data, "concentrator", "config", dict)
    _check_known(c, {"id", "archive"}, "concentrator")
    concentrator_id = _get(c, "id", "concentrator", str)
    if not 1 <= len(concentrator_id.encode()) <= 64:
        raise ConfigError("concentrator.id must be 1..64 bytes", key="concentrator.id")
    s = _get(data, "schedule", "config", dict, {})
    _check_known(s, {"period", "jitter", "meter_budget", "retries", "clock_threshold",
                     "initial_backfill"}, "schedule")
    r = _get(data, "retention", "config", dict, {})
    _check_known(r, {"days"}, "retention")
    u = _get(data, "uplink", "config", dict, {})
    _check_known(u, {"transport", "url", "key", "key_file", "max_bytes_per_cycle",
                     "max_batch_bytes"}, "uplink")
    lg = _get(data, "log", "config", dict, {})
    _check_known(lg, {"file"}, "log")
    days = _get(r, "days", "retention", int, 45)
    if not 30 <= days <= 45:
        raise ConfigError("retention.days must be between 30 and 45, got %d" % days,
                          key="retention.days")
    transport = _get(u, "transport", "uplink", str, "http")
    if transport not in ("http", "mqtt", "mesh", "none"):
        raise ConfigError("uplink.transport must be http, mqtt, mesh or none",
                          key="uplink.transport")
    key_hex = _uplink_key(u, base)
    period = _get(s, "period", "schedule", int, 3600)
    if period < 60:
        raise ConfigError("schedule.period must be at least 60 s", key="schedule.period")
    buses_t = _get(data, "bus", "config", list)
    if not buses_t:
        raise ConfigError("at least one [[bus]] is required", key="bus")
    archive = _get(c, "archive", "concentrator", str)
    if base and not Path(archive).is_absolute():
        archive = str(base / archive)
    mesh = None
    from agent.mesh_config import check_uplink, parse_mesh

    if "mesh" in data:
        mesh = parse_mesh(data, base, concentrator_id)
    url = _get(u, "url", "uplink", str, "")
    check_uplink(transport, url, key_hex, mesh)
    from agent.update_config import parse_update
    update = parse_update(_get(data, "update", "config", dict, {}), base, archive,
                          _get(u, "url", "uplink", str, ""), period,
                          _get(s, "jitter", "schedule", float, 0.0))
    return Config(
        concentrator_id=concentrator_id, archive=archive, period=period,
        jitter=_get(s, "jitter", "schedule", float, 0.0),
        meter_budget=_get(s, "meter_budget", "schedule", float, 20.0),
        retries=_get(s, "retries", "schedule", int, 2),
        initial_backfill=_get(s, "initial_backfill", "schedule", int, 86400),
        clock_threshold=_get(s, "clock_threshold", "schedule", float, 10.0),
        retention_days=days, transport=transport, url=url, mesh=mesh,
        key_hex=key_hex, max_bytes_per_cycle=_get(u, "max_bytes_per_cycle", "uplink", int, 1_000_000),
        max_batch_bytes=_max_batch_bytes(u, mesh),
        buses=tuple(_bus(b, i) for i, b in enumerate(buses_t)),
        log_file=_get(lg, "file", "log", str, ""), time_source=time_source,
        commands=_commands(_get(data, "commands", "config", dict, {}), base), update=update,
        raw=data, base=str(base) if base else "")


def _max_batch_bytes(u: dict[str, Any], mesh: MeshConfig | None) -> int:
    """``uplink.max_batch_bytes``, or its default: LORA_BATCH_BYTES when this
    concentrator's own batches may travel a LoRa mesh (role node or auto, a
    LoRa link or a LoRa-sized ``mesh.mtu``), else MAX_BATCH_BYTES."""
    lora = mesh is not None and mesh.role in ("node", "auto") and (
        any(lc.kind == "lora" for lc in mesh.links) or (mesh.mtu or LORA_MTU + 1) <= LORA_MTU)
    n: int = _get(u, "max_batch_bytes", "uplink", int, LORA_BATCH_BYTES if lora
                  else MAX_BATCH_BYTES)
    if not MIN_BATCH_BYTES <= n <= MAX_BATCH_BYTES:
        raise ConfigError("uplink.max_batch_bytes must be between %d and %d, got %d"
                          % (MIN_BATCH_BYTES, MAX_BATCH_BYTES, n), key="uplink.max_batch_bytes")
    return n


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (p, e.strerror), key="") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("config %s is not valid TOML: %s" % (p, e), key="") from e
    return parse(data, base=p.parent)
