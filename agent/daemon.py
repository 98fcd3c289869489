"""``wum run``, ``wum status`` and ``wum archive``: the concentrator daemon and
what a field engineer asks of it.

Owns the hourly schedule (cycles aligned to the period boundary plus a
random jitter, buses read concurrently in worker threads, meters on a bus one
after another), the upload after each cycle, daily retention, and clean stop
on SIGTERM/SIGINT between transactions, and wiring signed commands
(``agent.commands*``: inbox, executor on the bus locks, delivery link) and
the remote configuration overlay. Must not know protocols (``cycle``) or
wire formats (``uplink``, ``command``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from typing import Any

from agent import AgentError
from agent.archive import Archive, ArchiveError
from agent.clock import ScaledClock, SystemClock, clock_from_env
from agent.config import Config, ConfigError, load, with_overlay
from agent.cycle import BusCycle, MeterResult
from agent.timefmt import parse_time
from agent.timefmt import rfc3339 as _rfc3339
from agent.timesync import CorrectedClock

log = logging.getLogger(__name__)
OVERLAY_KEY = "config_overlay"


def merge_overlays(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A later remote ``config`` adds to earlier ones: keys of ``schedule`` and
    ``retention`` and whole bus meter lists are replaced one by one."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in old.items()}
    for section, table in new.items():
        if isinstance(table, dict) and isinstance(out.get(section), dict):
            out[section].update(table)
        else:
            out[section] = table
    return out


def rfc3339(ts: float | None) -> str | None:
    return None if ts is None else _rfc3339(ts)


def open_archive(path: str) -> Archive:
    """Open the archive; a corrupt one is quarantined, never deleted.

    Defined behaviour: a file that SQLite cannot read, or whose integrity
    check fails, is renamed to ``<path>.corrupt-<UTC time>`` (with its WAL)
    and a fresh archive is started; the meters still hold their load profiles,
    so the first cycle backfills up to ``initial_backfill`` and nothing is lost
    that the meters keep. An archive of a newer schema is refused (exit 1).
    """
    a = Archive(path)
    try:
        a.open()
        check = a.conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in check] == ["ok"]:
            return a
        problem = "; ".join(str(r[0]) for r in check[:3])
        a.close()
    except ArchiveError as e:
        if "newer" in str(e):
            raise
        problem = str(e)
    except sqlite3.DatabaseError as e:
        a.close()
        problem = str(e)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, "%s.corrupt-%s%s" % (path, stamp, suffix))
    log.error("archive %s is corrupt (%s): kept as %s.corrupt-%s, starting a fresh archive; "
              "the meters' own memory backfills it", path, problem, path, stamp)
    return Archive(path).open()


class Daemon:
    def __init__(self, cfg: Config, clock: SystemClock, uplink: Any = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.archive = Archive(cfg.archive)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.uplink = uplink
        self.mesh: Any = None         # agent.mesh_agent.MeshAgent when [mesh] is configured
        self.cycles = 0
        self.retry_interval = 300.0   # simulated/real seconds between backlog retries
        self._last_retention_day = -1
        self.file_cfg = cfg           # the TOML alone; ``cfg`` has the remote overlay on it
        self.bus_locks: dict[str, threading.Lock] = {}
        self.commands: Any = None     # agent.commands_daemon.Commands when enabled
        self.exit_code = 0            # agent.update.RESTART after an update switched slots

    def open(self) -> Daemon:
        self.archive = open_archive(self.cfg.archive)
        self._load_overlay()
        if not isinstance(self.clock, ScaledClock):
            # Real time: trust NTP when synchronised, else the HES (see agent.timesync).
            self.clock = CorrectedClock(self.clock, self._hes_offset, self.cfg.time_source)
        if self.cfg.mesh is not None:
            from agent.mesh_agent import MeshAgent

            self.mesh = MeshAgent(self.cfg, self.archive, self.lock).start()
        if self.uplink is None and self.mesh is not None and self.mesh.transport is not None:
            from agent.uplink import Uplink

            self.uplink = Uplink.from_config(self.cfg, self.archive, self.clock, self.lock,
                                             self.mesh.transport)
        elif self.uplink is None and self.cfg.transport not in ("none", "mesh") and self.cfg.url:
            from agent.uplink import Uplink

            self.uplink = Uplink.from_config(self.cfg, self.archive, self.clock, self.lock)
        if self.uplink is not None and hasattr(self.uplink, "seal"):
            from agent.commands_daemon import Commands

            self.commands = Commands(self).start()
        return self

    # -- remote configuration (docs/agent.md, "Remote configuration") ---------
    def _load_overlay(self) -> None:
        raw = self.archive.meta(OVERLAY_KEY)
        if not raw:
            return
        try:
            self.cfg = with_overlay(self.file_cfg, json.loads(raw.decode()))
            log.info("remote configuration overlay in force: %s", raw.decode())
        except (ValueError, ConfigError) as e:
            log.error("stored remote configuration overlay unusable (%s): running on the TOML "
                      "alone", e)

    def apply_config(self, overlay: dict[str, Any]) -> dict[str, Any]:
        """Merge ``overlay`` into the stored one, validate it against the TOML,
        persist it, and let the next cycle run on it. Raises ``ConfigError``."""
        with self.lock:
            raw = self.archive.meta(OVERLAY_KEY)
        combined = merge_overlays(json.loads(raw.decode()) if raw else {}, overlay)
        cfg = with_overlay(self.file_cfg, combined)
        with self.lock:
            self.archive.set_meta(OVERLAY_KEY, json.dumps(combined, sort_keys=True).encode())
        self.cfg = cfg
        log.warning("remote configuration applied: %s", json.dumps(combined, sort_keys=True))
        return combined

    def request_restart(self) -> None:
        """Stop after the current transaction and exit ``RESTART``: the
        launcher boots the slot an update just switched to."""
        from agent.update import RESTART
        self.exit_code = RESTART
        self.stop.set()

    def _hes_offset(self) -> float | None:
        with self.lock:
            raw = self.archive.meta("hes_clock_offset")
        return float(raw.decode()) if raw else None

    def next_start(self, now: float) -> float:
        period = self.cfg.period
        boundary = (int(now) // period + 1) * period
        return boundary + random.uniform(0, self.cfg.jitter)

    async def run_cycle(self) -> list[MeterResult]:
        started = self.clock.now()
        with self.lock:
            cid = self.archive.begin_cycle(started)
        buses = [BusCycle(b, self.cfg, self.archive, self.clock, self.stop, self.lock,
                          self.bus_locks.setdefault(b.name, threading.Lock()))
                 for b in self.cfg.buses]
        per_bus = await asyncio.gather(*(asyncio.to_thread(b.run, cid) for b in buses))
        results = [r for rs in per_bus for r in rs]
        finished = self.clock.now()     # not under the lock: now() may read the archive
        with self.lock:
            self.archive.end_cycle(cid, finished)
        self.cycles += 1
        ok = sum(r.status == "read" for r in results)
        log.info("cycle %d: %d/%d meters read, %d rows", cid, ok, len(results),
                 sum(r.rows for r in results))
        if self.uplink is not None and not self.stop.is_set():
            await asyncio.to_thread(self.uplink.flush, self.stop)
        if self.mesh is not None:
            await asyncio.to_thread(self.mesh.persist)
        if self.commands is not None:    # an update on trial: this may prove it healthy
            self.commands.updater.after_cycle(ok > 0, int(getattr(self.uplink, "last_acked",
                                                                  -1)))
        now = self.clock.now()
        day = int(now) // 86400
        if day != self._last_retention_day:
            with self.lock:
                self.archive.apply_retention(now, self.cfg.retention_days)
            self._last_retention_day = day
        return results

    async def run(self, cycles: int | None = None, at_start: bool = True) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass
        if at_start:
            await self.run_cycle()
        while not self.stop.is_set() and (cycles is None or self.cycles < cycles):
            start = self.next_start(self.clock.now())
            last_try = self.clock.now()
            while not self.stop.is_set():
                wait = self.clock.wall_seconds(start - self.clock.now())
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, 0.5))
                self._check_mesh()
                if self.uplink is not None and self.clock.now() - last_try >= self.retry_interval:
                    # Between cycles, retry a backlog (the link may be back).
                    last_try = self.clock.now()
                    with self.lock:
                        pending = self.archive.backlog()["batches_pending"]
                    if pending:
                        await asyncio.to_thread(self.uplink.flush, self.stop)
            if self.stop.is_set():
                break
            await self.run_cycle()
        log.info("stopped after %d cycles", self.cycles)

    def _check_mesh(self) -> None:
        """A mesh IO loop that died is a daemon failure (exit 1: systemd restarts
        it), not a concentrator that silently stops relaying."""
        failure = self.mesh.service.failure if self.mesh is not None else None
        if failure is not None:
            raise AgentError("mesh IO loop failed: %r" % failure)

    def _on_signal(self, sig: int) -> None:
        log.warning("signal %d: stopping after the current transaction", sig)
        self.stop.set()

    def close(self) -> None:
        if self.commands is not None:
            self.commands.close()
        if self.uplink is not None:
            self.uplink.close()
        if self.mesh is not None:
            self.mesh.stop()
            self.mesh = None
        self.archive.close()


# -- commands ---------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from agent import logs

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print("wum: %s" % e, file=sys.stderr)
        return 2
    logs.setup(args.verbose or 1, json_lines=args.log_json, file=cfg.log_file)
    clock = ScaledClock.from_spec(args.clock) if args.clock else clock_from_env()
    d = Daemon(cfg, clock)
    try:
        d.open()
        asyncio.run(d.run(cycles=args.cycles, at_start=not args.no_initial))
    except AgentError as e:
        log.error("%s", e)
        print("wum: %s" % e, file=sys.stderr)
        return 1
    finally:
        d.close()
    return d.exit_code


def status(cfg: Config) -> dict[str, Any]:
    a = Archive(cfg.archive).open()
    try:
        meters = a.last_results()
        out: dict[str, Any] = {
            "concentrator": cfg.concentrator_id,
            "archive": a.stats(),
            "backlog": a.backlog(),
            "meters": [{**m, "started": rfc3339(m["started"])} for m in meters],  # type: ignore[arg-type]
            "failures": [m for m in meters if m["status"] in ("failed", "partial")],
        }
        from agent.mesh_cli import status_mesh

        out["neighbours"], out["mesh"] = status_mesh(cfg, a)
        for k in ("oldest", "newest"):
            out["archive"][k] = rfc3339(out["archive"][k])
        hes_offset = a.meta("hes_clock_offset")
        out["clock"] = {"hes_offset": float(hes_offset.decode()) if hes_offset else None}
        from agent.commands import CommandLog

        out["commands"] = CommandLog(a, threading.Lock()).status(clock_from_env().now())
        overlay = a.meta(OVERLAY_KEY)
        out["config_overlay"] = json.loads(overlay.decode()) if overlay else None
        return out
    finally:
        a.close()


def cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        st = status(cfg)
    except AgentError as e:
        print("wum: %s" % e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    ar = st["archive"]
    print("concentrator %s  archive %s: %.1f MB, %d rows, %s .. %s" % (
        st["concentrator"], ar["path"], ar["bytes"] / 1e6, ar["rows"], ar["oldest"], ar["newest"]))
    b = st["backlog"]
    print("upload backlog: %d batches (%d bytes) pending, %d rows not yet batched" % (
        b["batches_pending"], b["bytes_pending"], b["rows_unbatched"]))
    m = st["mesh"]
    if m is not None:
        print("mesh: %s%s, gateway %s via %s, cost %s, %d neighbour(s)%s" % (
            m["role"], " (acting gateway)" if m.get("gateway_active") else "",
            m.get("gateway") or "-", m.get("parent") or "-",
            "-" if m.get("cost") is None else m["cost"], len(st["neighbours"]),
            "" if m["running"] else " (daemon not running; as of %s)" % m["as_of"]))
    c = st["commands"]
    print("commands: %d received, %d executed, %d failed, %d refused %s, %d results unsent" % (
        c["received"], c["executed"], c["failed"], c["refused_total"],
        json.dumps(c["refused"], sort_keys=True), c["results_pending"]))
    print("%-6s %-8s %-12s %-6s %-10s %-9s %-8s %s" % (
        "meter", "bus", "protocol", "addr", "serial", "status", "clock", "error"))
    for m in st["meters"]:
        off = m["clock_offset"]
        print("%-6s %-8s %-12s %-6s %-10s %-9s %-8s %s" % (
            m["meter"], m["bus"], m["protocol"], m["address"], m["serial"] or "-",
            m["status"] or "-", "%+.1fs" % off if off is not None else "-", m["error"] or ""))
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        a = Archive(cfg.archive).open()
    except AgentError as e:
        print("wum: %s" % e, file=sys.stderr)
        return 2
    try:
        ids = {str(m["id"]): int(m["id"]) for m in a.meters()}  # type: ignore[call-overload]
        ids.update({str(m["serial"]): int(m["id"]) for m in a.meters() if m["serial"]})  # type: ignore[call-overload]
        meter = None
        if args.meter:
            if args.meter not in ids:
                print("wum: no meter %r in the archive" % args.meter, file=sys.stderr)
                return 2
            meter = ids[args.meter]
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        rows = a.rows(meter, start, end)
        fmt = "csv" if args.action == "export" and args.format == "csv" else "json"
        out = open(args.output, "w", newline="") if args.output else sys.stdout
        try:
            if fmt == "json":
                for r in rows:
                    out.write(json.dumps({"meter": a.serial(r.meter), "ts": rfc3339(r.ts),
                                          "kind": "profile" if r.kind == 0 else "snapshot",
                                          "values": r.values}) + "\n")
            else:
                w = csv.writer(out)
                w.writerow(["meter", "ts", "kind", "obis", "value"])
                for r in rows:
                    serial = a.serial(r.meter)
                    kind = "profile" if r.kind == 0 else "snapshot"
                    for k, v in r.values.items():
                        w.writerow([serial, rfc3339(r.ts), kind, k, v])
        finally:
            if args.output:
                out.close()
    finally:
        a.close()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the concentrator daemon (hourly cycles, upload)",
                       description="Read every configured meter each period, archive, upload; "
                       "with [mesh], run the mesh node (relay, gateway) and its control socket.")
    p.add_argument("--config", required=True, help="agent TOML file")
    p.add_argument("--cycles", type=int, help="stop after N scheduled cycles (default: forever)")
    p.add_argument("--no-initial", action="store_true", help="do not run a cycle at start")
    p.add_argument("--clock", help="simulated clock 't0,w0,speed' (demos and tests)")
    p.add_argument("--log-json", action="store_true", help="JSON-lines logs on stderr")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="last cycle per meter, failures, archive, backlog, clocks",
                       description="What a field engineer asks first.")
    p.add_argument("--config", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("archive", help="show or export archived readings",
                       description="Rows of the local archive, by meter and time range.")
    p.add_argument("action", choices=("show", "export"))
    p.add_argument("--config", required=True)
    p.add_argument("--meter", help="meter serial or archive id")
    p.add_argument("--from", dest="start", help="RFC 3339 start (inclusive)")
    p.add_argument("--to", dest="end", help="RFC 3339 end (inclusive)")
    p.add_argument("--format", choices=("csv", "json"), default="json")
    p.add_argument("-o", "--output", help="file (default: stdout)")
    p.set_defaults(func=cmd_archive)
