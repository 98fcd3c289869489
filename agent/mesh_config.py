"""The agent's ``[mesh]`` table and its ``[[mesh.link]]`` entries, validated
like the rest of the configuration (unknown keys are errors, errors name the
key)::

    [mesh]
    role = "node"                 # node | gateway | auto (gateway while its own uplink works)
    network_key = "<64 hex>"      # or network_key_file = "/etc/wum/mesh.key"
    members = ["DC-0001", ...]    # optional: the district roster (docs/mesh.md §1)
    mtu = 115                     # optional: the district's fragment size
    [[mesh.link]]
    kind = "udp"
    listen = "0.0.0.0:47800"
    peers = ["192.0.2.12:47800"]
    [[mesh.link]]
    kind = "lora"                 # chip, spi, busy, dio1, reset..., region, sf, bandwidth, coding_rate

Owns parsing and the cross-checks between ``[uplink]`` and ``[mesh]``. Must
not open sockets or radios (``agent.mesh_agent`` does, from these tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import ConfigError, _check_known, _get

ROLES = ("node", "gateway", "auto")
UDP_KEYS = {"kind", "listen", "peers", "loss", "seed", "mtu"}
LORA_RADIO_KEYS = {"region", "channel", "frequency_mhz", "sf", "bandwidth", "bandwidth_khz",
                   "coding_rate", "preamble", "tx_power_dbm", "sync_word", "mtu"}
LORA_DRIVER_KEYS = {"chip", "spi", "spi_hz", "busy", "dio1", "dio0", "reset", "tcxo_voltage",
                    "dio2_rf_switch", "regulator", "pa_boost"}
LORA_TYPES: dict[str, type | tuple[type, ...]] = {
    "region": str, "channel": int, "frequency_mhz": float, "sf": int, "bandwidth": int,
    "bandwidth_khz": float, "coding_rate": str, "preamble": int, "tx_power_dbm": int,
    "sync_word": int, "mtu": int, "chip": str, "spi": str, "spi_hz": int, "busy": str,
    "dio1": str, "dio0": str, "reset": str, "tcxo_voltage": float, "dio2_rf_switch": bool,
    "regulator": str, "pa_boost": bool}
# drivers.lora's parameter names -> the configuration's
PARAM_KEYS = {"frequency_hz": "channel", "bandwidth_hz": "bandwidth", "cr": "coding_rate"}


@dataclass(frozen=True)
class MeshLinkConfig:
    """One ``[[mesh.link]]``: ``table`` holds its validated keys, LoRa
    frequency and bandwidth normalised to ``channel`` / ``bandwidth`` in Hz
    (the keys ``mesh.links`` and ``drivers.lora`` both read)."""

    kind: str
    table: dict[str, Any] = field(hash=False)
    where: str = ""


@dataclass(frozen=True)
class MeshConfig:
    role: str
    network_key: bytes = field(repr=False)
    links: tuple[MeshLinkConfig, ...] = ()
    members: tuple[str, ...] = ()
    mtu: int | None = None


def _udp(t: dict[str, Any], where: str) -> MeshLinkConfig:
    from drivers.link import LinkError
    from drivers.udp_link import parse_endpoint

    _check_known(t, UDP_KEYS, where)
    listen = _get(t, "listen", where, str)
    peers = _get(t, "peers", where, list, [])
    try:
        parse_endpoint(listen)
        for p in peers:
            if not isinstance(p, str):
                raise ConfigError("%s.peers must be a list of \"host:port\" strings" % where,
                                  key=where + ".peers")
            parse_endpoint(p, "127.0.0.1")
    except LinkError as e:
        bad = "listen" if e.fields.get("endpoint") == listen else "peers"
        raise ConfigError("%s.%s: %r is not host:port" % (where, bad, e.fields.get("endpoint")),
                          key="%s.%s" % (where, bad)) from None
    loss = _get(t, "loss", where, float, 0.0)
    if not 0.0 <= loss < 1.0:
        raise ConfigError("%s.loss must be in [0, 1)" % where, key=where + ".loss")
    table: dict[str, Any] = {"kind": "udp", "listen": listen, "peers": list(peers), "loss": loss,
                             "seed": _get(t, "seed", where, int, None) if "seed" in t else None}
    if "mtu" in t:
        table["mtu"] = _get(t, "mtu", where, int)
    return MeshLinkConfig("udp", table, where)


def _lora(t: dict[str, Any], where: str) -> MeshLinkConfig:
    from drivers.link import RadioConfigError
    from drivers.lora import params_from_config
    from drivers.lora.linux import SX126X, SX127X

    _check_known(t, LORA_RADIO_KEYS | LORA_DRIVER_KEYS | {"kind"}, where)
    table: dict[str, Any] = {"kind": "lora"}
    for k, kind in LORA_TYPES.items():
        if k in t:
            table[k] = _get(t, k, where, kind)
    chip = table.setdefault("chip", "sx1262").lower()
    if chip not in SX126X + SX127X:
        raise ConfigError("%s.chip must be one of %s" % (where, ", ".join(SX126X + SX127X)),
                          key=where + ".chip")
    if chip in SX126X and "busy" not in table:
        raise ConfigError("%s.busy: an %s needs its BUSY line (\"gpiochip0:23\")" % (where, chip),
                          key=where + ".busy")
    if table.get("bandwidth") in (125, 250, 500):
        table["bandwidth"] *= 1000                 # written in kHz, as mesh.links reads it
    try:
        params = params_from_config(table)  # type: ignore[no-untyped-call]
    except RadioConfigError as e:
        param = str(e.fields.get("param", ""))
        key = PARAM_KEYS.get(param, param)
        raise ConfigError("%s.%s: %s (%r)" % (where, key, e, e.fields.get("value")),
                          key="%s.%s" % (where, key)) from None
    for k in ("frequency_mhz", "bandwidth_khz"):
        table.pop(k, None)
    table.update(channel=params.frequency_hz, bandwidth=params.bandwidth_hz, sf=params.sf,
                 coding_rate="4/%d" % (params.cr + 4), preamble=params.preamble)
    return MeshLinkConfig("lora", table, where)


def _key(m: dict[str, Any], base: Path | None) -> bytes:
    if ("network_key" in m) == ("network_key_file" in m):
        raise ConfigError("mesh needs exactly one of network_key or network_key_file",
                          key="mesh.network_key")
    key_name = "network_key"
    if "network_key_file" in m:
        key_name = "network_key_file"
        kf = Path(_get(m, "network_key_file", "mesh", str))
        if base and not kf.is_absolute():
            kf = base / kf
        try:
            text = kf.read_text().strip()
        except OSError as e:
            raise ConfigError("mesh.network_key_file unreadable: %s" % e.strerror,
                              key="mesh.network_key_file") from e
    else:
        text = _get(m, "network_key", "mesh", str)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError("mesh.%s must hold 64 hex digits (a 256-bit network key)" % key_name,
                          key="mesh." + key_name)
    return key


def parse_mesh(data: dict[str, Any], base: Path | None, concentrator_id: str) -> MeshConfig:
    """The ``[mesh]`` table (``data`` is the whole document)."""
    from mesh import MeshError
    from mesh.address import check_identity
    from mesh.links import LinkSpec

    m = _get(data, "mesh", "config", dict)
    _check_known(m, {"role", "network_key", "network_key_file", "link", "members", "mtu"}, "mesh")
    role = _get(m, "role", "mesh", str, "node")
    if role not in ROLES:
        raise ConfigError("mesh.role must be node, gateway or auto", key="mesh.role")
    members = _get(m, "members", "mesh", list, [])
    for i, ident in enumerate(members):
        try:
            check_identity(ident)  # type: ignore[no-untyped-call]
        except MeshError:
            raise ConfigError("mesh.members[%d] must be a concentrator id (1..64 bytes)" % i,
                              key="mesh.members") from None
    if len(set(members)) != len(members):
        raise ConfigError("mesh.members lists an id twice", key="mesh.members")
    if members and concentrator_id not in members:
        raise ConfigError("mesh.members must list this concentrator (%s)" % concentrator_id,
                          key="mesh.members")
    try:
        check_identity(concentrator_id)  # type: ignore[no-untyped-call]
    except MeshError:
        raise ConfigError("concentrator.id cannot be a mesh identity",
                          key="concentrator.id") from None
    links_t = _get(m, "link", "mesh", list, [])
    if not links_t:
        raise ConfigError("mesh needs at least one [[mesh.link]]", key="mesh.link")
    links = []
    for i, t in enumerate(links_t):
        where = "mesh.link[%d]" % i
        if not isinstance(t, dict):
            raise ConfigError("%s must be a table" % where, key=where)
        kind = _get(t, "kind", where, str)
        if kind not in ("udp", "lora"):
            raise ConfigError("%s.kind must be udp or lora" % where, key=where + ".kind")
        link = _udp(t, where) if kind == "udp" else _lora(t, where)
        try:
            LinkSpec.from_dict(link.table)  # type: ignore[no-untyped-call]
        except MeshError as e:
            raise ConfigError("%s: %s" % (where, e), key=where) from None
        links.append(link)
    mtu = _get(m, "mtu", "mesh", int, None) if "mtu" in m else None
    if mtu is not None and not 48 <= mtu <= 65000:
        raise ConfigError("mesh.mtu must be 48..65000", key="mesh.mtu")
    return MeshConfig(role=role, network_key=_key(m, base), links=tuple(links),
                      members=tuple(members), mtu=mtu)


def check_uplink(transport: str, url: str, key_hex: str, mesh: MeshConfig | None) -> None:
    """The cross-checks between ``[uplink]`` and ``[mesh]``."""
    if transport == "mesh":
        if mesh is None:
            raise ConfigError("uplink.transport = \"mesh\" needs a [mesh] table", key="mesh")
        if mesh.role != "node":
            raise ConfigError("mesh.role %s needs its own uplink (transport http or mqtt)"
                              % mesh.role, key="mesh.role")
        if url:
            raise ConfigError("uplink.url is not used with transport = \"mesh\" (a node has "
                              "no uplink of its own)", key="uplink.url")
        if not key_hex:
            raise ConfigError("uplink.key (or key_file) is required: batches stay sealed "
                              "end to end", key="uplink.key")
    elif mesh is not None and mesh.role in ("gateway", "auto"):
        if transport not in ("http", "mqtt") or not url:
            raise ConfigError("mesh.role %s needs uplink.transport http or mqtt and uplink.url"
                              % mesh.role, key="uplink.transport")
