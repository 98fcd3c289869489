"""``wum mesh neighbours|routes|ping NODE|stats --config F [--json]`` for an
engineer standing at a concentrator, and the mesh part of ``wum status``.

Owns the presentation: it asks the running daemon over its control channel
(``agent.mesh_control``), or — for ``wum status`` when no daemon answers —
reads the last snapshot the daemon kept in the archive. Must not know the
mesh's internals: it shows the node's ``stats()`` shape (``mesh/node.py``).

JSON shapes (``--json``)::

    neighbours  [{"id", "address", "link", "kind", "quality", "etx", "rssi", "snr",
                  "last_heard_s", "dead"}]
    routes      {"parent", "backup", "gateway", "cost", "routes": [{"gateway", "via",
                  "cost", "hops", "seq"}]}
    ping        {"ok", "node", "rtt_ms" | "error"}
    stats       the whole snapshot (node stats, "links", "io", "forwarding", "uplink")
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent import AgentError
from agent.config import Config, ConfigError, load
from agent.mesh_control import ControlError, request, socket_path
from agent.timefmt import rfc3339

STATUS_KEYS = ("role", "configured_role", "gateway_active", "parent", "backup", "gateway",
               "cost", "queue", "duty", "airtime_ms", "downward", "epoch")


def live_stats(cfg: Config, timeout: float = 5.0) -> dict[str, Any]:
    doc = request(socket_path(cfg.archive), {"op": "stats"}, timeout)
    if not doc.get("ok"):
        raise ControlError("daemon: %s" % doc.get("error"))
    st: dict[str, Any] = doc["stats"]
    return st


def status_mesh(cfg: Config, archive: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``wum status``'s ``neighbours`` (id, link, quality, last heard) and
    ``mesh`` (role, parent, gateway, cost, queue, duty-cycle use): live from
    the daemon, else its last snapshot (``"running": false``, ``"as_of"``)."""
    if cfg.mesh is None:
        return [], None
    running = True
    try:
        st = live_stats(cfg, timeout=2.0)
    except ControlError:
        running = False
        raw = archive.meta("mesh_stats")
        try:
            st = json.loads(raw.decode()) if raw else {}
        except (UnicodeDecodeError, ValueError):
            st = {}
    as_of = st.get("as_of") or time.time()
    neighbours = []
    for n in st.get("neighbours", []):
        ago = n.get("last_heard_s")
        neighbours.append({
            "id": n.get("id"), "link": n.get("kind"), "link_no": n.get("link"),
            "quality": n.get("quality"), "etx": n.get("etx"), "rssi": n.get("rssi"),
            "snr": n.get("snr"), "dead": n.get("dead"),
            "last_heard": rfc3339(as_of - ago) if ago is not None else None,
            "last_heard_s": ago})
    mesh: dict[str, Any] = {"running": running, "role": cfg.mesh.role}
    mesh.update({k: st[k] for k in STATUS_KEYS if k in st})
    mesh["role"] = cfg.mesh.role
    mesh["as_of"] = rfc3339(st["as_of"]) if st.get("as_of") else None
    mesh["neighbours"] = neighbours
    for k in ("forwarding", "uplink"):
        if k in st:
            mesh[k] = st[k]
    return neighbours, mesh


def _num(v: Any, fmt: str = "%s") -> str:
    return "-" if v is None else fmt % v


def _print_neighbours(st: dict[str, Any]) -> None:
    print("%-12s %-8s %-7s %-6s %-7s %-6s %-10s %s" % (
        "neighbour", "link", "quality", "etx", "rssi", "snr", "heard", "state"))
    for n in st.get("neighbours", []):
        print("%-12s %-8s %-7s %-6s %-7s %-6s %-10s %s" % (
            n["id"], "%s#%d" % (n["kind"], n["link"]), _num(n["quality"], "%.2f"),
            _num(n["etx"], "%.2f"), _num(n["rssi"], "%.0f"), _num(n["snr"], "%.1f"),
            _num(n["last_heard_s"], "%.0fs ago"), "dead" if n["dead"] else "ok"))


