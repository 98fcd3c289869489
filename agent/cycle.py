"""One reading cycle of one RS-485 bus: every meter, one after another.

Owns the per-meter procedure (identify once, registers, load profile since
the last stored row — the backfill after any outage —, events, clock check
and correction) with a per-meter time budget and bounded retries, and the
recording of each meter's result (read / partial / failed, with the error).
A Modbus meter that refuses a register its profile marks optional is still
"read": the skip is logged and noted in the result's error text on the cycle
it is found, and the refused OBIS codes are kept in the archive's meta
(``modbus_refused:<meter>``) so later cycles neither ask nor report again.
Runs in a worker thread (pyserial is blocking); buses run concurrently.

Must not know transports or how the HES stores things; knows drivers only
through ``drivers.<protocol>.open_client`` and ``drivers.meter.MeterClient``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.archive import Archive, ArchiveError
from agent.clock import SystemClock
from agent.config import BusConfig, Config, MeterConfig
from drivers import DriverError, Unsupported

log = logging.getLogger(__name__)
T = TypeVar("T")

CLOCK_SET_EVENT = 4096
IC_LEASE = 10000           # invocation counters reserved per DLMS session     # our own event code: the concentrator corrected the meter's clock
MODULES = {"dlms": "drivers.dlms", "iec62056-21": "drivers.iec62056_21", "modbus": "drivers.modbus"}


@dataclass
class MeterResult:
    meter: int
    address: str
    status: str               # read | partial | failed | skipped
    error: str | None
    duration: float
    rows: int
    clock_offset: float | None


def driver(protocol: str) -> Any:
    return importlib.import_module(MODULES[protocol])


class BusCycle:
    """Reads one bus. ``stop`` is checked between meters (SIGTERM is clean)."""

    def __init__(self, bus: BusConfig, cfg: Config, archive: Archive, clock: SystemClock,
                 stop: threading.Event | None = None, archive_lock: threading.Lock | None = None,
                 bus_lock: threading.Lock | None = None) -> None:
        self.bus = bus
        self.cfg = cfg
        self.archive = archive
        self.clock = clock
        self.stop = stop or threading.Event()
        self.lock = archive_lock or threading.Lock()
        # Held while one meter is read: commands (agent.commands_exec) run on
        # the bus between meters, never during a read.
        self.bus_lock = bus_lock or threading.Lock()

    def run(self, cycle: int) -> list[MeterResult]:
        if self.bus.meters and all(m.protocol == "modbus" for m in self.bus.meters):
            # One open port for the whole cycle instead of one per meter.
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(driver("modbus").hold_port(self.bus.port, self.bus.baud))
                except DriverError as e:
                    log.warning("bus %s: cannot hold %s open (%s); opening per meter",
                                self.bus.name, self.bus.port, e)
                return self._run(cycle)
        return self._run(cycle)

    def _run(self, cycle: int) -> list[MeterResult]:
        results: list[MeterResult] = []
        for m in self.bus.meters:
            if self.stop.is_set():
                break
            with self.bus_lock:
                results.append(self.read_meter(cycle, m))
        return results

    @contextlib.contextmanager
    def session(self, m: MeterConfig, mid: int) -> Iterator[Any]:
        """An open client of meter ``m`` (archive id ``mid``), closed after,
        with the DLMS invocation counter kept as a cycle keeps it. The caller
        holds ``bus_lock``."""
        client = self._open(m, mid)
        try:
            yield client
        finally:
            try:
                client.close()
                if m.protocol == "dlms" and m.ek:
                    self._save_counter(mid, client)
            except (DriverError, ArchiveError) as e:
                log.debug("closing meter %s/%s: %s", self.bus.name, m.address, e)

    def _open(self, m: MeterConfig, mid: int) -> Any:
        opts: dict[str, Any] = {"timeout": self.bus.timeout, "retries": self.cfg.retries}
        if m.protocol == "modbus":
            opts["profile"] = m.profile or "generic"
            opts["refused"] = self._refused(mid)
        elif m.protocol == "dlms":
            # drivers.dlms counts attempts, the others retransmissions
            opts.update(client=m.client, logical_device=m.logical_device, auth=m.auth,
                        retries=self.cfg.retries + 1)
            if m.password:
                opts["password"] = m.password
            if m.ek:
                opts.update(ek=m.ek, ak=m.ak, invocation_counter=self._lease_counter(mid))
        elif m.protocol == "iec62056-21" and m.password:
            opts["password"] = m.password
        return driver(m.protocol).open_client(self.bus.port, m.address, baud=self.bus.baud, **opts)

    def _lease_counter(self, mid: int) -> int:
        """The DLMS invocation counter to start from: a meter refuses one that
        does not grow, across our restarts too. The stored value is raised by a
        lease before use, so a power cut mid-session never replays a counter;
        a clean close stores the exact next value."""
        key = "dlms_ic:%d" % mid
        with self.lock:
            raw = self.archive.meta(key)
            start = int(raw.decode()) if raw else 1
            self.archive.set_meta(key, str(start + IC_LEASE).encode())
        return start

    def _refused(self, mid: int) -> list[str]:
        with self.lock:
            raw = self.archive.meta("modbus_refused:%d" % mid)
        return [o for o in raw.decode().split(",") if o] if raw else []

    def _note_skipped(self, m: MeterConfig, mid: int, client: Any) -> str | None:
        """Registers the meter refused for the first time: remember, log, note."""
        found = getattr(client, "skipped", None)
        if m.protocol != "modbus" or not isinstance(found, list) or not found:
            return None
        refused = sorted(set(self._refused(mid)) | set(getattr(client, "refused", ())))
        with self.lock:
            self.archive.set_meta("modbus_refused:%d" % mid, ",".join(refused).encode())
        note = "skipped refused optional register(s): %s" % ", ".join(
            "%s (%s)" % (name, reason) for name, reason in found)
        log.warning("meter %s/%s: %s", self.bus.name, m.address, note)
        return note

    def _save_counter(self, mid: int, client: Any) -> None:
        ic = getattr(client, "invocation_counter", None)
        if isinstance(ic, int):
            with self.lock:
                self.archive.set_meta("dlms_ic:%d" % mid, str(ic).encode())

    def read_meter(self, cycle: int, m: MeterConfig) -> MeterResult:
        t0 = time.monotonic()
        try:
            with self.lock:
                mid = self.archive.meter_id(self.bus.name, m.protocol, m.address)
        except ArchiveError as e:
            log.error("meter %s/%s skipped: %s", self.bus.name, m.address, e)
            return MeterResult(-1, m.address, "failed", "archive: %s" % e, 0.0, 0, None)
        errors: list[str] = []
        note: str | None = None
        rows = 0
        offset: float | None = None
        done = 0
        client = None
        try:
            client = self._open(m, mid)
            budget_end = t0 + self.cfg.meter_budget
            with self.lock:
                known = self.archive.serial(mid)
            if ":" in known:  # no serial stored yet
                ident = client.identify()
                with self.lock:
                    # No serial (e.g. a refused optional one): keep the fallback
                    # id, so status and `wum archive --meter` name it as batches do.
                    self.archive.set_identity(mid, ident.id or known, ident.manufacturer,
                                              ident.model)
            def attempt(name: str, fn: Callable[[Any, int], T]) -> T | None:
                nonlocal done
                if time.monotonic() > budget_end:
                    errors.append("budget of %.0fs exhausted before %s" % (
                        self.cfg.meter_budget, name))
                    return None
                try:
                    out = fn(client, mid)
                except Unsupported as e:
                    log.debug("meter %s/%s has no %s: %s", self.bus.name, m.address, name, e)
                    return None
                except DriverError as e:
                    errors.append("%s: %s" % (name, e))
                    log.warning("meter %s/%s %s failed: %s", self.bus.name, m.address, name, e,
                                extra=_extra(self.bus.name, m.address, e))
                    return None
                done += 1
                return out

            snapshot = attempt("registers", self._registers)
            profile = attempt("load profile", self._profile) or []
            events = attempt("events", self._events) or []
            clock = attempt("clock", self._clock)
            if clock is not None:
                offset = clock[0]
                events.extend(clock[1])
            with self.lock:
                rows = self.archive.store_meter_read(mid, self.cfg.period, snapshot, profile, events)
        except ArchiveError as e:
            # Disk full or archive trouble: the readings stay in the meter's own
            # memory and the next cycle backfills them from the last stored row.
            errors.append("archive: %s" % e)
            done = 0
            log.error("meter %s/%s read but not stored: %s", self.bus.name, m.address, e)
        except DriverError as e:
            errors.append(str(e))
            log.warning("meter %s/%s unreadable: %s", self.bus.name, m.address, e,
                        extra=_extra(self.bus.name, m.address, e))
        finally:
            if client is not None:
                try:
                    note = self._note_skipped(m, mid, client)
                except ArchiveError as e:
                    log.error("meter %s/%s: cannot remember refused registers: %s",
                              self.bus.name, m.address, e)
                try:
                    client.close()
                    if m.protocol == "dlms" and m.ek:
                        self._save_counter(mid, client)
                except (DriverError, ArchiveError) as e:
                    log.debug("closing meter %s/%s: %s", self.bus.name, m.address, e)
        status = "read" if not errors else ("partial" if done else "failed")
        res = MeterResult(mid, m.address, status, "; ".join(errors + ([note] if note else [])) or None,
                          time.monotonic() - t0, rows, offset)
        try:
            with self.lock:
                self.archive.record_result(cycle, mid, res.status, res.error, res.duration,
                                           res.clock_offset, res.rows)
        except ArchiveError as e:
            log.error("cannot record result of meter %s: %s", m.address, e)
        return res

    def _registers(self, client: Any, mid: int) -> tuple[int, dict[str, Any]]:
        regs = client.read_registers()
        ts = int(self.clock.now())
        return ts, {r.obis: r.value for r in regs}

    def _profile(self, client: Any, mid: int) -> list[tuple[int, dict[str, Any]]]:
        now = int(self.clock.now())
        with self.lock:
            last = self.archive.last_profile_ts(mid)
        floor = now - self.cfg.retention_days * 86400
        start = max(last + 1, floor) if last is not None else max(floor, now - self.cfg.initial_backfill)
        rows = client.read_load_profile(start, now)
        return [(r.ts, dict(r.values)) for r in rows if r.ts >= start]

    def _events(self, client: Any, mid: int) -> list[tuple[int, int]]:
        now = int(self.clock.now())
        with self.lock:
            last = self.archive.last_event_ts(mid)
        start = last + 1 if last is not None else now - self.cfg.initial_backfill
        return [(e.ts, e.code) for e in client.read_events(start, now)]

    def _clock(self, client: Any, mid: int) -> tuple[float, list[tuple[int, int]]]:
        before = self.clock.now()
        meter_ts = client.read_clock()
        now = self.clock.now()
        # The meter sampled its clock somewhere in the round trip: compare with the middle.
        offset = float(meter_ts - (before + now) / 2)
        events = []
        if abs(offset) > self.cfg.clock_threshold:
            client.set_clock(self.clock.now())
            log.info("meter clock off by %.1fs (threshold %.0fs): set", offset,
                     self.cfg.clock_threshold)
            events.append((int(now), CLOCK_SET_EVENT))
        return offset, events


def _extra(bus: str, address: str, e: DriverError) -> dict[str, Any]:
    """Log fields of a protocol error: where, and the port's flight recorder."""
    frames = getattr(e, "flight", None) or e.fields.get("flight")
    return {"bus": bus, "meter": address, "frames": frames}
