"""Per-frame cost of the mesh core (``mesh.node.Node``) on CPython: how many
frames a simulator driving hundreds of nodes can push through it per second.

A W x W grid of nodes (4 neighbours each, two gateways in opposite corners)
on a minimal lossless-or-lossy medium with virtual time (heapq, no radio
physics: that is ``hil``'s district simulator). Every node sends one
``--batch``-byte message an hour for ``--hours`` hours. On LoRa every
neighbour hears every frame (receivers drop frames for others before any
crypto), on UDP only the addressee. The medium's own time is excluded:
``node_s`` is the time spent inside ``receive``, ``poll`` and
``next_deadline``.

    python bench/mesh_core.py [--width 10] [--hours 4] [--kind udp|lora|both]
                              [--loss 0.1] [--batch 2000] [--seed 1]

Prints JSON: per kind, frames received (authenticated and overheard), node
CPU seconds, frames per second, simulated hours per wall second, messages
sent and delivered.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mesh.actions import Delivered, Transmit  # noqa: E402
from mesh.node import Node  # noqa: E402
from mesh.secure import MemoryCounterStore  # noqa: E402

KEY = bytes(range(32))
LORA = {"kind": "lora", "sf": 7, "channel": 869525000}
HOUR = 3600000


def run(kind: str, width: int, hours: int, loss: float, batch: int, seed: int) -> dict:
    rng = random.Random(seed)
    names = ["DC-%04d" % i for i in range(width * width)]
    gateways = {names[0], names[-1]}
    link = LORA if kind == "lora" else {"kind": "udp"}
    nodes = {}
    for n in names:
        r = random.Random(rng.random())
        nodes[n] = Node(n, "gateway" if n in gateways else "node", KEY, [link],
                        MemoryCounterStore(), rand=lambda lo, hi, r=r: r.randrange(lo, hi)
                        if hi > lo else lo, members=names)
    by_addr = {nodes[n].address: n for n in names}
    hears: dict[str, list[str]] = {n: [] for n in names}
    for i in range(width):
        for j in range(width):
            a = names[i * width + j]
            if i + 1 < width:
                b = names[(i + 1) * width + j]
                hears[a].append(b)
                hears[b].append(a)
            if j + 1 < width:
                b = names[i * width + j + 1]
                hears[a].append(b)
                hears[b].append(a)
    events: list[tuple[int, int, str, bytes | None]] = []   # (t, seq, node, frame|None=poll)
    seq = 0
    node_s = 0.0
    sent = delivered = 0
    stats = {"auth": 0, "overheard": 0}

    def carry(n: str, actions: list, now: int) -> None:
        nonlocal seq, delivered
        for a in actions:
            if isinstance(a, Transmit):
                delay = a.params.get("toa_ms", 1) if a.params else 1
                for m in hears[n]:
                    if kind == "udp" and a.dest != 0xFFF and by_addr.get(a.dest) != m:
                        continue
                    if rng.random() < loss:
                        continue
                    seq += 1
                    heapq.heappush(events, (now + delay, seq, m, a.frame))
            elif isinstance(a, Delivered):
                delivered += 1

    def poll(n: str, now: int) -> None:
        nonlocal seq, node_s
        t0 = time.perf_counter()
        acts = nodes[n].poll(now)
        d = nodes[n].next_deadline()
        node_s += time.perf_counter() - t0
        carry(n, acts, now)
        seq += 1
        heapq.heappush(events, (d, seq, n, None))

    for n in names:
        poll(n, 0)
    end = hours * HOUR
    next_batch = 600000                                  # routes first
    wall0 = time.perf_counter()
    while events:
        t, _, n, frame = heapq.heappop(events)
        if t >= next_batch and next_batch < end:
            for m in names:
                if m not in gateways:
                    t0 = time.perf_counter()
                    nodes[m].send_up(bytes(batch), 1, next_batch)
                    node_s += time.perf_counter() - t0
                    sent += 1
                    poll(m, next_batch)
            next_batch += HOUR
        if t > end + HOUR:
            break
        if frame is None:
            if nodes[n].next_deadline() <= t:
                poll(n, t)
            continue
        t0 = time.perf_counter()
        who = nodes[n].receive(0, frame, -90.0, 5.0, t)
        node_s += time.perf_counter() - t0
        stats["auth" if who is not None else "overheard"] += 1
        t0 = time.perf_counter()
        due = nodes[n].next_deadline() <= t
        node_s += time.perf_counter() - t0
        if due:                                          # what a simulator does
            poll(n, t)
    wall = time.perf_counter() - wall0
    frames = stats["auth"] + stats["overheard"]
    refused = sum(sum(nodes[n].refused.values()) for n in names)
    return {
        "kind": kind, "nodes": len(names), "gateways": 2, "hours": hours, "loss": loss,
        "batch_bytes": batch, "messages_sent": sent, "messages_delivered": delivered,
        "frames_received": frames, "frames_authenticated": stats["auth"],
        "frames_overheard": stats["overheard"], "frames_refused": refused,
        "node_s": round(node_s, 3), "wall_s": round(wall, 3),
        "frames_per_s": round(frames / node_s) if node_s else None,
        "authenticated_frames_per_s": round(stats["auth"] / node_s) if node_s else None,
        "simulated_hours_per_wall_s": round((hours + 1) / wall, 2) if wall else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=10)
    ap.add_argument("--hours", type=int, default=4)
    ap.add_argument("--kind", choices=("udp", "lora", "both"), default="both")
    ap.add_argument("--loss", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    kinds = ("udp", "lora") if a.kind == "both" else (a.kind,)
    out = {"python": sys.version.split()[0],
           "runs": [run(k, a.width, a.hours, a.loss, a.batch, a.seed) for k in kinds]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
