"""The JSON-ready picture of a ``mesh.node.Node`` for ``wum status --json``
and ``wum mesh neighbours|routes|stats`` (shape in ``mesh/node.py``).

Owns the presentation only: reads the node's state, changes nothing. Must
not know the CLI or the agent. Portable (MicroPython).
"""

from mesh.duty import ticks_diff
from mesh.routing import COST_SCALE


def _round(x, n):
    f = 10 ** n
    return int(x * f + 0.5) / f


def neighbours(node, now_ms):
    out = []
    for a in sorted(node.neigh):
        nr = node.neigh[a]
        link = node.routes.links.get(a)
        prr = link.prr / 256 if link is not None else None
        out.append({
            "id": node.addresses.name(a), "address": a, "link": nr.link,
            "kind": node.links[nr.link].kind,
            "quality": _round(prr, 3) if prr is not None else None,
            "etx": _round(link.cost() / COST_SCALE, 2) if link is not None else None,
            "rssi": nr.rssi, "snr": nr.snr,
            "last_heard_s": _round(ticks_diff(now_ms, nr.last_heard) / 1000, 1),
            "dead": bool(link is not None and link.dead()),
        })
    return out


def routes(node):
    out = []
    name = node.addresses.name
    for gw, (via, cost, adv) in node.routes.selected.items():
        out.append({"gateway": name(gw), "via": name(via), "cost": cost,
                    "hops": adv.hops + 1, "seq": adv.seq})
    out.sort(key=lambda r: (r["cost"], r["gateway"]))
    return out


def duty(node, now_ms):
    out = []
    for i in range(len(node.links)):
        link = node.links[i]
        if not link.duty_cycled:
            continue
        band = node.duty.band(link.channel)
        used = node.duty.used_ms(link.channel, now_ms)
        budget = node.duty.budget_ms(link.channel)
        out.append({"link": i, "band": band[0], "used_ms": used, "budget_ms": budget,
                    "remaining": _round(max(0, budget - used) / budget, 4)})
    return out


def node_stats(node, now_ms):
    r = node.routes
    best = r.best()
    name = node.addresses.name
    gateway = parent = cost = None
    if best is not None:
        gateway = name(best[0])
        parent = name(best[1]) if best[1] is not None else None
        cost = best[2]
    backup = r.backup() if not r.gateway else None
    return {
        "identity": node.identity, "address": node.address, "role": node.role,
        "gateway_active": bool(r.gateway), "gateway": gateway, "parent": parent,
        "backup": name(backup) if backup is not None else None, "cost": cost,
        "neighbours": neighbours(node, now_ms), "routes": routes(node),
        "downward": len(node.down),
        "queue": {"frames": len(node.queue), "bytes": node.queue.nbytes(),
                  "own_messages": len(node.own)},
        "duty": duty(node, now_ms),
        "airtime_ms": node.airtime_ms,
        "epoch": node.sec.epoch,
        "counters": dict(node.counters),
        "refused": dict(node.refused),
    }
