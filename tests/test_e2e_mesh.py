"""End to end over the mesh (issue 10): `hes-lite serve`, five `wum run`
agents — each with its own simulated bus on a pty, accelerated clock —
chained node-node-node-node-gateway over UDP on loopback, 10 % of the
datagrams each agent receives dropped (the UDP link's ``loss``)::

    DC-0001 - DC-0002 - DC-0003 - DC-0004 - DC-0005 (gateway, HTTP to the HES)
                                      |
                                   DC-0006 (role auto, HTTP; joins later)

1. every node's batches reach the HES through up to four relays;
2. the middle relay (DC-0003) is killed (SIGKILL) for three simulated hours
   and restarted: the nodes behind it keep their batches and deliver them;
3. DC-0006 joins, the gateway DC-0005 is killed: traffic moves to DC-0006
   without anyone telling it to; an operator's disconnect reaches a meter of
   DC-0001 four hops away and its result comes back; DC-0005 returns.

Then the meters go quiet and the backlogs drain, and every archived reading
of every concentrator is at the HES exactly once and equal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from agent.mesh_control import ControlError, request, socket_path
from tests.agent_rig import (
    HES,
    ROOT,
    WUM,
    District,
    HesProcess,
    archived_rows,
    backlog,
    hes_rows,
)

T0 = 1795910400 + 1800
SPEED = 2400.0                 # one simulated hour = 1.5 s
HOUR = 3600 / SPEED
IDS = ["DC-%04d" % i for i in range(1, 7)]
LINKS = {0: [1], 1: [0, 2], 2: [1, 3], 3: [2, 4, 5], 4: [3], 5: [3]}


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Chain:
    def __init__(self, tmp: Path, hes: HesProcess, district: District, keys: list[str],
                 verify_key: str) -> None:
        self.tmp = tmp
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.cfgs: list[Path] = []
        net = os.urandom(32).hex()
        ports = [udp_port() for _ in IDS]
        for i, ident in enumerate(IDS):
            d = tmp / ident
            d.mkdir()
            role = {4: "gateway", 5: "auto"}.get(i, "node")
            lines = ['[concentrator]', 'id = "%s"' % ident, 'archive = "%s"' % (d / "archive.db"),
                     '[schedule]', 'period = 3600', 'jitter = 0', 'meter_budget = 30',
                     'retries = 1', 'initial_backfill = 7200',
                     '[uplink]', 'key = "%s"' % keys[i]]
            if role == "node":
                lines.append('transport = "mesh"')
            else:
                lines += ['transport = "http"', 'url = "%s"' % hes.url]
            lines += ['[mesh]', 'role = "%s"' % role, 'network_key = "%s"' % net,
                      'members = [%s]' % ", ".join('"%s"' % x for x in IDS),
                      '[[mesh.link]]', 'kind = "udp"', 'listen = "127.0.0.1:%d"' % ports[i],
                      'peers = [%s]' % ", ".join('"127.0.0.1:%d"' % ports[j] for j in LINKS[i]),
                      'loss = 0.1', 'seed = %d' % i,
                      # commands ride on batch acks over the mesh (no idle polls)
                      '[commands]', 'verify_key = "%s"' % verify_key, 'poll_interval = 0',
                      '[[bus]]', 'name = "bus1"', 'port = "%s"' % district.ports[i].agent_path,
                      'baud = %d' % district.baud, 'timeout = 0.5']
            for b, _, addr, _ in district.meters:
                if b == i:
                    lines += ['[[bus.meter]]', 'address = "%d"' % addr, 'protocol = "modbus"']
            cfg = d / "agent.toml"
            cfg.write_text("\n".join(lines) + "\n")
            self.cfgs.append(cfg)
        self.clock = district.clock

    def start(self, i: int) -> None:
        log = open(self.cfgs[i].parent / "agent.log", "a")
        self.procs[i] = subprocess.Popen(
            [WUM, "run", "--config", str(self.cfgs[i]), "--clock", self.clock.spec()],
            stdout=subprocess.DEVNULL, stderr=log, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def kill(self, i: int) -> None:
        p = self.procs.pop(i)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for i, p in list(self.procs.items()):
            try:
                assert p.wait(timeout=30) == 0, self.log(i)
            except subprocess.TimeoutExpired:
                p.kill()
                raise
        self.procs.clear()

    def archive(self, i: int) -> Path:
        return self.cfgs[i].parent / "archive.db"

    def log(self, i: int) -> str:
        return (self.cfgs[i].parent / "agent.log").read_text()[-3000:]

    def stats(self, i: int) -> dict:
        """Agent i's mesh stats over its control socket; {} while it does not answer."""
        try:
            doc = request(socket_path(str(self.archive(i))), {"op": "stats"}, timeout=5)
        except ControlError:
            return {}
        return doc.get("stats", {})

    def wum_mesh(self, i: int, action: str) -> dict:
        out = subprocess.run([WUM, "mesh", action, "--config", str(self.cfgs[i]), "--json"],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def gateway(self, i: int) -> str | None:
        return self.stats(i).get("gateway")

    def pending(self) -> dict[str, int]:
        out = {}
        for i, ident in enumerate(IDS):
            b = backlog(self.archive(i))
            out[ident] = b["batches_pending"] + b["rows_unbatched"]
        return out


def wait_for(what, deadline_s: float, every: float = 0.5):
    end = time.monotonic() + deadline_s
    while True:
        got = what()
        if got or time.monotonic() > end:
            return got
        time.sleep(every)


def command(hes: HesProcess, token: str, meter: str, op: str) -> dict:
    req = urllib.request.Request(
        hes.url + "/v1/commands", method="POST",
        data=json.dumps({"meter": meter, "op": op, "args": {}}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        return json.load(r)


def ended(hes: HesProcess, cid: str) -> dict | None:
    obj = hes.get("/v1/commands/" + cid)
    return obj if obj["state"] in ("executed", "failed", "expired") else None


@pytest.mark.slow
def test_five_agents_chained_over_lossy_udp(tmp_path):
    keys = [os.urandom(32).hex() for _ in IDS]
    hes = HesProcess(tmp_path / "hes.db", IDS[0], keys[0])
    for ident, key in zip(IDS[1:], keys[1:], strict=True):
        subprocess.run([HES, "keys", "add", ident, "--key", key, "--db", hes.db], check=True,
                       capture_output=True)
    operator = subprocess.run([HES, "tokens", "add", "ops", "--role", "operator", "--db",
                               hes.db], check=True, capture_output=True, text=True).stdout.strip()
    verify_key = subprocess.run([HES, "keys", "command-key", "--db", hes.db], check=True,
                                capture_output=True, text=True).stdout.strip()
    hes.start()
    district = District([["modbus"] * 2] * len(IDS), t0=T0, speed=SPEED).start()
    chain = Chain(tmp_path, hes, district, keys, verify_key)
    try:
        for i in range(5):
            chain.start(i)
        # 1. the chain works: the farthest node's batches arrive through four relays
        acked = wait_for(lambda: chain.gateway(0) == IDS[4], 30)
        assert acked, chain.log(0)
        time.sleep(3 * HOUR)
        assert wait_for(lambda: backlog(chain.archive(0))["batches_pending"] == 0, 30), \
            chain.log(0)
        # 2. the middle relay dies for three simulated hours, then returns
        chain.kill(2)
        time.sleep(3 * HOUR)
        behind = backlog(chain.archive(0))
        assert behind["batches_pending"] + behind["rows_unbatched"] > 0   # it had to wait
        chain.start(2)
        assert wait_for(lambda: backlog(chain.archive(0))["batches_pending"] == 0
                        and backlog(chain.archive(1))["batches_pending"] == 0, 45), \
            (chain.pending(), chain.log(0))
        # 3. a second gateway joins beside DC-0004; the first dies
        chain.start(5)
        assert wait_for(lambda: any(r["gateway"] == IDS[5] for r in
                                    chain.stats(3).get("routes", [])), 30), chain.log(3)
        chain.kill(4)
        assert wait_for(lambda: chain.gateway(0) == IDS[5], 60), chain.stats(0)
        forwarded = wait_for(
            lambda: chain.stats(5).get("forwarding", {}).get("accepted", 0) > 0, 45)
        assert forwarded, chain.log(5)
        routes = chain.wum_mesh(0, "routes")                 # what the field engineer sees
        assert routes["gateway"] == IDS[5] and routes["parent"] == IDS[1]
        # an operator's disconnect for a meter four hops away: down with a batch ack,
        # executed on the simulated meter, the result up through the mesh
        model = next(m for b, _, _, m in district.meters if b == 0)
        cmd = command(hes, operator, model.serial, "disconnect")
        done = wait_for(lambda: ended(hes, cmd["id"]), 45)
        assert done and done["state"] == "executed", (done, chain.log(0))
        assert not model.relay_connected
        chain.start(4)                                  # the first gateway comes back
        # up (its control socket answers) before the drain below may find nothing
        # pending at once and SIGTERM it mid-start-up (exit -15, not 0)
        assert wait_for(lambda: chain.stats(4), 30), chain.log(4)
        # the meters go quiet; everything archived drains
        for bus in district.buses:
            bus.stop()
        assert wait_for(lambda: not any(chain.pending().values()), 60, every=1.0), \
            chain.pending()
        chain.stop_all()
        want = {}
        for i in range(len(IDS)):
            rows = archived_rows(chain.archive(i))
            assert rows, "nothing archived at %s" % IDS[i]
            want.update(rows)
        got, dup = hes_rows(hes.export_jsonl())
        assert dup == 0
        missing = [k for k in want if k not in got]
        assert not missing, "missing at the HES: %s" % missing[:5]
        assert not [k for k in want if got[k] != want[k]]
        assert set(got) == set(want)
    finally:
        for p in chain.procs.values():
            p.kill()
            p.wait()
        district.stop()
        hes.stop()
