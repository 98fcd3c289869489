"""Mesh uplink: ``transport = "mesh"``. A sealed batch (or a command result,
or an idle poll) goes up the mesh to any gateway, which hands it to the HES
on this concentrator's behalf; the HES's answer comes back down and is this
transport's acknowledgement — with the sealed commands it carries.

Owns the origin's side of those exchanges: wrapping the envelope
(``agent.mesh_wire``), handing it to the mesh with its priority, matching the
answer that comes back to ``(kind, id)`` — batch seq, result counter, poll
id —, and deciding when a request that left is worth sending again. The
store-and-forward rules stay the uplink's: ``send`` returns an ``Ack`` only
when the HES's answer reached us, so a batch leaves the archive's backlog
only then. Every failure is a ``TransportError``:

    unreachable  the mesh cannot take it now (custody queue full: ``MeshBusy``),
                 no route to any gateway, the message was given up on the
                 way, or the gateway could not reach the HES (RETRY)
    timeout      handed on, but no answer in ``timeout``: the message is
                 still travelling; the next request with the same id waits
                 for it again instead of sending a copy, until
                 ``resend_after()`` has passed since the first hop took it
    rejected     the HES refused these bytes (REFUSED, ``hes_reason``)

A retransmission is a new mesh message with the same bytes; the HES answers
``duplicate``. Answers that arrive after the caller gave up are kept, so the
next request with that id returns at once; an answer to no request in flight
(a copy of one taken, or one for this origin before a restart) is counted
``stray`` and only its commands are handed on. There is no push over the mesh
(``listen`` is False): commands ride on batch acks and idle polls.

Must not know what is inside an envelope, nor the mesh's internals (it
reaches the node through ``agent.mesh_io.MeshService.call``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent import mesh_wire as w
from agent.mesh_io import MeshService, MeshStopped
from agent.transport import Ack, Polled, ResultAck, Transport, TransportError, check_device

log = logging.getLogger(__name__)

KEEP_ANSWERS = 256
RESEND_CAP = 3600.0
Key = tuple[int, int]             # (request kind, id)


class Flight:
    __slots__ = ("mid", "started", "handed", "failed")

    def __init__(self, mid: int, started: float) -> None:
        self.mid = mid
        self.started = started            # monotonic s: handed to the node
        self.handed: float | None = None  # every fragment in the next hop's custody
        self.failed = ""                  # the node gave it up: why


class MeshTransport(Transport):
    """``priority(seq)`` gives a batch's mesh priority (0 events first;
    results go at 0, polls at 2); ``resend_floor`` the least wait (s) for the
    HES's answer before a copy is sent (10 s on Wi-Fi-only nodes, 180 s with
    LoRa); ``no_route_wait`` how long a request waits for a route before it
    says ``unreachable``."""

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
        self._flights: dict[Key, Flight] = {}
        self._mids: dict[int, Key] = {}          # mesh message id -> request
        self._answers: OrderedDict[Key, w.Message] = OrderedDict()
        self._srtt: float | None = None
        self._on_command: Callable[[bytes], object] | None = None
        self.counters = {"sent": 0, "resent": 0, "acks": 0, "refused": 0, "retry": 0,
                         "busy": 0, "failed": 0, "late": 0, "stray": 0, "polls": 0,
                         "results": 0, "commands": 0, "fetches": 0}
        service.add_listener(self._on_action)

    def resend_after(self) -> float:
        """Seconds after the first hop took a request before a copy is sent:
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
                key = self._mids.get(a.message_id)
                f = self._flights.get(key) if key is not None else None
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
        stray: tuple[bytes, ...] = ()
        try:
            msg: w.Message | None = w.parse(payload)
        except w.MeshMessageError as e:
            log.warning("mesh uplink: unreadable answer from a gateway (%s): %s", e.fields,
                        payload[:32].hex())
            return
        if msg is None or msg.kind == w.REPLY or msg.kind in w.UP:
            return                            # REPLY: for other listeners
        with self._cond:
            f = self._flights.pop(msg.key, None)
            if f is None:
                # an answer to no request of ours in flight: a second copy of one already
                # taken (a resend answered twice), or one meant for this origin before it
                # restarted (the mesh re-delivers a frame whose hop ack was lost). Kept, it
                # would answer the next request with that id unasked: a restarted origin's
                # resend must reach the HES (and hear ``duplicate``), and a kept
                # ``accepted`` must not be overwritten by its copy. Only its commands count.
                self.counters["stray"] += 1
                stray = msg.commands
                msg = None
            else:
                self._mids.pop(f.mid, None)
                # from the moment the first hop held all of it: what resend_after waits for
                # (time spent queued for a route is not the path's round trip)
                rtt = time.monotonic() - (f.handed if f.handed is not None else f.started)
                self._srtt = rtt if self._srtt is None else self._srtt + (rtt - self._srtt) / 8
            if msg is not None:
                self._answers[msg.key] = msg
                self._answers.move_to_end(msg.key)
                while len(self._answers) > KEEP_ANSWERS:
                    self._answers.popitem(last=False)
                self._cond.notify_all()
        if stray and self._on_command is not None:
            for cmd in stray:
                self._on_command(cmd)

    # -- the callers' threads ----------------------------------------------------
    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        msg = self._exchange(device_id, w.BATCH, seq, payload, timeout, self.priority(seq))
        self.counters["acks"] += 1
        self.counters["commands"] += len(msg.commands)
        return Ack(device_id, seq, msg.status, msg.server_time, msg.need_keyframe,
                   msg.commands)

    def send_result(self, device_id: str, counter: int, payload: bytes,
                    timeout: float) -> ResultAck:
        msg = self._exchange(device_id, w.RESULT, counter, payload, timeout, 0)
        self.counters["results"] += 1
        return ResultAck(device_id, counter, msg.status)

    def poll(self, device_id: str, payload: bytes, timeout: float) -> Polled:
        poll_id = int.from_bytes(os.urandom(4), "big")
        try:
            msg = self._exchange(device_id, w.POLL, poll_id, payload, timeout, 2)
        finally:
            with self._cond:                 # a poll is never asked again: forget it
                f = self._flights.pop((w.POLL, poll_id), None)
                if f is not None:
                    self._mids.pop(f.mid, None)
        self.counters["polls"] += 1
        self.counters["commands"] += len(msg.commands)
        return Polled(device_id, msg.commands, msg.server_time)

    def fetch(self, package_id: str, sealed: bytes, length: int, timeout: float) -> bytes:
        """A range of an update package through a gateway (FETCH up, CHUNK down)."""
        fetch_id = int.from_bytes(os.urandom(4), "big")
        try:
            msg = self._exchange(self.identity, w.FETCH, fetch_id,
                                 w.fetch_body(package_id, sealed), timeout, 2)
        except w.MeshMessageError as e:
            raise TransportError("not a fetch request: %s" % e, "protocol") from None
        finally:
            with self._cond:                 # never asked again: forget it
                f = self._flights.pop((w.FETCH, fetch_id), None)
                if f is not None:
                    self._mids.pop(f.mid, None)
                self._answers.pop((w.FETCH, fetch_id), None)
        self.counters["fetches"] += 1
        return msg.body

    def listen(self, device_id: str, on_command: Callable[[bytes], object]) -> bool:
        """No push over the mesh (False: the agent polls); ``on_command`` still
        gets the commands of answers that came when nobody waited for them."""
        self._on_command = on_command
        return False

    def _exchange(self, device_id: str, kind: int, n: int, payload: bytes, timeout: float,
                  prio: int) -> w.Message:
        check_device(device_id, n, self.url)
        if device_id != self.identity:
            raise TransportError("the mesh carries this concentrator's own envelopes only",
                                 "protocol", device=device_id, seq=n, url=self.url)
        key = (kind, n)
        deadline = time.monotonic() + timeout
        with self._cond:
            msg = self._take(key)
            if msg is not None:
                self.counters["late"] += 1
                return self._result(msg, device_id)
            f = self._flights.get(key)
            fresh = f is None or bool(f.failed) or (
                f.handed is not None and time.monotonic() - f.handed > self.resend_after())
        if fresh:
            self._submit(key, payload, prio, f is not None)
        with self._cond:
            while True:
                msg = self._take(key)
                if msg is not None:
                    return self._result(msg, device_id)
                self._check_waiting(key, device_id, deadline, timeout)
                self._cond.wait(min(deadline - time.monotonic(), 0.5))

    def _take(self, key: Key) -> w.Message | None:
        """The answer for ``key`` (holding ``_cond``). A refusal or a RETRY is
        taken once (asking again may get another answer); an ACK stays, so
        two threads waiting for one batch both get it."""
        msg = self._answers.get(key)
        if msg is not None and msg.kind in (w.REFUSED, w.RETRY):
            del self._answers[key]
        return msg

    def _check_waiting(self, key: Key, device: str, deadline: float, timeout: float) -> None:
        """Raise when waiting longer makes no sense (called holding ``_cond``)."""
        what = "%s %d" % (w.NAMES[key[0]], key[1])
        f = self._flights.get(key)
        if f is None or f.failed:
            why = f.failed if f is not None else "lost"
            raise TransportError("mesh gave %s up (%s)" % (what, why), "unreachable",
                                 device=device, seq=key[1], url=self.url, mesh_reason=why)
        if not self.service.running:
            raise TransportError("mesh stopped", "unreachable", device=device, seq=key[1],
                                 url=self.url, mesh_reason="stopped")
        if f.handed is None and not self.service.routed and \
                time.monotonic() - f.started > self.no_route_wait:
            raise TransportError("no route to a gateway", "unreachable", device=device,
                                 seq=key[1], url=self.url, mesh_reason="no_route")
        if time.monotonic() >= deadline:
            raise TransportError("no answer for %s within %.1fs" % (what, timeout), "timeout",
                                 device=device, seq=key[1], url=self.url)

    def _submit(self, key: Key, payload: bytes, prio: int, again: bool) -> None:
        from mesh import MeshBusy, MeshError

        msg = w.request(key[0], key[1], payload)

        def go(node: Any, now: int) -> int:
            mid: int = node.send_up(msg, prio, now)
            with self._cond:
                old = self._flights.get(key)
                if old is not None:
                    self._mids.pop(old.mid, None)
                self._flights[key] = Flight(mid, time.monotonic())
                self._mids[mid] = key
            return mid

        fields: dict[str, Any] = {"seq": key[1], "url": self.url, "device": self.identity}
        try:
            self.service.call(go)
        except MeshBusy as e:
            self.counters["busy"] += 1
            raise TransportError("mesh busy: %s" % e, "unreachable", mesh_reason="busy",
                                 **fields) from e
        except MeshError as e:
            raise TransportError("mesh refused %s: %s" % (w.NAMES[key[0]], e), "protocol",
                                 mesh_reason=e.fields.get("reason"), **fields) from e
        except MeshStopped as e:
            raise TransportError("mesh not running", "unreachable", mesh_reason="stopped",
                                 **fields) from e
        self.counters["resent" if again else "sent"] += 1

    def _result(self, msg: w.Message, device: str) -> w.Message:
        if msg.kind == w.REFUSED:
            self.counters["refused"] += 1
            raise TransportError("HES rejected %s %s/%d: %s" % (
                w.NAMES[msg.ref], device, msg.seq, msg.reason), "rejected", device=device,
                seq=msg.seq, url=self.url, hes_reason=msg.reason)
        if msg.kind == w.RETRY:
            self.counters["retry"] += 1
            raise TransportError("gateway got no answer for %s %d: %s" % (
                w.NAMES[msg.ref], msg.seq, msg.reason), "unreachable", device=device,
                seq=msg.seq, url=self.url, mesh_reason=msg.reason)
        return msg

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"in_flight": len(self._flights), "answers_waiting": len(self._answers),
                    "srtt_s": None if self._srtt is None else round(self._srtt, 3),
                    "resend_after_s": round(self.resend_after(), 1), **self.counters}
