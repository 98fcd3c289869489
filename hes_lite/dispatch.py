"""The command queue's moving parts inside ``hes-lite serve``: the MQTT push
and the housekeeping.

Owns, with an MQTT receiver: publishing each command, sealed, on
``wum/cmd/<device>`` (QoS 1) as soon as it is queued — through the API at
once (``push``, a ``CommandService.on_queued`` listener), from another
process (``hes-lite command …`` writes the store) at the next tick — and
marking it ``delivered`` when the broker acknowledged; publishing again
what is still unanswered when the device's next batch arrives
(``redeliver``) or, if the broker never acknowledged, after ``repush``
seconds. Always: marking ``expired`` what passed its expiry (``tick``).

A thread wakes every ``interval`` seconds (a housekeeping period, not
protocol timing). Must not know HTTP or SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from hes_lite import HesError
from hes_lite.commands import MAX_TTL, CommandService
from hes_lite.mqtt_receiver import CMD_TOPIC, MqttReceiver
from hes_lite.store import CommandRecord

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, commands: CommandService, receiver: MqttReceiver | None = None,
                 interval: float = 1.0, repush: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.commands = commands
        self.receiver = receiver
        self.interval = interval
        self.repush = repush
        self.monotonic = monotonic
        self._pushed: dict[str, float] = {}   # command id -> when this process last pushed it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if receiver is not None:
            commands.on_queued(self.push)

    def start(self) -> Dispatcher:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="hes-dispatch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except HesError as e:   # a busy or failing store: try again next tick
                log.warning("command housekeeping failed: %s", e)

    # -- the push -----------------------------------------------------------------
    def push(self, rec: CommandRecord) -> None:
        self._publish(rec.device, [rec])

    def redeliver(self, device: str) -> None:
        """``device`` is talking (a batch came): publish what it has not
        answered yet, unless it was pushed within ``repush`` seconds and
        never acknowledged by the broker (it is still on its way)."""
        now = self.monotonic()
        with self._lock:
            due = [r for r in self.commands.pending(device)
                   if r.state == "delivered" or now - self._pushed.get(r.id, -1e18) > self.repush]
        self._publish(device, due)

    def _publish(self, device: str, recs: Sequence[CommandRecord]) -> None:
        if self.receiver is None or not recs:
            return
        sealed = self.commands.seal(device, recs)
        now = self.monotonic()
        for rec, env in zip(recs, sealed, strict=False):
            with self._lock:
                self._pushed[rec.id] = now
            self.receiver.publish(CMD_TOPIC % device, env, self._acked(rec.id))
            log.info("command %s pushed to %s", rec.id, CMD_TOPIC % device)

    def _acked(self, command_id: str) -> Callable[[], None]:
        def done() -> None:
            try:
                self.commands.delivered([command_id])
            except HesError as e:
                log.warning("command %s: cannot mark delivered: %s", command_id, e)
        return done

    # -- housekeeping ---------------------------------------------------------------
    def tick(self) -> None:
        self.commands.expire()
        if self.receiver is None:
            return
        now = self.monotonic()
        todo: dict[str, list[CommandRecord]] = {}
        with self._lock:
            for rec in self.commands.store.open_commands(None, self.commands.clock(), 256):
                last = self._pushed.get(rec.id)
                if rec.state == "queued" and (last is None or now - last > self.repush):
                    todo.setdefault(rec.device, []).append(rec)
            for cid in [c for c, t in self._pushed.items() if now - t > MAX_TTL + 3600]:
                del self._pushed[cid]
        for device, recs in todo.items():
            try:
                self._publish(device, recs)
            except HesError as e:
                log.warning("push to %s failed: %s", device, e)
