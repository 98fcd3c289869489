"""Executing verified commands on the meters, one at a time, between reads.

Owns what each op does through the meter drivers (docs/command-format.md,
*Operations*), what each protocol can do (DLMS: everything; Modbus: what its
device profile's ``controls`` declare — ``relay`` for disconnect/reconnect,
``clock`` for time; IEC 62056-21: read and time), the read-back that makes a
result, and the bus discipline: a command takes the bus's lock, so it runs
between two meters of a cycle, never during a read. An op a meter cannot do
fails ``unsupported`` before any byte is sent — never a silent no-op.

The counter is already committed (``agent.commands``); here the command is
marked ``running`` durably before the first byte goes to a meter, so a crash
mid-command is ``interrupted``, never a second execution. Must not know
transports or envelopes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from agent import AgentError
from agent.archive import Archive
from agent.clock import SystemClock
from agent.command import Command
from agent.command_args import ArgsError, check_args
from agent.commands import EXECUTED, FAILED, CommandLog
from agent.config import BusConfig, Config, ConfigError, MeterConfig
from agent.cycle import BusCycle
from agent.update import Deferred, UpdateFailed
from drivers import DriverError, Unsupported

log = logging.getLogger(__name__)

RELAY_OBIS = "0.0.96.3.10.255"
CONTROL_STATES = {0: "disconnected", 1: "connected", 2: "ready_for_reconnection"}
DLMS_OPS = frozenset({"disconnect", "reconnect", "read", "tariff", "limit", "time"})


class Failed(AgentError):
    """A command that cannot be executed; ``reason`` is the result's reason."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason=reason)


def capabilities(m: MeterConfig) -> frozenset[str]:
    """The meter ops ``m`` can execute, from its protocol and device profile."""
    if m.protocol == "dlms":
        return DLMS_OPS
    if m.protocol == "modbus":
        from drivers.modbus.profile import load
        try:
            controls = load(m.profile or "generic").controls
        except DriverError:
            return frozenset({"read"})
        ops = {"read"}
        if "relay" in controls:
            ops |= {"disconnect", "reconnect"}
        if "clock" in controls:
            ops.add("time")
        return frozenset(ops)
    return frozenset({"read", "time"})          # IEC 62056-21: readout, R1, W1 clock


