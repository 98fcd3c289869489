"""Command latency, end to end: the time from ``POST /v1/commands`` to the
command being ``executed`` at the HES, for disconnect/reconnect of a
simulated meter's relay, over MQTT push and over HTTP (batch ack / idle
poll), with the agent online; plus the agent's cost to verify one command
(bench/command_verify.py: CPython with ``cryptography``, pure Python, and the
MicroPython WebAssembly runner). Prints one JSON document.

Real processes: ``hes-lite serve`` (with ``--mqtt`` against a Mosquitto this
script starts), ``wum run`` with its meters simulated on a pseudo-terminal
(Modbus meters whose profile maps the relay, as tests/test_e2e_commands.py).
Commands go one at a time (POST, then poll the command until it ends), the
agent's disconnect rate limit raised out of the way, its idle poll every
``--poll`` seconds (HTTP: the latency is mostly that interval; batches come
once an hour of the accelerated clock and carry pending commands too).

    .venv/bin/python bench/command_latency.py [--commands 50] [--poll 1.0]
                                              [--transports mqtt,http]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.agent_rig import HES, District, HesProcess, start_agent  # noqa: E402
from tests.mqtt_broker import MosquittoBroker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T0 = 1795910400 + 3000


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def _cli(db: str, *args: str) -> str:
    return subprocess.run([HES, *args, "--db", db], check=True, capture_output=True,
                          text=True).stdout.strip()


def _post(hes: HesProcess, token: str, meter: str, op: str) -> str:
    req = urllib.request.Request(hes.url + "/v1/commands", method="POST",
                                 data=json.dumps({"meter": meter, "op": op}).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.load(r)["id"])


def run(transport: str, n: int, poll: float, work: Path) -> dict[str, Any]:
    key = os.urandom(32).hex()
    broker = MosquittoBroker().start() if transport == "mqtt" else None
    hes = HesProcess(work / ("hes-%s.db" % transport), "DC-TEST", key,
                     mqtt=broker.url + "?client_id=hes-bench" if broker else "")
    token = _cli(hes.db, "tokens", "add", "bench", "--role", "operator")
    extra = ('[commands]\nverify_key = "%s"\npoll_interval = %s\nmax_disconnects_per_hour = '
             '100000' % (_cli(hes.db, "keys", "command-key"), poll))
    hes.start()
    d = District([["modbus"] * 2], t0=T0, speed=60).start()
    agent = None
    try:
        uplink = broker.url + "?client_id=agent-bench" if broker else hes.url
        cfg = d.config(work / ("agent-%s.toml" % transport),
                       work / ("archive-%s.db" % transport), uplink=uplink, key=key,
                       transport=transport, extra=extra, backfill=3600)
        agent = start_agent(cfg, d.clock)
        deadline = time.monotonic() + 120
        meters: list[str] = []
        while not meters:
            if time.monotonic() > deadline:
                raise RuntimeError("no batch reached the HES")
            time.sleep(0.2)
            meters = [m["meter"] for m in hes.get("/v1/meters")]
        meter = meters[0]
        lat: list[float] = []
        failed: dict[str, int] = {}
        for i in range(n):
            op = "disconnect" if i % 2 == 0 else "reconnect"
            t = time.perf_counter()
            cid = _post(hes, token, meter, op)
            while True:
                obj = hes.get("/v1/commands/" + cid)
                if obj["state"] in ("executed", "failed", "expired"):
                    break
                time.sleep(0.005)
            if obj["state"] == "executed":
                lat.append(time.perf_counter() - t)
            else:
                key_ = "%s: %s" % (obj["state"], obj["reason"])
                failed[key_] = failed.get(key_, 0) + 1
        out: dict[str, Any] = {"commands": n, "executed": len(lat), "failed": failed}
        if lat:
            out.update(median_s=round(statistics.median(lat), 4),
                       p95_s=round(_pct(lat, 95), 4), max_s=round(max(lat), 4))
        if transport == "http":
            out["poll_interval_s"] = poll
        return out
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        d.stop()
        hes.stop()
        if broker is not None:
            broker.stop()


def verify_cost() -> Any:
    """The agent's verify cost, as bench/command_verify.py measures it."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "command_verify.py")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=50)
    ap.add_argument("--poll", type=float, default=1.0, help="the agent's idle poll (HTTP), s")
    ap.add_argument("--transports", default="mqtt,http")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wum-cmd-bench-"))
    try:
        doc: dict[str, Any] = {"verify": verify_cost()}
        for tr in a.transports.split(","):
            if tr == "mqtt" and not shutil.which("mosquitto") and not os.path.exists(
                    "/usr/sbin/mosquitto"):
                doc[tr] = {"skipped": "mosquitto not installed"}
                continue
            doc[tr] = run(tr, a.commands, a.poll, work)
        print(json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
