"""``wum-hil mesh-sim`` scenarios: the issue-10 JSON format, checked key by
key (a bad file is a ``ScenarioError`` naming the key, exit 2), and the
built-in districts ``wifi-district``, ``lora-district`` and
``gateway-failover``.

Owns the format, its defaults and the built-in layouts. Must not know the
mesh, the medium or how a run is measured (``hil.mesh_sim``).

The format (issue 10; keys in brackets are this simulator's optional
extensions, every other key is an error)::

    {"name": "x", "hours": 48, "deadline_h": 1, [drain_h], [read], [mesh_options],
     "radio": {"kind": "lora", "region": "EU868", "bandwidth_khz": 125,
               "coding_rate": "4/5", "tx_power_dbm": 14,
               [frequency_mhz], [sf], [min_sf], [max_sf], [preamble]},
     "radio": {"kind": "wifi", [tx_power_dbm], [channel_mhz], [rate_kbps]},
     "path_loss": {"exponent": 3.0, "ref_loss_db": 40, "shadowing_db": 4,
                   [ref_distance_m], [asymmetry_db], [fading_db]},
     "frame_loss": 0.10,
     "nodes": [{"id": "DC-0001", "x": 0, "y": 0, "meters": 64, "gateway": true}],
     "links": [{"a": "DC-0001", "b": "DC-0002", "loss": 0.1, [oneway], [rssi_dbm]}],
     "events": [{"at_h": 10, "node": "DC-0001", "action": "down"}]}

``hours``: whole hours of meter data (batches for hours 0..hours-1, each
read at the end of its hour); the run lasts ``hours + drain_h`` (default
``deadline_h``) so every meter-hour meets its deadline inside it. ``read``:
the batch classes a meter-hour needs at the HES to count as read (default
``["events", "energy"]``; ``hil.mesh_sim_data`` defines the classes).
LoRa: ``sf`` fixes one spreading factor for every link; without it the SF
is chosen per link between ``min_sf`` (7) and ``max_sf`` (9); the carrier
defaults to 869.525 MHz (docs/mesh-sim.md says why). ``events`` actions:
``down``/``up`` (the node: radio and concentrator) and
``uplink_down``/``uplink_up`` (a gateway's own uplink to the HES).
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Any

from hil import HilError

ACTIONS = ("down", "up", "uplink_down", "uplink_up")
CLASSES = ("events", "energy", "instant")
TOP = {"name", "hours", "deadline_h", "radio", "path_loss", "frame_loss", "nodes", "links",
       "events", "drain_h", "read", "mesh_options"}
LORA_KEYS = {"kind", "region", "bandwidth_khz", "coding_rate", "tx_power_dbm", "frequency_mhz",
             "sf", "min_sf", "max_sf", "preamble"}
WIFI_KEYS = {"kind", "region", "tx_power_dbm", "channel_mhz", "rate_kbps"}
PATH_KEYS = {"exponent", "ref_loss_db", "shadowing_db", "ref_distance_m", "asymmetry_db",
             "fading_db"}
NODE_KEYS = {"id", "x", "y", "meters", "gateway"}
LINK_KEYS = {"a", "b", "loss", "oneway", "rssi_dbm"}
EVENT_KEYS = {"at_h", "node", "action"}


class ScenarioError(HilError):
    """A scenario that cannot run: ``where`` names the key (``nodes[3].x``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__("scenario: %s %s" % (where, problem))
        self.where = where
        self.problem = problem


def _num(d: dict[str, Any], key: str, where: str, lo: float | None = None,
         hi: float | None = None, default: Any = None, integer: bool = False) -> Any:
    if key not in d:
        if default is None:
            raise ScenarioError(where + key, "is missing")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (isinstance(v, float) and not math.isfinite(v)):
        raise ScenarioError(where + key, "must be a number, not %r" % (v,))
    if integer and v != int(v):
        raise ScenarioError(where + key, "must be a whole number, not %r" % (v,))
    if lo is not None and v < lo:
        raise ScenarioError(where + key, "must be at least %s, not %r" % (lo, v))
    if hi is not None and v > hi:
        raise ScenarioError(where + key, "must be at most %s, not %r" % (hi, v))
    return int(v) if integer else v


def _obj(v: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ScenarioError(where, "must be an object")
    extra = sorted(set(v) - allowed)
    if extra:
        raise ScenarioError(where, "has unknown key(s) %s (known: %s)"
                            % (", ".join(extra), ", ".join(sorted(allowed))))
    return v


def _radio(r: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        raise ScenarioError("radio", "must be an object")
    kind = r.get("kind")
    if kind not in ("lora", "wifi"):
        raise ScenarioError("radio.kind", "must be \"lora\" or \"wifi\", not %r" % (kind,))
    if kind == "wifi":
        _obj(r, "radio", WIFI_KEYS)
        return {"kind": "wifi", "tx_power_dbm": _num(r, "tx_power_dbm", "radio.", -10, 30, 20.0),
                "channel_mhz": _num(r, "channel_mhz", "radio.", 2400, 6000, 2412),
                "rate_kbps": _num(r, "rate_kbps", "radio.", 1000, 600000, 6000, integer=True)}
    _obj(r, "radio", LORA_KEYS)
    if r.get("region", "EU868") != "EU868":
        raise ScenarioError("radio.region", "must be \"EU868\" (the only region modelled)")
    bw = _num(r, "bandwidth_khz", "radio.", default=125)
    if bw not in (125, 250, 500):
        raise ScenarioError("radio.bandwidth_khz", "must be 125, 250 or 500, not %r" % (bw,))
    cr = r.get("coding_rate", "4/5")
    if cr not in ("4/5", "4/6", "4/7", "4/8"):
        raise ScenarioError("radio.coding_rate", "must be \"4/5\"..\"4/8\", not %r" % (cr,))
    freq = _num(r, "frequency_mhz", "radio.", 863.0, 870.0, 869.525)
    out = {"kind": "lora", "region": "EU868", "bandwidth_khz": int(bw), "coding_rate": cr,
           "tx_power_dbm": _num(r, "tx_power_dbm", "radio.", -10, 27, 14.0),
           "frequency_mhz": freq, "preamble": _num(r, "preamble", "radio.", 6, 64, 8,
                                                   integer=True)}
    if "sf" in r:
        sf = _num(r, "sf", "radio.", 7, 12, integer=True)
        out["min_sf"] = out["max_sf"] = sf
        if "min_sf" in r or "max_sf" in r:
            raise ScenarioError("radio.sf", "fixes the SF: give sf or min_sf/max_sf, not both")
    else:
        out["min_sf"] = _num(r, "min_sf", "radio.", 7, 12, 7, integer=True)
        out["max_sf"] = _num(r, "max_sf", "radio.", 7, 12, 9, integer=True)
        if out["min_sf"] > out["max_sf"]:
            raise ScenarioError("radio.min_sf", "must not exceed radio.max_sf")
    from mesh.duty import EU868_SUBBANDS
    hz = int(round(freq * 1e6))
    if not any(b[1] <= hz <= b[2] for b in EU868_SUBBANDS):
        raise ScenarioError("radio.frequency_mhz", "%.3f MHz is in no EU868 duty-cycle "
                            "sub-band (868.0-868.6, 868.7-869.2, 869.4-869.65)" % freq)
    return out


def validate(doc: Any) -> dict[str, Any]:
    """A checked, normalised copy of a scenario (defaults filled in);
    ``ScenarioError`` on the first problem."""
    sc = _obj(doc, "scenario", TOP)
    out: dict[str, Any] = {}
    name = sc.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError("name", "must be a non-empty string")
    out["name"] = name
    out["hours"] = _num(sc, "hours", "", 1, 24 * 60, integer=True)
    out["deadline_h"] = _num(sc, "deadline_h", "", 0.01, 24 * 30)
    out["drain_h"] = _num(sc, "drain_h", "", 0, 24 * 30, out["deadline_h"])
    read = sc.get("read", ["events", "energy"])
    if not isinstance(read, list) or not read or any(c not in CLASSES for c in read):
        raise ScenarioError("read", "must be a non-empty list of %s" % ", ".join(CLASSES))
    out["read"] = sorted(set(read), key=CLASSES.index)
    mo = sc.get("mesh_options", {})
    if not isinstance(mo, dict):
        raise ScenarioError("mesh_options", "must be an object")
    out["mesh_options"] = dict(mo)
    out["radio"] = _radio(sc.get("radio"))
    pl = _obj(sc.get("path_loss", {}), "path_loss", PATH_KEYS)
    out["path_loss"] = {"exponent": _num(pl, "exponent", "path_loss.", 1.0, 8.0, 3.0),
                        "ref_loss_db": _num(pl, "ref_loss_db", "path_loss.", 0, 200, 40.0),
                        "shadowing_db": _num(pl, "shadowing_db", "path_loss.", 0, 30, 4.0),
                        "ref_distance_m": _num(pl, "ref_distance_m", "path_loss.", 0.01, 1e4,
                                               1.0),
                        "asymmetry_db": _num(pl, "asymmetry_db", "path_loss.", 0, 30, 0.0),
                        "fading_db": _num(pl, "fading_db", "path_loss.", 0, 30, 0.0)}
    out["frame_loss"] = _num(sc, "frame_loss", "", 0.0, 0.99, 0.0)
    out["nodes"] = _nodes(sc.get("nodes"))
    ids = {n["id"] for n in out["nodes"]}
    out["links"] = _links(sc.get("links"), ids)
    out["events"] = _events(sc.get("events", []), ids, out)
    return out


def _nodes(nodes: Any) -> list[dict[str, Any]]:
    from mesh import MeshLocalError
    from mesh.address import check_identity

    if not isinstance(nodes, list) or len(nodes) < 2:
        raise ScenarioError("nodes", "must be a list of at least two nodes")
    if len(nodes) > 4094:
        raise ScenarioError("nodes", "holds %d nodes; a district holds at most 4094" % len(nodes))
    out = []
    seen = set()
    for i, n in enumerate(nodes):
        w = "nodes[%d]" % i
        _obj(n, w, NODE_KEYS)
        nid = n.get("id")
        try:
            check_identity(nid)
        except MeshLocalError:
            raise ScenarioError(w + ".id", "must be a string of 1..64 bytes") from None
        if nid in seen:
            raise ScenarioError(w + ".id", "%r appears twice" % nid)
        seen.add(nid)
        gw = n.get("gateway", False)
        if not isinstance(gw, bool):
            raise ScenarioError(w + ".gateway", "must be true or false")
        out.append({"id": nid, "x": _num(n, "x", w + "."), "y": _num(n, "y", w + "."),
                    "meters": _num(n, "meters", w + ".", 0, 1024, 64, integer=True),
                    "gateway": gw})
    if not any(n["gateway"] for n in out):
        raise ScenarioError("nodes", "must hold at least one gateway (\"gateway\": true)")
    return out


def _links(links: Any, ids: set[str]) -> list[dict[str, Any]] | None:
    if links is None:
        return None
    if not isinstance(links, list):
        raise ScenarioError("links", "must be a list")
    out = []
    for i, ln in enumerate(links):
        w = "links[%d]" % i
        _obj(ln, w, LINK_KEYS)
        for end in ("a", "b"):
            if ln.get(end) not in ids:
                raise ScenarioError(w + "." + end, "must name a node, not %r" % (ln.get(end),))
        if ln["a"] == ln["b"]:
            raise ScenarioError(w, "links a node to itself")
        if not isinstance(ln.get("oneway", False), bool):
            raise ScenarioError(w + ".oneway", "must be true or false")
        item = {"a": ln["a"], "b": ln["b"], "loss": _num(ln, "loss", w + ".", 0.0, 1.0, 0.0),
                "oneway": ln.get("oneway", False)}
        if "rssi_dbm" in ln:
            item["rssi_dbm"] = _num(ln, "rssi_dbm", w + ".", -200, 30)
        out.append(item)
    return out


def _events(events: Any, ids: set[str], sc: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(events, list):
        raise ScenarioError("events", "must be a list")
    gws = {n["id"] for n in sc["nodes"] if n["gateway"]}
    end = sc["hours"] + sc["drain_h"]
    out = []
    for i, ev in enumerate(events):
        w = "events[%d]" % i
        _obj(ev, w, EVENT_KEYS)
        at = _num(ev, "at_h", w + ".", 0, end)
        if ev.get("node") not in ids:
            raise ScenarioError(w + ".node", "must name a node, not %r" % (ev.get("node"),))
        if ev.get("action") not in ACTIONS:
            raise ScenarioError(w + ".action", "must be one of %s, not %r"
                                % (", ".join(ACTIONS), ev.get("action")))
        if ev["action"].startswith("uplink") and ev["node"] not in gws:
            raise ScenarioError(w + ".node", "%s: only a gateway has an uplink" % ev["node"])
        out.append({"at_h": at, "node": ev["node"], "action": ev["action"]})
    return sorted(out, key=lambda e: e["at_h"])


def load(name_or_file: str) -> dict[str, Any]:
    """A built-in scenario by name, or a JSON file; validated."""
    if name_or_file in BUILTIN:
        return validate(BUILTIN[name_or_file]())
    if not os.path.exists(name_or_file):
        raise ScenarioError("file", "%r is neither a built-in scenario (%s) nor a file"
                            % (name_or_file, ", ".join(sorted(BUILTIN))))
    try:
        with open(name_or_file, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError("file", "cannot be read: %s" % e) from None
    except json.JSONDecodeError as e:
        raise ScenarioError("file", "is not JSON: %s" % e) from None
    return validate(doc)


# -- built-in districts -------------------------------------------------------

def grid(cols: int, rows: int, spacing: float, jitter: float, gateways: list[tuple[int, int]],
         meters: int = 64, seed: int = 1) -> list[dict[str, Any]]:
    """Concentrators on a jittered grid, numbered DC-0001.. row by row;
    ``gateways`` are (col, row) cells."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for r in range(rows):
        for c in range(cols):
            out.append({"id": "DC-%04d" % (len(out) + 1),
                        "x": round(c * spacing + rng.uniform(-jitter, jitter), 1),
                        "y": round(r * spacing + rng.uniform(-jitter, jitter), 1),
                        "meters": meters, "gateway": (c, r) in gateways})
    return out


def wifi_district() -> dict[str, Any]:
    """300 concentrators 60 m apart (20 x 15, 1.1 x 0.8 km), two gateways,
    Wi-Fi at 20 dBm (about 115 m of mean range: 6 hops to the far corners),
    10 % frame loss; every batch class must be at the HES within the hour."""
    return {"name": "wifi-district", "hours": 48, "deadline_h": 1,
            "read": ["events", "energy", "instant"],
            "radio": {"kind": "wifi", "tx_power_dbm": 20},
            "path_loss": {"exponent": 3.0, "ref_loss_db": 40, "shadowing_db": 4},
            "frame_loss": 0.10,
            "nodes": grid(20, 15, 57.0, 15.0, [(5, 7), (14, 7)])}


def lora_district() -> dict[str, Any]:
    """120 concentrators 350 m apart (12 x 10, 3.9 x 3.2 km), three gateways,
    EU868 at 869.525 MHz, SF chosen per link (7..9), 10 % frame loss, 64
    meters each; energy registers and events within 4 hours."""
    return {"name": "lora-district", "hours": 48, "deadline_h": 4,
            "radio": {"kind": "lora", "region": "EU868", "bandwidth_khz": 125,
                      "coding_rate": "4/5", "tx_power_dbm": 14, "frequency_mhz": 869.525,
                      "min_sf": 7, "max_sf": 9},
            "path_loss": {"exponent": 3.5, "ref_loss_db": 40, "shadowing_db": 6},
            "frame_loss": 0.10,
            "nodes": grid(12, 10, 350.0, 80.0, [(2, 4), (6, 5), (9, 4)])}


def gateway_failover() -> dict[str, Any]:
    """The LoRa district (30 hours) whose middle gateway dies at hour 10
    and returns at hour 20."""
    sc = lora_district()
    sc["name"] = "gateway-failover"
    sc["hours"] = 30
    middle = [n["id"] for n in sc["nodes"] if n["gateway"]][1]
    sc["events"] = [{"at_h": 10, "node": middle, "action": "down"},
                    {"at_h": 20, "node": middle, "action": "up"}]
    return sc


BUILTIN = {"wifi-district": wifi_district, "lora-district": lora_district,
           "gateway-failover": gateway_failover}