class Executor:
    """A worker thread that runs queued commands. ``config()`` gives the live
    configuration; ``apply_config(overlay)`` persists and applies a remote
    ``config`` (returns the overlay in force); ``on_result()`` is told when a
    result is ready to send."""

    def __init__(self, config: Callable[[], Config], archive: Archive, lock: threading.Lock,
                 clock: SystemClock, log_: CommandLog, bus_locks: dict[str, threading.Lock],
                 on_result: Callable[[], None] = lambda: None,
                 apply_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 stop: threading.Event | None = None,
                 update: Callable[[Command], dict[str, Any]] | None = None) -> None:
        self.config = config
        self.archive = archive
        self.lock = lock
        self.clock = clock
        self.log = log_
        self.bus_locks = bus_locks
        self.on_result = on_result
        self.apply_config = apply_config
        self.update = update          # agent.update.Updater.run when updates are possible
        self.stop = stop or threading.Event()
        self._queue: queue.Queue[Command | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return "Executor(%d queued)" % self._queue.qsize()

    # -- the worker ------------------------------------------------------------
    def submit(self, cmd: Command) -> None:
        self._queue.put(cmd)

    def start(self) -> Executor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="wum-commands", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _work(self) -> None:
        while True:
            cmd = self._queue.get()
            if cmd is None or self.stop.is_set():
                return      # what is left stays 'accepted': resumed at the next start
            try:
                self.run(cmd)
            except AgentError as e:         # the archive failed: the command stays committed
                log.error("command %s (counter %d) not finished: %s", cmd.id, cmd.counter, e)

    # -- one command -----------------------------------------------------------
    def run(self, cmd: Command) -> dict[str, Any]:
        """Execute ``cmd`` (already committed) and store its result."""
        state, reason, result = EXECUTED, None, None
        try:
            result = self._execute(cmd)
        except Deferred:        # an update on trial: the new version reports the outcome
            return {}
        except UpdateFailed as e:
            state, reason = FAILED, e.reason
        except Failed as e:
            state, reason = FAILED, e.reason
        except ArgsError as e:
            state, reason = FAILED, "bad_args: %s" % e
        except Unsupported as e:
            state, reason = FAILED, "unsupported: %s" % e
        except DriverError as e:
            state, reason = FAILED, "meter_error: %s" % e
        doc = self.log.finish(cmd.counter, state, reason, result, self.clock.now())
        log.log(logging.INFO if state == EXECUTED else logging.WARNING,
                "command %s (%s %s, counter %d) %s%s", cmd.id, cmd.op, cmd.meter or "-",
                cmd.counter, state, ": %s" % reason if reason else "")
        self.on_result()
        return doc

    def _execute(self, cmd: Command) -> dict[str, Any] | None:
        if self.clock.now() > cmd.expires:       # waited in the queue past its expiry
            raise Failed("expired")
        if cmd.op == "update":
            if self.update is None:
                raise Failed("unsupported: updates need the command link and [update] settings")
            self.log.mark_running(cmd.counter, self.clock.now())
            return self.update(cmd)
        args = check_args(cmd.op, cmd.args)
        if cmd.op == "config":
            return self._config(cmd, args)
        cfg = self.config()
        bus, meter, mid = self._find(cfg, cmd.meter)
        if cmd.op not in capabilities(meter):
            raise Failed("unsupported: %s meters%s cannot %s" % (
                meter.protocol, " with profile %s" % (meter.profile or "generic")
                if meter.protocol == "modbus" else "", cmd.op))
        lock = self.bus_locks.setdefault(bus.name, threading.Lock())
        with lock:
            self.log.mark_running(cmd.counter, self.clock.now())
            cycle = BusCycle(bus, cfg, self.archive, self.clock, self.stop, self.lock, lock)
            with cycle.session(meter, mid) as client:
                return self._op(cmd.op, args, client, meter, mid, cfg)

    def _find(self, cfg: Config, meter_id: str) -> tuple[BusConfig, MeterConfig, int]:
        """The configured meter the HES calls ``meter_id``: its serial (or name)
        as archived, or the fallback ``<bus>:<protocol>:<address>``."""
        with self.lock:
            known = {self.archive.serial(int(m["id"])): m  # type: ignore[call-overload]
                     for m in self.archive.meters()}
        where = known.get(meter_id)
        if where is not None:
            key = (str(where["bus"]), str(where["protocol"]), str(where["address"]))
        else:
            parts = meter_id.rsplit(":", 2)
            key = (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", "", "")
        for bus in cfg.buses:
            for m in bus.meters:
                if (bus.name, m.protocol, m.address) == key:
                    with self.lock:
                        mid = self.archive.meter_id(bus.name, m.protocol, m.address)
                    return bus, m, mid
        raise Failed("unknown_meter: %s is not on this concentrator's buses" % meter_id)

    def _op(self, op: str, args: dict[str, Any], client: Any, m: MeterConfig, mid: int,
            cfg: Config) -> dict[str, Any]:
        if op in ("disconnect", "reconnect"):
            return self._relay(client, m, op == "reconnect")
        if op == "time":
            return self._time(client)
        if op == "read":
            return self._read(client, mid, args, cfg)
        if op == "tariff":      # DLMS only (capabilities): write, read back, compare
            cal: dict[str, Any] = client.write_calendar(args)
            return cal
        if op == "limit":
            lim: dict[str, Any] = client.write_limiter(args)
            return lim
        raise Failed("unsupported: %s" % op)

    # -- the ops ---------------------------------------------------------------
    def _relay(self, client: Any, m: MeterConfig, connect: bool) -> dict[str, Any]:
        (client.reconnect if connect else client.disconnect)()
        if m.protocol == "dlms":
            output, control = client.relay_state()
            return {"output_state": bool(output),
                    "control_state": CONTROL_STATES.get(int(control), str(control))}
        values = {r.obis: r.value for r in client.read_registers([RELAY_OBIS])} \
            if RELAY_OBIS in {r.obis for r in client.profile.registers} else {}
        if RELAY_OBIS not in values:
            raise Failed("meter_error: relay written, but the profile maps no %s to read it "
                         "back" % RELAY_OBIS)
        on = bool(values[RELAY_OBIS])
        if on != connect:
            raise Failed("meter_error: relay reads back %s after the write" % (
                "connected" if on else "disconnected"))
        return {"output_state": on, "control_state": "connected" if on else "disconnected"}

    def _offset(self, client: Any) -> tuple[int, float]:
        before = self.clock.now()
        meter_ts = int(client.read_clock())
        after = self.clock.now()
        return meter_ts, meter_ts - (before + after) / 2      # as agent.cycle measures it

    def _time(self, client: Any) -> dict[str, Any]:
        """Set the meter clock from the concentrator's synchronised clock (the
        one ``agent.timesync`` keeps), then read it back."""
        t0, off0 = self._offset(client)
        client.set_clock(self.clock.now())
        t1, off1 = self._offset(client)
        return {"before": t0, "after": t1, "offset_before": round(off0, 3),
                "offset_after": round(off1, 3)}

    def _read(self, client: Any, mid: int, args: dict[str, Any], cfg: Config) -> dict[str, Any]:
        regs = client.read_registers(args.get("registers"))
        ts = int(self.clock.now())
        values = {r.obis: r.value for r in regs}
        rows: list[tuple[int, dict[str, Any]]] = []
        if "profile" in args:
            p = args["profile"]
            rows = [(r.ts, dict(r.values)) for r in client.read_load_profile(p["from"], p["to"])]
        with self.lock:
            stored = self.archive.store_meter_read(mid, cfg.period, (ts, values), rows, [])
        return {"readings": len(values) + sum(len(v) for _, v in rows),
                "registers": {k: v for k, v in values.items() if not isinstance(v, bytes)},
                "profile_rows": len(rows), "archived": stored}

    def _config(self, cmd: Command, args: dict[str, Any]) -> dict[str, Any]:
        if cmd.meter:
            raise Failed("bad_args: config is a concentrator-level op: the meter id must be "
                         "empty")
        if self.apply_config is None:
            raise Failed("unsupported: remote configuration is not enabled here")
        self.log.mark_running(cmd.counter, self.clock.now())
        try:
            return {"applied": self.apply_config(args)}
        except ConfigError as e:
            raise Failed("bad_args: %s" % e) from None
