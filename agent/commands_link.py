"""The agent's end of command delivery: polls when idle, results until acked.

Owns a thread that (1) sends every finished command's result, sealed as a
kind-3 envelope, until the HES acknowledges it (store-and-forward: results
live in the archive's command table, so a restart or a dead link loses
none); (2) over a transport without push (HTTP) polls the HES every
``poll_interval`` wall-clock seconds with a kind-4 envelope and hands what
comes back to the inbox; (3) with push (MQTT) subscribes to the device's
command topic once. Results are sent at once when one is ready
(``wake()``), and retried every ``retry`` seconds while the link is down.

Envelope order: a batch sealed earlier and still unacknowledged is sent
before any poll or result is sealed, so nothing sealed later can push it out
of the HES's replay window (which is per device, across kinds). Must not
know meters or how commands execute.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from agent.clock import SystemClock
from agent.commands import CommandLog, Inbox
from agent.envelope import KIND_POLL, KIND_RESULT
from agent.transport import Transport, TransportError

log = logging.getLogger(__name__)


class CommandLink:
    def __init__(self, device: str, transport: Transport, uplink: Any, inbox: Inbox,
                 log_: CommandLog, clock: SystemClock, poll_interval: float = 30.0,
                 retry: float = 30.0, timeout: float = 15.0,
                 stop: threading.Event | None = None) -> None:
        self.device = device
        self.transport = transport
        self.uplink = uplink            # agent.uplink.Uplink: seal(), pending(), flush()
        self.inbox = inbox
        self.log = log_
        self.clock = clock
        self.poll_interval = poll_interval
        self.retry = retry
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.results_sent = 0
        self.push = False

    def __repr__(self) -> str:
        return "CommandLink(%r, push=%s, poll every %.0fs)" % (self.device, self.push,
                                                              self.poll_interval)

    def start(self) -> CommandLink:
        self.push = self.transport.listen(self.device, self.inbox.receive)
        self.uplink.on_commands = self.inbox.receive       # commands riding on batch acks
        self._thread = threading.Thread(target=self._run, name="wum-command-link", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """A result is ready: send it now."""
        self._wake.set()

    def close(self, timeout: float = 20.0) -> None:
        self.stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self.stop.is_set():
            try:
                ok = self.send_results()
                if not self.push and self.poll_interval > 0 and time.monotonic() >= next_poll:
                    self.poll()
                    next_poll = time.monotonic() + self.poll_interval
            except TransportError as e:
                ok = False
                log.info("command link: %s (%s); retrying in %.0fs", e, e.reason, self.retry)
            if not self.push and self.poll_interval > 0:
                wait = max(0.0, next_poll - time.monotonic())
                wait = wait if ok else min(wait, self.retry)
            else:
                wait = 3600.0 if ok else self.retry
            self._wake.wait(wait)
            self._wake.clear()

    def _batches_first(self) -> bool:
        """Send a batch sealed earlier first; False if one still waits."""
        if not self.uplink.pending():
            return True
        self.uplink.flush(self.stop)
        return not self.uplink.pending()

    def send_results(self) -> bool:
        """Every result not yet acknowledged, oldest first. True when none is left."""
        while not self.stop.is_set():
            docs = self.log.pending_results(16)
            if not docs:
                return True
            if not self._batches_first():
                return False
            for doc in docs:
                payload = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
                sealed = self.uplink.seal(payload, KIND_RESULT)
                try:
                    ack = self.transport.send_result(self.device, doc["counter"], sealed,
                                                     self.timeout)
                except TransportError as e:
                    if e.reason != "rejected":
                        raise
                    log.error("HES refused the result of command %s (counter %d): %s; not "
                              "sent again", doc["id"], doc["counter"], e.hes_reason)
                    self.log.count("results_rejected")
                else:
                    log.info("result of command %s (counter %d, %s) %s at the HES", doc["id"],
                             doc["counter"], doc["state"], ack.status)
                    self.results_sent += 1
                self.log.ack_result(doc["counter"], self.clock.now())
        return False

    def poll(self) -> int:
        """Ask the HES for pending commands; returns how many came."""
        if not self._batches_first():
            return 0
        sealed = self.uplink.seal(json.dumps({"ts": int(self.clock.now())}).encode(), KIND_POLL)
        polled = self.transport.poll(self.device, sealed, self.timeout)
        self.polls += 1
        for cmd in polled.commands:
            self.inbox.receive(cmd)
        return len(polled.commands)