def _print_routes(st: dict[str, Any]) -> None:
    print("gateway %s via parent %s (backup %s), cost %s" % (
        st.get("gateway") or "-", st.get("parent") or "-", st.get("backup") or "-",
        _num(st.get("cost"))))
    print("%-12s %-12s %-6s %-5s %s" % ("gateway", "via", "cost", "hops", "seq"))
    for r in st.get("routes", []):
        print("%-12s %-12s %-6d %-5d %d" % (r["gateway"], r["via"], r["cost"], r["hops"],
                                            r["seq"]))


def _print_stats(st: dict[str, Any]) -> None:
    q = st.get("queue", {})
    print("%s (address %03x) role %s%s, gateway %s, parent %s, cost %s" % (
        st.get("identity"), st.get("address", 0), st.get("role"),
        " (acting gateway)" if st.get("gateway_active") else "", st.get("gateway") or "-",
        st.get("parent") or "-", _num(st.get("cost"))))
    print("neighbours %d, routes %d, downward %d, queue %d frames / %d bytes, own %d" % (
        len(st.get("neighbours", [])), len(st.get("routes", [])), st.get("downward", 0),
        q.get("frames", 0), q.get("bytes", 0), q.get("own_messages", 0)))
    for d in st.get("duty", []):
        print("duty link %d band %s: %d of %d ms used (%.0f %% left)" % (
            d["link"], d["band"], d["used_ms"], d["budget_ms"], 100 * d["remaining"]))
    c = st.get("counters", {})
    print("counters: " + ", ".join("%s %d" % (k, v) for k, v in c.items() if v))
    r = st.get("refused", {})
    if any(r.values()):
        print("refused: " + ", ".join("%s %d" % (k, v) for k, v in r.items() if v))
    for k in ("forwarding", "uplink"):
        if k in st:
            print("%s: %s" % (k, ", ".join("%s %s" % kv for kv in st[k].items())))


def cmd_mesh(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print("wum: %s" % e, file=sys.stderr)
        return 2
    if cfg.mesh is None:
        print("wum: %s has no [mesh]" % args.config, file=sys.stderr)
        return 2
    try:
        if args.action == "ping":
            if not args.node:
                print("wum: mesh ping needs a NODE", file=sys.stderr)
                return 2
            doc = request(socket_path(cfg.archive), {"op": "ping", "node": args.node,
                                                     "timeout": args.timeout},
                          timeout=args.timeout + 5)
            if args.json:
                print(json.dumps(doc))
            elif doc.get("ok"):
                print("%s: round trip %d ms" % (doc["node"], doc["rtt_ms"]))
            else:
                print("%s: %s" % (args.node, doc.get("error")))
            return 0 if doc.get("ok") else 1
        st = live_stats(cfg)
    except AgentError as e:
        print("wum: %s" % e, file=sys.stderr)
        return 1
    if args.action == "neighbours":
        out: Any = st.get("neighbours", [])
        show = _print_neighbours
    elif args.action == "routes":
        out = {k: st.get(k) for k in ("parent", "backup", "gateway", "cost", "routes")}
        show = _print_routes
    else:
        out = st
        show = _print_stats
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        show(st)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("mesh", help="the running daemon's mesh: neighbours, routes, ping, stats",
                       description="Ask the running `wum run` daemon (over its control socket "
                       "<archive>.sock, owner-only) what its mesh node knows. Exit 1 when no "
                       "daemon answers or a ping fails.")
    p.add_argument("action", choices=("neighbours", "routes", "ping", "stats"),
                   help="neighbours heard (link, quality, last heard); routes to gateways "
                   "(parent, backup, cost); ping NODE (a round trip through the mesh); stats "
                   "(everything: counters, refusals, duty cycle, forwarding)")
    p.add_argument("node", nargs="?", help="ping: the concentrator id to ping")
    p.add_argument("--config", required=True, help="agent TOML file")
    p.add_argument("--json", action="store_true", help="JSON (shapes in docs/agent.md)")
    p.add_argument("--timeout", type=float, default=10.0, help="ping: seconds to wait")
    p.set_defaults(func=cmd_mesh)
