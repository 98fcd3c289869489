"""Test helpers: a simulated district served in-process on pseudo-terminals,
and agent configs pointing at it. Used by the agent's integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.clock import ScaledClock
from hil.bus import Bus, FaultSpec
from hil.model import MeterModel
from hil.ports import open_port
from tests.mqtt_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
WUM = str(Path(sys.executable).parent / "wum")


def meter_for(protocol: str, model: MeterModel, address: int, clock):
    if protocol == "modbus":
        from hil.modbus_meter import ModbusMeter

        return ModbusMeter(model, address, clock, profile="generic")
    if protocol == "dlms":
        from hil.dlms_meter import DlmsMeter

        return DlmsMeter(model, address, clock)
    from hil.iec_meter import IecMeter

    # "WUm": a lower-case third letter announces the 20 ms reaction time of
    # IEC 62056-21 (instead of 200 ms), which keeps the big tests quick.
    return IecMeter(model, str(address), clock, manufacturer="WUm")


class District:
    """``buses`` = list of protocol lists, e.g. [["modbus"] * 8, ["dlms"] * 4]."""

    def __init__(self, buses: list[list[str]], t0: float, speed: float, seed: int = 3,
                 baud: int = 115200, faults: str = "") -> None:
        self.clock = ScaledClock(t0, speed)
        self.ports = []
        self.buses = []
        self.meters: list[tuple[int, str, int, MeterModel]] = []  # (bus, protocol, addr, model)
        idx = 0
        for b, protos in enumerate(buses):
            port = open_port("pty")
            devs = []
            for j, proto in enumerate(protos):
                idx += 1
                model = MeterModel(idx, seed=seed)
                addr = j + 1
                devs.append(meter_for(proto, model, addr, self.clock.now))
                self.meters.append((b, proto, addr, model))
            self.ports.append(port)
            self.buses.append(Bus(port, devs, baud=baud, pace=False,
                                  faults=FaultSpec.parse(faults, seed=b)))
        self.baud = baud

    def start(self) -> District:
        for b in self.buses:
            b.start()
        return self

    def stop(self) -> None:
        for b in self.buses:
            b.stop()
        for p in self.ports:
            p.close()

    def config(self, path: Path, archive: Path, uplink: str = "", key: str = "",
               transport: str = "none", extra: str = "", backfill: int = 86400) -> Path:
        lines = ['[concentrator]', 'id = "DC-TEST"', 'archive = "%s"' % archive,
                 '[schedule]', 'period = 3600', 'jitter = 0', 'meter_budget = 60',
                 'retries = 1', 'initial_backfill = %d' % backfill, extra,
                 '[uplink]', 'transport = "%s"' % transport]
        if uplink:
            lines += ['url = "%s"' % uplink, 'key = "%s"' % key]
        for b, port in enumerate(self.ports):
            lines += ['[[bus]]', 'name = "bus%d"' % (b + 1), 'port = "%s"' % port.agent_path,
                      'baud = %d' % self.baud, 'timeout = 0.5']
            for bb, proto, addr, _ in self.meters:
                if bb == b:
                    lines += ['[[bus.meter]]', 'address = "%d"' % addr,
                              'protocol = "%s"' % proto]
                    if proto == "iec62056-21":
                        lines.append('password = "00000000"')   # the simulator's default
        path.write_text("\n".join(lines) + "\n")
        return path


def run_agent(cfg: Path, clock: ScaledClock, cycles: int = 0, timeout: float = 120,
              extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WUM, "run", "--config", str(cfg), "--clock", clock.spec(),
                           "--cycles", str(cycles), *(extra or [])],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def start_agent(cfg: Path, clock: ScaledClock, cycles: int = 1000) -> subprocess.Popen[str]:
    """The agent in the background; its log goes to ``agent.log`` beside the config
    (a pipe nobody reads would fill up and stall it)."""
    log = open(cfg.parent / "agent.log", "a")
    return subprocess.Popen([WUM, "run", "--config", str(cfg), "--clock", clock.spec(),
                             "--cycles", str(cycles)], stdout=subprocess.DEVNULL,
                            stderr=log, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


HES = str(Path(sys.executable).parent / "hes-lite")


class HesProcess:
    """``hes-lite serve`` as a real process on a free port (restartable on the same port)."""

    def __init__(self, db: Path, device: str, key: str, port: int | None = None,
                 mqtt: str = "") -> None:
        self.db = "sqlite:///%s" % db
        self.port = port or free_port()
        self.mqtt = mqtt
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")
        subprocess.run([HES, "keys", "add", device, "--key", key, "--db", self.db], check=True,
                       capture_output=True)
        # a viewer token for the tests' API calls (the API needs one)
        self.token = subprocess.run([HES, "tokens", "add", "rig-%d" % self.port, "--role",
                                     "viewer", "--db", self.db], check=True, capture_output=True,
                                    text=True).stdout.strip()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> HesProcess:
        import time
        import urllib.request

        argv = [HES, "serve", "--db", self.db, "--http", "127.0.0.1:%d" % self.port]
        if self.mqtt:
            argv += ["--mqtt", self.mqtt]
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("hes-lite did not start: %s" % self.log.read_text()[-2000:])

    def get(self, path: str, timeout: float = 10):
        """GET an API route with the viewer token; the decoded JSON."""
        import json
        import urllib.request

        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def export_jsonl(self) -> list[dict]:
        import json

        out = subprocess.run([HES, "export", "--db", self.db, "--format", "jsonl", "-o", "-"],
                             capture_output=True, text=True, check=True)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def backlog(archive_path: Path) -> dict[str, int]:
    from agent.archive import Archive

    arc = Archive(str(archive_path)).open()
    try:
        return arc.backlog()
    finally:
        arc.close()


def drain(cfg: Path, clock: ScaledClock, archive_path: Path, deadline_s: float = 60) -> None:
    """Run one-cycle agents until the archive has nothing left to upload (the
    byte budget spreads a backlog over cycles; a HES may still be reconnecting)."""
    import time

    deadline = time.monotonic() + deadline_s
    while True:
        done = run_agent(cfg, clock, cycles=0)
        assert done.returncode == 0, done.stderr[-2000:]
        left = backlog(archive_path)
        if not left["batches_pending"] and not left["rows_unbatched"]:
            return
        assert time.monotonic() < deadline, left


def archived_rows(archive_path: Path) -> dict[tuple[str, int], dict]:
    """{(meter serial, ts): values} as the uplink merges them into batches."""
    from agent.archive import Archive

    arc = Archive(str(archive_path)).open()
    out: dict[tuple[str, int], dict] = {}
    for r in sorted(arc.rows(), key=lambda r: -r.kind):
        out.setdefault((arc.serial(r.meter), r.ts), {}).update(r.values)
    arc.close()
    return out


def hes_rows(lines: list[dict]) -> tuple[dict[tuple[str, int], dict], int]:
    from datetime import datetime

    out: dict[tuple[str, int], dict] = {}
    dup = 0
    for line in lines:
        ts = int(datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp())
        if (line["meter"], ts) in out:
            dup += 1
        out.setdefault((line["meter"], ts), {}).update(line["values"])
    return out, dup
