"""``wum demo``: the whole job on one machine, in accelerated time.

One process tree: HES-lite (``hes-lite serve``), a simulated RS-485 bus of
meters on a pseudo-terminal (``wum-hil simulate``) and the concentrator agent
(``wum run``), all sharing one simulated clock. Prints progress, ends by
itself, then checks that every reading the agent archived reached the HES
once and equal, and that every load-profile value equals the simulator's, and
prints a summary table. Owns orchestration only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.archive import PROFILE, Archive
from agent.clock import ScaledClock

DEVICE = "DC-DEMO"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("HES did not come up at %s" % url)
        time.sleep(0.1)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="wum-demo-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hes_db = "sqlite:///%s" % (self.work / "hes.db")
        self.key = os.urandom(32).hex()
        self.port = free_port()
        period = 3600
        now = time.time()
        # Start a minute before an hour boundary so the first scheduled cycle comes soon.
        self.t0 = (int(now) // period + 1) * period - 60
        self.clock = ScaledClock(self.t0, args.speed, w0=now)

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def start_hes(self) -> None:
        subprocess.run([_bin("hes-lite"), "keys", "add", DEVICE, "--key", self.key,
                        "--db", self.hes_db], check=True, stdout=subprocess.DEVNULL)
        # the API needs a token (issue 11): a viewer's, for the progress and the export
        self.token = subprocess.run([_bin("hes-lite"), "tokens", "add", "demo", "--role",
                                     "viewer", "--db", self.hes_db], check=True,
                                    capture_output=True, text=True).stdout.strip()
        log = open(self.work / "hes.log", "wb")
        self.spawn([_bin("hes-lite"), "serve", "--db", self.hes_db, "--http",
                    "127.0.0.1:%d" % self.port], stdout=log, stderr=log)
        _wait_http("http://127.0.0.1:%d/v1/health" % self.port, 30)
        self.say("HES-lite listening on 127.0.0.1:%d (%s)" % (self.port, self.hes_db))

    def start_bus(self) -> tuple[str, list[dict[str, Any]]]:
        a = self.args
        p = self.spawn([_bin("wum-hil"), "simulate", "--port", "pty", "--meters", str(a.meters),
                        "--protocol", a.protocol, "--seed", str(a.seed), "--baud", str(a.baud),
                        "--clock", self.clock.spec()],
                       stdout=subprocess.PIPE, stderr=open(self.work / "sim.log", "wb"))
        assert p.stdout is not None
        path = p.stdout.readline().decode().strip()
        meters = json.loads(p.stdout.readline().decode() or "[]")
        if not path:
            raise RuntimeError("simulator did not start; see %s" % (self.work / "sim.log"))
        if isinstance(meters, dict):
            meters = meters.get("meters", [])
        self.say("simulated bus: %d %s meters on %s" % (a.meters, a.protocol, path))
        return path, meters

    def write_config(self, port: str, meters: list[dict[str, Any]]) -> Path:
        lines = ['[concentrator]', 'id = "%s"' % DEVICE, 'archive = "archive.db"',
                 '[schedule]', 'period = 3600', 'jitter = 0', 'meter_budget = 600',
                 'retries = 2', 'initial_backfill = 21600',
                 # accelerated time: one real millisecond is ~1 simulated second
                 'clock_threshold = %d' % max(10, int(self.args.speed / 10)),
                 '[uplink]', 'transport = "http"', 'url = "http://127.0.0.1:%d"' % self.port,
                 'key = "%s"' % self.key,
                 '[[bus]]', 'name = "bus1"', 'port = "%s"' % port, 'baud = %d' % self.args.baud,
                 'timeout = 1.0', 'protocol = "%s"' % ("modbus" if self.args.protocol == "modbus"
                                                      else "dlms")]
        for m in meters:
            lines += ['[[bus.meter]]', 'address = "%s"' % m["address"],
                      'protocol = "%s"' % m["protocol"]]
            if m.get("profile"):
                lines.append('profile = "%s"' % m["profile"])
            if m["protocol"] == "iec62056-21":
                # the simulated meters' programming password (needed to set their clocks)
                lines.append('password = "%s"' % m.get("password", "00000000"))
        p = self.work / "agent.toml"
        p.write_text("\n".join(lines) + "\n")
        return p

    def run_agent(self, cfg: Path) -> int:
        a = self.args
        env = dict(os.environ)
        agent = self.spawn([_bin("wum"), "run", "--config", str(cfg), "--clock", self.clock.spec(),
                            "--cycles", str(a.hours), "--log-json"], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(self.work / "agent.log", "wb"))
        end_sim = self.t0 + 60 + a.hours * 3600
        last = -1
        stopping = False
        while agent.poll() is None:
            time.sleep(0.5)
            h = int((self.clock.now() - self.t0) // 3600)
            if h != last and h <= a.hours:
                last = h
                rows, hes = self.counts()
                self.say("  simulated %s  hour %2d/%d  archived %6d rows  HES %6d rows" % (
                    time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.clock.now())), h, a.hours,
                    rows, hes))
            if self.clock.now() > end_sim + 48 * 3600 and not stopping:
                # A safety valve only: slow buses make cycles lag, the agent catches up.
                stopping = True
                agent.send_signal(signal.SIGTERM)
        return agent.wait()

    def counts(self) -> tuple[int, int]:
        rows = 0
        try:
            arc = Archive(str(self.work / "archive.db")).open()
            rows = int(arc.stats()["rows"])  # type: ignore[call-overload]
            arc.close()
        except Exception:  # noqa: BLE001 - progress display only; the archive may be opening
            pass
        hes = 0
        try:
            with urllib.request.urlopen(self._api("/v1/health"), timeout=2) as r:
                h = json.load(r)
            hes = int(h.get("readings_rows", h.get("rows", 0)))
        except (OSError, ValueError):
            pass
        return rows, hes

    def _api(self, path: str) -> urllib.request.Request:
        return urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                      headers={"Authorization": "Bearer " + self.token})

    def hes_export(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self._api("/v1/export?format=jsonl"), timeout=60) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]

    def verify(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        from hil.model import MeterModel

        arc = Archive(str(self.work / "archive.db")).open()
        archived: dict[tuple[str, int], dict[str, Any]] = {}
        profile_ok = profile_bad = 0
        serial_index = {m.serial: i for i in range(1, self.args.meters + 1)
                        for m in [MeterModel(i, self.args.seed)]}
        for r in arc.rows():
            serial = arc.serial(r.meter)
            archived.setdefault((serial, r.ts), {}).update(r.values)
            if r.kind == PROFILE and serial in serial_index:
                model = MeterModel(serial_index[serial], self.args.seed)
                want = model.profile_row(r.ts)
                if all(want.get(k) == v for k, v in r.values.items()):
                    profile_ok += 1
                else:
                    profile_bad += 1
        stats = arc.stats()
        batches = arc.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0), "
                                   "SUM(acked IS NOT NULL) FROM batch").fetchone()
        arc.close()
        hes_rows = self.hes_export()
        at_hes: dict[tuple[str, int], dict[str, Any]] = {}
        dup = 0
        for line in hes_rows:
            ts = int(datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
                     .astimezone(UTC).timestamp())
            key = (line["meter"], ts)
            if key in at_hes:
                dup += 1
            at_hes.setdefault(key, {}).update(line["values"])
        missing = [k for k in archived if k not in at_hes]
        unequal = [k for k in archived if k in at_hes and at_hes[k] != archived[k]]
        return {"meters": len({k[0] for k in archived}), "archived_rows": stats["rows"],
                "archived_values": sum(len(v) for v in archived.values()),
                "hes_rows": len(at_hes), "hes_values": sum(len(v) for v in at_hes.values()),
                "missing_at_hes": len(missing), "unequal": len(unequal), "duplicates": dup,
                "profile_rows_equal_to_simulator": profile_ok, "profile_rows_differing": profile_bad,
                "batches": batches[0], "batches_acked": batches[2], "bytes_uploaded": batches[1]}

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def run(self) -> int:
        a = self.args
        self.say("wum demo: %d meters, %d simulated hours at %gx, work dir %s" % (
            a.meters, a.hours, a.speed, self.work))
        try:
            self.start_hes()
            port, meters = self.start_bus()
            cfg = self.write_config(port, meters)
            rc = self.run_agent(cfg)
            s = self.verify()
        finally:
            self.stop()
        self.summary(s)
        ok = (rc == 0 and s["hes_values"] > 0 and s["missing_at_hes"] == 0 and s["unequal"] == 0
              and s["duplicates"] == 0 and s["profile_rows_differing"] == 0)
        self.say("RESULT: %s" % ("OK: every archived reading is at the HES once and equal"
                                 if ok else "FAILED (agent rc=%d)" % rc))
        if not a.keep and ok and not a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        if a.json:
            print(json.dumps(s))
        return 0 if ok else 1

    def summary(self, s: dict[str, Any]) -> None:
        rows = [("meters", s["meters"]),
                ("readings archived (rows / values)", "%d / %d" % (s["archived_rows"],
                                                                   s["archived_values"])),
                ("readings at the HES (rows / values)", "%d / %d" % (s["hes_rows"],
                                                                     s["hes_values"])),
                ("missing / unequal / duplicated at HES", "%d / %d / %d" % (
                    s["missing_at_hes"], s["unequal"], s["duplicates"])),
                ("profile rows equal to the simulator", "%d (differing: %d)" % (
                    s["profile_rows_equal_to_simulator"], s["profile_rows_differing"])),
                ("batches uploaded (acked)", "%d (%d)" % (s["batches"], s["batches_acked"])),
                ("bytes uploaded", s["bytes_uploaded"])]
        w = max(len(k) for k, _ in rows)
        self.say("")
        self.say("+-%s-+-%s-+" % ("-" * w, "-" * 20))
        for k, v in rows:
            self.say("| %s | %20s |" % (k.ljust(w), v))
        self.say("+-%s-+-%s-+" % ("-" * w, "-" * 20))


def cmd_demo(args: argparse.Namespace) -> int:
    return Demo(args).run()


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: HES-lite + simulated meters + agent",
                       description="Run HES-lite, a simulated RS-485 bus on a pseudo-terminal and "
                       "the agent in accelerated time; print progress and a summary table.")
    p.add_argument("--meters", type=int, default=8, help="meters on the bus (default 8)")
    p.add_argument("--hours", type=int, default=6, help="simulated hours (default 6)")
    p.add_argument("--speed", type=float, default=600.0,
                   help="simulated seconds per real second (default 600: an hour in 6 s)")
    p.add_argument("--protocol", default="modbus", choices=("modbus", "dlms", "iec62056-21", "mix"))
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", help="keep everything in this directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.set_defaults(func=cmd_demo)
