"""Commands end to end: `hes-lite serve` and a real `wum run` agent (both
processes) with simulated meters on pseudo-terminals, over HTTP (batch acks
and idle polls) and over a real Mosquitto (the push). An operator's
disconnect travels HES → agent → meter, the simulated relay opens, the
result comes back `executed` with `output_state: false`; reconnect closes it.

Modbus meters whose device profile maps the relay over HTTP, DLMS meters
(class 70 disconnect control) over MQTT. The tariff calendar, limiter and
`time` on DLMS meters through the same HES: tests/test_agent_command_real_hes.py."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.agent_rig import HES, District, HesProcess, start_agent
from tests.mqtt_broker import running_broker

T0 = 1795910400 + 3000   # 10 simulated minutes before an hour: the first cycle comes soon


@pytest.fixture
def broker():
    yield from running_broker()


def hes_cli(db: str, *args: str) -> str:
    return subprocess.run([HES, *args, "--db", db], check=True, capture_output=True,
                          text=True).stdout.strip()


def wait_for(what, fn, timeout=60.0, every=0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(every)


def run_scenario(tmp_path, transport: str, mqtt_url: str = "", protocol: str = "modbus") -> None:
    key = os.urandom(32).hex()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key, mqtt=mqtt_url)
    operator = hes_cli(hes.db, "tokens", "add", "ops", "--role", "operator")
    verify_key = hes_cli(hes.db, "keys", "command-key")
    hes.start()
    d = District([[protocol] * 2], t0=T0, speed=600).start()
    agent = None
    try:
        uplink = mqtt_url + "?client_id=agent-e2e" if mqtt_url else hes.url
        extra = '[commands]\nverify_key = "%s"\npoll_interval = 0.5' % verify_key
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db", uplink=uplink,
                       key=key, transport=transport, extra=extra, backfill=3600)
        agent = start_agent(cfg, d.clock)
        meters = wait_for("the first batch at the HES",
                          lambda: [m["meter"] for m in hes.get("/v1/meters")], timeout=90)
        models = {m.serial: m for _, _, _, m in d.meters}
        target = next(m for m in meters if m in models)
        model = models[target]
        assert model.relay_connected

        def command(op: str) -> dict:
            import json
            import urllib.request

            req = urllib.request.Request(
                hes.url + "/v1/commands", method="POST",
                data=json.dumps({"meter": target, "op": op, "args": {}}).encode(),
                headers={"Authorization": "Bearer " + operator,
                         "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 202
                return json.load(r)

        def ended(cid: str) -> dict | None:
            obj = hes.get("/v1/commands/" + cid)
            return obj if obj["state"] in ("executed", "failed", "expired") else None

        off = command("disconnect")
        done = wait_for("the disconnect to end", lambda: ended(off["id"]), timeout=60)
        assert done["state"] == "executed", done
        assert done["result"] == {"output_state": False, "control_state": "disconnected"}
        assert not model.relay_connected                  # the simulated relay opened
        others = [m for _, _, _, m in d.meters if m is not model]
        assert all(m.relay_connected for m in others)     # and only that one
        on = command("reconnect")
        done = wait_for("the reconnect to end", lambda: ended(on["id"]), timeout=60)
        assert done["state"] == "executed" and done["result"]["output_state"] is True, done
        assert model.relay_connected
        audit = hes_cli(hes.db, "audit")
        assert audit.count("command.queue") == 2 and audit.count("command.result") >= 2
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        d.stop()
        hes.stop()


@pytest.mark.slow
def test_modbus_disconnect_reconnect_over_http(tmp_path):
    run_scenario(tmp_path, "http")


@pytest.mark.slow
def test_dlms_disconnect_reconnect_over_mqtt(tmp_path, broker):
    run_scenario(tmp_path, "mqtt", broker.url, protocol="dlms")
