"""A gateway concentrator: what the mesh delivers here — batches, command
results, idle polls — goes to the HES with this concentrator's own uplink
(HTTP or MQTT, its configured transport) on behalf of its origin — ``PUT
/v1/batches/{origin}/{seq}``, ``PUT /v1/results/…``, ``POST /v1/poll/…``;
the sealed envelope authenticates the origin — and the HES's answer (with
the sealed commands it carries) goes back down the mesh to the origin.

Owns the forwarding queue (per origin one exchange at a time, several
origins at once in ``workers`` threads, so one slow batch does not hold up
the district), the downlink of answers (``reply(origin, bytes)``: opaque to this
module's callers, so what the HES answers for an origin beyond acks —
commands, issue 11 — takes the same path), and the health of the own uplink
that the node advertises (``set_uplink(up, quality, load)``; role ``auto``
is a gateway only while it is up). Must not know what is inside a batch
(the HES opens it) nor the mesh's internals.

``OwnUplink`` is the agent's own upload at a gateway: straight over the
uplink, reporting its health here; at role ``auto`` with the uplink down it
goes through the mesh like any node's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

from agent import mesh_wire
from agent.mesh_io import MeshService, MeshStopped
from agent.transport import Ack, Polled, ResultAck, Transport, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_QUEUED = 256          # batches waiting at this gateway, all origins together
PER_ORIGIN = 8
PROBE_S = 60.0            # role auto, uplink down: try it again this often
MAX_CHUNK = 65536         # the most an origin's fetch may ask (the HES's limit)


class Gateway:
    """``transport_factory()`` gives a ``Transport`` for one worker (HTTP: one
    connection each; an MQTT transport may be shared, it is thread-safe)."""

    def __init__(self, service: MeshService, identity: str, role: str,
                 transport_factory: Callable[[], Transport], workers: int = 4,
                 timeout: float = 15.0) -> None:
        self.service = service
        self.identity = identity
        self.role = role
        self.transport_factory = transport_factory
        self.workers = workers
        self.timeout = timeout
        self.up = True                 # the own uplink works (as far as we know)
        self.quality = 255.0           # EWMA of its success, 0..255
        self.last_failure = 0.0
        self._advertised: tuple[bool, int, int] | None = None
        self._adv_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[tuple[int, int, bytes]]] = OrderedDict()
        self._busy: set[str] = set()
        self._keys: set[tuple[str, int, int]] = set()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._transports: list[Transport] = []
        self.counters = {"received": 0, "forwarded": 0, "accepted": 0, "duplicate": 0,
                         "results": 0, "polls": 0, "rejected": 0, "failed": 0, "dropped_duplicate": 0, "busy": 0,
                         "replies": 0, "reply_no_route": 0, "unreadable": 0, "fetches": 0}
        service.add_listener(self._on_action)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> Gateway:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name="mesh-gw-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        self.advertise()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self._threads = []
        for tr in self._transports:
            tr.close()
        self._transports = []

    # -- batches arriving (mesh thread) -------------------------------------------
    def _on_action(self, a: Any) -> None:
        from mesh.actions import Delivered

        if not isinstance(a, Delivered) or a.kind != "up":
            return
        try:
            msg = mesh_wire.parse(a.payload)
        except mesh_wire.MeshMessageError as e:
            self.counters["unreadable"] += 1
            log.warning("gateway: unreadable message from %s (%s)", a.origin, e.fields)
            return
        if msg.kind not in mesh_wire.UP:
            self.counters["unreadable"] += 1
            return
        self.counters["received"] += 1
        self.submit(a.origin, msg.kind, msg.seq, msg.body)

    def submit(self, origin: str, kind: int, n: int, sealed: bytes) -> None:
        """Queue one origin's request (``mesh_wire.BATCH``/``RESULT``/``POLL``
        with its id) for the HES (any thread)."""
        with self._cond:
            if (origin, kind, n) in self._keys:   # a copy of one already here: one answer
                self.counters["dropped_duplicate"] += 1
                return
            q = self._queues.get(origin)
            waiting = sum(len(x) for x in self._queues.values())
            full = waiting >= MAX_QUEUED or (q is not None and len(q) >= PER_ORIGIN)
            if not full:
                if q is None:
                    q = self._queues[origin] = deque()
                q.append((kind, n, sealed))
                self._keys.add((origin, kind, n))
                self._cond.notify()
        if full:
            self.counters["busy"] += 1
            self.reply(origin, mesh_wire.retry(kind, n, "gateway_busy"))

    # -- workers -------------------------------------------------------------------
    def _next(self) -> tuple[str, int, int, bytes] | None:
        with self._cond:
            while not self._stop:
                for origin, q in self._queues.items():
                    if q and origin not in self._busy:
                        kind, n, sealed = q.popleft()
                        self._busy.add(origin)
                        self._queues.move_to_end(origin)     # round robin over origins
                        return origin, kind, n, sealed
                self._cond.wait()
            return None

    def _work(self) -> None:
        transport = self.transport_factory()
        with self._cond:
            self._transports.append(transport)
        while True:
            job = self._next()
            if job is None:
                return
            origin, kind, n, sealed = job
            try:
                answer = self._upload(transport, origin, kind, n, sealed)
            finally:
                with self._cond:
                    self._busy.discard(origin)
                    self._keys.discard((origin, kind, n))
                    q = self._queues.get(origin)
                    if q is not None and not q:
                        del self._queues[origin]
                    self._cond.notify_all()
            self.reply(origin, answer)

    def _upload(self, transport: Transport, origin: str, kind: int, n: int,
                sealed: bytes) -> bytes:
        """One exchange with the HES; the answer for the origin."""
        self.counters["forwarded"] += 1
        try:
            if kind == mesh_wire.BATCH:
                ack = transport.send(origin, n, sealed, self.timeout)
                self.counters[ack.status] += 1
                answer = mesh_wire.ack(n, ack.status, ack.server_time, ack.need_keyframe,
                                       ack.commands[:mesh_wire.MAX_COMMANDS])
            elif kind == mesh_wire.FETCH:     # a range of an update package for the origin
                package_id, request = mesh_wire.split_fetch(sealed)
                try:
                    data = transport.fetch(package_id, request, MAX_CHUNK, self.timeout)
                except TransportError as e:
                    if e.reason != "protocol":
                        raise
                    return mesh_wire.refused(kind, n, "gateway_cannot_fetch")
                self.counters["fetches"] += 1
                answer = mesh_wire.chunk(n, data)
            elif kind == mesh_wire.RESULT:
                rack = transport.send_result(origin, n, sealed, self.timeout)
                self.counters["results"] += 1
                answer = mesh_wire.rack(n, rack.status)
            else:
                polled = transport.poll(origin, sealed, self.timeout)
                self.counters["polls"] += 1
                answer = mesh_wire.polled(n, polled.server_time,
                                          polled.commands[:mesh_wire.MAX_COMMANDS])
        except TransportError as e:
            if e.reason == "rejected":
                self.counters["rejected"] += 1
                self.report(True)
                return mesh_wire.refused(kind, n, e.hes_reason or "rejected")
            self.counters["failed"] += 1
            self.report(False)
            log.info("gateway: %s %s/%d not delivered (%s)", mesh_wire.NAMES[kind], origin, n,
                     e.reason)
            return mesh_wire.retry(kind, n, e.reason)
        self.report(True)
        return answer

    def reply(self, origin: str, data: bytes) -> None:
        """Send ``data`` (an ``agent.mesh_wire`` message) down to ``origin``."""
        from mesh import MeshError
        from mesh.actions import Delivered

        self.counters["replies"] += 1
        if origin == self.identity:              # our own batch, delivered locally
            self.service.dispatch(Delivered(self.identity, data, 0, "down"))  # type: ignore[no-untyped-call]
            return
        try:
            self.service.call(lambda node, now: node.send_down(origin, data, now, 0))
        except (MeshError, MeshStopped) as e:
            self.counters["reply_no_route"] += 1
            log.info("gateway: answer for %s not sent down (%s); it will resend", origin, e)

    # -- the own uplink's health --------------------------------------------------
    def report(self, ok: bool) -> None:
        """An exchange with the HES succeeded or failed (any thread)."""
        self.quality += ((255.0 if ok else 0.0) - self.quality) / 4
        if not ok:
            self.last_failure = time.monotonic()
        self.up = ok
        self.advertise()

    def load(self) -> int:
        with self._cond:
            waiting = sum(len(q) for q in self._queues.values()) + len(self._busy)
        return min(255, waiting * 255 // MAX_QUEUED)

    def advertise(self) -> None:
        """Tell the node the uplink's state when it changed enough to matter
        (the node bumps its advert's seq on a change of 16 or more)."""
        state = (self.up, int(self.quality), self.load())
        with self._adv_lock:
            last = self._advertised
            if last is not None and state[0] == last[0] and abs(state[1] - last[1]) < 16 \
                    and abs(state[2] - last[2]) < 16:
                return
            self._advertised = state
        try:
            self.service.call(lambda node, now: node.set_uplink(state[0], state[1], state[2], now))
        except MeshStopped:
            pass

    def probe_due(self) -> bool:
        return not self.up and time.monotonic() - self.last_failure >= PROBE_S

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = sum(len(q) for q in self._queues.values())
            busy = sorted(self._busy)
        return {"role": self.role, "uplink_up": self.up, "uplink_quality": int(self.quality),
                "load": self.load(), "queued": queued, "uploading": busy, **self.counters}


class OwnUplink(Transport):
    """The agent's own envelopes at a gateway (batches, command results,
    polls): over ``direct``; at role ``auto`` while that uplink is down, over
    ``mesh`` (another gateway's). Pushed commands come over ``direct``."""

    def __init__(self, direct: Transport, gateway: Gateway, mesh: Transport | None = None) -> None:
        self.direct = direct
        self.gateway = gateway
        self.mesh = mesh
        self.url = direct.url

    def _via(self, what: str, direct: Callable[[], T], mesh: Callable[[Transport], T]) -> T:
        g = self.gateway
        if self.mesh is None or g.up or g.probe_due():
            try:
                out = direct()
            except TransportError as e:
                g.report(e.reason == "rejected")
                if self.mesh is None or e.reason == "rejected":
                    raise
                log.warning("own uplink down (%s): %s goes through the mesh", e.reason, what)
            else:
                g.report(True)
                return out
        return mesh(self.mesh)

    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        return self._via("batch %d" % seq,
                         lambda: self.direct.send(device_id, seq, payload, timeout),
                         lambda m: m.send(device_id, seq, payload, timeout))

    def send_result(self, device_id: str, counter: int, payload: bytes,
                    timeout: float) -> ResultAck:
        return self._via("result %d" % counter,
                         lambda: self.direct.send_result(device_id, counter, payload, timeout),
                         lambda m: m.send_result(device_id, counter, payload, timeout))

    def poll(self, device_id: str, payload: bytes, timeout: float) -> Polled:
        return self._via("a poll", lambda: self.direct.poll(device_id, payload, timeout),
                         lambda m: m.poll(device_id, payload, timeout))

    def fetch(self, package_id: str, sealed: bytes, length: int, timeout: float) -> bytes:
        return self._via("a package range",
                         lambda: self.direct.fetch(package_id, sealed, length, timeout),
                         lambda m: m.fetch(package_id, sealed, length, timeout))

    def listen(self, device_id: str, on_command: Callable[[bytes], object]) -> bool:
        if self.mesh is not None:
            self.mesh.listen(device_id, on_command)
        return self.direct.listen(device_id, on_command)

    def close(self) -> None:
        self.direct.close()
