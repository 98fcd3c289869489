"""Signed commands end to end on the agent's side: a real ``wum run`` process
(accelerated clock), simulated meters on a pty (DLMS over HTTP, Modbus over
MQTT), commands fetched by idle
polls over HTTP and pushed over MQTT through a real Mosquitto, results sent
back until acknowledged; a SIGKILL and restart of the agent neither loses
the counter nor executes a redelivered command again.

The HES here is ``tests/command_hes.py``, a STAND-IN built on the real
formats (the real ``hes-lite serve`` command side is branch i11-hes; the
lead's end-to-end tests run both)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.agent_rig import WUM, District, start_agent
from tests.command_hes import StandInHes
from tests.mqtt_broker import running_broker

T0 = 1795910400 + 900
DEV = "DC-TEST"
METER = "bus1:modbus:1"
DLMS_METER = "bus1:dlms:1"


@pytest.fixture
def broker():
    yield from running_broker()


def _config(d: District, tmp_path, hes: StandInHes, url: str, transport: str,
            key: bytes) -> object:
    extra = "\n".join(["[commands]", 'verify_key = "%s"' % hes.public.hex(),
                       "max_disconnects_per_hour = 5", "poll_interval = 0.5"])
    return d.config(tmp_path / "agent.toml", tmp_path / "archive.db", uplink=url,
                    key=key.hex(), transport=transport, extra=extra)


def _status(cfg) -> dict:
    out = subprocess.run([WUM, "status", "--config", str(cfg), "--json"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_log(log, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, "%r not in the agent's log" % text
        time.sleep(0.1)


def _stop(agent: subprocess.Popen) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def test_http_poll_disconnect_then_sigkill_restart_keeps_the_counter(tmp_path):
    key = os.urandom(32)
    d = District([["dlms", "dlms"]], t0=T0, speed=60).start()
    hes = StandInHes(DEV, key, d.clock.now)
    url = hes.serve_http()
    cfg = _config(d, tmp_path, hes, url, "http", key)
    model = d.meters[0][3]
    meter = d.buses[0].meters[0]            # the DLMS simulator: its traffic log
    agent = start_agent(cfg, d.clock)
    try:
        sealed = hes.queue(hes.sign("disconnect", DLMS_METER))
        doc = hes.wait_result(1, timeout=30)
        assert doc["state"] == "executed", doc
        assert doc["result"] == {"output_state": False, "control_state": "disconnected"}
        assert not model.relay_connected
        events = list(model.relay_events)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        # The HES lost our answer and delivers the very same bytes again; then
        # an attacker replays an old counter with another body.
        log = tmp_path / "agent.log"
        hes.keep_pending = True
        hes.pending[1] = sealed
        posts = hes.result_posts
        agent = start_agent(cfg, d.clock)
        _wait_log(log, "delivered again")
        deadline = time.monotonic() + 20
        while hes.result_posts == posts and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hes.result_posts > posts, "the stored result was not sent again"
        assert hes.results[1] == doc and model.relay_events == events
        hes.pending = {1: hes.seal(hes.sign("reconnect", DLMS_METER, counter=1))}
        _wait_log(log, "refused: replayed")
        hes.pending.clear()
        _stop(agent)
        st = _status(cfg)["commands"]
        assert st["executed"] == 1 and st["duplicates"] >= 1
        assert st["refused"].get("replayed", 0) >= 1
        assert st["last_counter"] == 1 and st["results_pending"] == 0
        assert model.relay_events == events
        actions = [t for t in meter.traffic if t[0] == "ACTION"]
        assert actions == [("ACTION", 70, "0.0.96.3.10.255", 1)], actions   # exactly once
    finally:
        _stop(agent)
        d.stop()
        hes.close()


def test_mqtt_push_disconnect_reconnect_and_result_over_the_broker(tmp_path, broker):
    key = os.urandom(32)
    d = District([["modbus"]], t0=T0, speed=60).start()
    hes = StandInHes(DEV, key, d.clock.now)
    hes.attach_mqtt(broker.url)
    cfg = _config(d, tmp_path, hes, broker.url, "mqtt", key)
    model = d.meters[0][3]
    agent = start_agent(cfg, d.clock)
    try:
        deadline = time.monotonic() + 30
        while hes.batches == 0 and time.monotonic() < deadline:   # the agent is up
            time.sleep(0.1)
        polls = hes.polls
        t = time.monotonic()
        hes.queue(hes.sign("disconnect", METER))
        doc = hes.wait_result(1, timeout=20)
        pushed_in = time.monotonic() - t
        assert doc["state"] == "executed" and doc["result"]["output_state"] is False, doc
        assert not model.relay_connected
        hes.queue(hes.sign("reconnect", METER))
        assert hes.wait_result(2, timeout=20)["result"]["output_state"] is True
        assert model.relay_connected
        assert hes.polls == polls, "an MQTT agent must not poll: commands are pushed"
        assert pushed_in < 10, pushed_in
    finally:
        _stop(agent)
        d.stop()
        hes.close()
