"""Mesh uplink: ``transport = "mesh"``. A sealed batch goes up the mesh to
any gateway, which uploads it on this concentrator's behalf; the HES's
answer comes back down and is this transport's acknowledgement.

Owns the origin's side of that exchange: wrapping the batch
(``agent.mesh_wire``), handing it to the mesh with its priority, matching the
answer that comes back to ``(device, seq)``, and deciding when a batch that
left is worth sending again. The store-and-forward rules stay the uplink's:
``send`` returns an ``Ack`` only when the HES's answer reached us, so a batch
leaves the archive's backlog only then. Every failure is a
``TransportError``:

    unreachable  the mesh cannot take it now (custody queue full: ``MeshBusy``),
                 no route to any gateway, the message was given up on the
                 way, or the gateway could not reach the HES (RETRY)
    timeout      handed on, but no answer in ``timeout``: the message is
                 still travelling; the next ``send`` of the same seq waits
                 for it again instead of sending a copy, until
                 ``resend_after()`` has passed since it left
    rejected     the HES refused these bytes (REFUSED, ``hes_reason``)

A retransmission is a new mesh message with the same bytes; the HES answers
``duplicate``. Answers that arrive after ``send`` gave up are kept, so the
next ``send`` of that seq returns at once.

Must not know what is inside a batch, nor the mesh's internals (it reaches
the node through ``agent.mesh_io.MeshService.call``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent import mesh_wire
from agent.mesh_io import MeshService, MeshStopped
from agent.transport import Ack, Transport, TransportError, check_device

log = logging.getLogger(__name__)

KEEP_ANSWERS = 256
RESEND_CAP = 3600.0


class Flight:
    __slots__ = ("mid", "started", "handed", "failed")

    def __init__(self, mid: int, started: float) -> None:
        self.mid = mid
        self.started = started            # monotonic s: handed to the node
        self.handed: float | None = None  # every fragment in the next hop's custody
        self.failed = ""                  # the node gave it up: why


class MeshTransport(Transport):
    """``priority(seq)`` gives a batch's mesh priority (0 events first);
    ``resend_floor`` the least wait (s) for the HES's answer before a copy
    is sent (10 s on Wi-Fi-only nodes, 180 s with LoRa); ``no_route_wait``
    how long ``send`` waits for a route before it says ``unreachable``."""

    def __init__(self, service: MeshService, identity: str,
                 priority: Callable[[int], int] | None = None, resend_floor: float = 10.0,
                 no_route_wait: float = 2.0) -> None:
        self.service = service
        self.identity = identity
        self.url = "mesh://%s" % identity
        self.priority = priority or (lambda seq: 1)
        self.resend_floor = resend_floor
        self.no_route_wait = no_route_wait
        self._cond = threading.Condition()
        self._flights: dict[int, Flight] = {}
        self._mids: dict[int, int] = {}          # mesh message id -> seq
        self._answers: OrderedDict[int, mesh_wire.Message] = OrderedDict()
        self._srtt: float | None = None
        self.counters = {"sent": 0, "resent": 0, "acks": 0, "refused": 0, "retry": 0,
                         "busy": 0, "failed": 0, "late": 0, "stray": 0}
        service.add_listener(self._on_action)

    def resend_after(self) -> float:
        """Seconds after the first hop took a batch before a copy is sent:
        4 x the smoothed round trip from there, within [floor, 1 h]."""
        rtt = 4 * self._srtt if self._srtt is not None else 0.0
        return min(RESEND_CAP, max(self.resend_floor, rtt))

    # -- the mesh thread ---------------------------------------------------------
    def _on_action(self, a: Any) -> None:
        from mesh.actions import Delivered, MessageAcked, MessageFailed

        if isinstance(a, Delivered):
            if a.kind == "down":
                self._on_down(a.payload)
            return
        if isinstance(a, (MessageAcked, MessageFailed)):
            with self._cond:
                seq = self._mids.get(a.message_id)
                f = self._flights.get(seq) if seq is not None else None
                if f is None or f.mid != a.message_id:
                    return
                if isinstance(a, MessageAcked):
                    f.handed = time.monotonic()
                else:
                    f.failed = str(a.reason)
                    del self._mids[a.message_id]
                    self.counters["failed"] += 1
                self._cond.notify_all()

    def _on_down(self, payload: bytes) -> None:
        try:
            msg = mesh_wire.parse(payload)
        except mesh_wire.MeshMessageError as e:
            log.warning("mesh uplink: unreadable answer from a gateway (%s): %s", e.fields,
                        payload[:32].hex())
            return
        if msg.kind not in (mesh_wire.ACK, mesh_wire.REFUSED, mesh_wire.RETRY):
            return                            # REPLY: for other listeners (commands)
        with self._cond:
            f = self._flights.pop(msg.seq, None)
            if f is None:
                self.counters["stray"] += 1
            else:
                self._mids.pop(f.mid, None)
                # from the moment the first hop held all of it: what resend_after waits for
                # (time spent queued for a route is not the path's round trip)
                rtt = time.monotonic() - (f.handed if f.handed is not None else f.started)
                self._srtt = rtt if self._srtt is None else self._srtt + (rtt - self._srtt) / 8
            self._answers[msg.seq] = msg
            self._answers.move_to_end(msg.seq)
            while len(self._answers) > KEEP_ANSWERS:
                self._answers.popitem(last=False)
            self._cond.notify_all()

    # -- the uplink's thread -----------------------------------------------------
    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        check_device(device_id, seq, self.url)
        if device_id != self.identity:
            raise TransportError("the mesh carries this concentrator's own batches only",
                                 "protocol", device=device_id, seq=seq, url=self.url)
        deadline = time.monotonic() + timeout
        with self._cond:
            msg = self._answers.pop(seq, None)
            if msg is not None:
                self.counters["late"] += 1
                return self._result(msg, device_id)
            f = self._flights.get(seq)
            fresh = f is None or bool(f.failed) or (
                f.handed is not None and time.monotonic() - f.handed > self.resend_after())
        if fresh:
            self._submit(seq, payload, f is not None)
        with self._cond:
            while True:
                msg = self._answers.pop(seq, None)
                if msg is not None:
                    return self._result(msg, device_id)
                f = self._flights.get(seq)
                if f is None or f.failed:
                    why = f.failed if f is not None else "lost"
                    raise TransportError("mesh gave batch %d up (%s)" % (seq, why),
                                         "unreachable", device=device_id, seq=seq, url=self.url,
                                         mesh_reason=why)
                if not self.service.running:
                    raise TransportError("mesh stopped", "unreachable", device=device_id,
                                         seq=seq, url=self.url, mesh_reason="stopped")
                waited = time.monotonic() - f.started
                if f.handed is None and not self.service.routed and waited > self.no_route_wait:
                    raise TransportError("no route to a gateway", "unreachable",
                                         device=device_id, seq=seq, url=self.url,
                                         mesh_reason="no_route")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError("no answer for batch %d within %.1fs" % (seq, timeout),
                                         "timeout", device=device_id, seq=seq, url=self.url)
                self._cond.wait(min(left, 0.5))

    def _submit(self, seq: int, payload: bytes, again: bool) -> None:
        from mesh import MeshBusy, MeshError

        msg = mesh_wire.batch(seq, payload)
        prio = self.priority(seq)

        def go(node: Any, now: int) -> int:
            mid: int = node.send_up(msg, prio, now)
            with self._cond:
                old = self._flights.get(seq)
                if old is not None:
                    self._mids.pop(old.mid, None)
                self._flights[seq] = Flight(mid, time.monotonic())
                self._mids[mid] = seq
            return mid

        try:
            self.service.call(go)
        except MeshBusy as e:
            self.counters["busy"] += 1
            raise TransportError("mesh busy: %s" % e, "unreachable", seq=seq, url=self.url,
                                 device=self.identity, mesh_reason="busy") from e
        except MeshError as e:
            raise TransportError("mesh refused batch %d: %s" % (seq, e), "protocol", seq=seq,
                                 url=self.url, device=self.identity,
                                 mesh_reason=e.fields.get("reason")) from e
        except MeshStopped as e:
            raise TransportError("mesh not running", "unreachable", seq=seq, url=self.url,
                                 device=self.identity, mesh_reason="stopped") from e
        self.counters["resent" if again else "sent"] += 1

    def _result(self, msg: mesh_wire.Message, device: str) -> Ack:
        if msg.kind == mesh_wire.ACK:
            self.counters["acks"] += 1
            return Ack(device, msg.seq, msg.status, msg.server_time, msg.need_keyframe)
        if msg.kind == mesh_wire.REFUSED:
            self.counters["refused"] += 1
            raise TransportError("HES rejected batch %s/%d: %s" % (device, msg.seq, msg.reason),
                                 "rejected", device=device, seq=msg.seq, url=self.url,
                                 hes_reason=msg.reason)
        self.counters["retry"] += 1
        raise TransportError("gateway could not upload batch %d: %s" % (msg.seq, msg.reason),
                             "unreachable", device=device, seq=msg.seq, url=self.url,
                             mesh_reason=msg.reason)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"in_flight": len(self._flights), "answers_waiting": len(self._answers),
                    "srtt_s": None if self._srtt is None else round(self._srtt, 3),
                    "resend_after_s": round(self.resend_after(), 1), **self.counters}
