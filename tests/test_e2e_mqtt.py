"""End to end over MQTT: simulated meters → agent → a real Mosquitto →
`hes-lite serve --mqtt`. The broker is only a pipe: kill -9 of the broker, of
the HES and of the agent during uploads cost retransmissions, and afterwards
every reading is at the HES exactly once and equal."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.agent_rig import District, HesProcess, drain, start_agent
from tests.mqtt_broker import running_broker
from tests.test_e2e_uplink import assert_all_at_hes

T0 = 1795910400 + 1500


@pytest.fixture
def broker():
    yield from running_broker()


@pytest.mark.slow
def test_mqtt_kill9_broker_hes_and_agent(tmp_path, broker):
    key = os.urandom(32).hex()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key,
                     mqtt=broker.url + "?client_id=hes-1").start()
    d = District([["modbus"] * 6], t0=T0, speed=1800).start()
    rng = random.Random(11)
    try:
        cfg = d.config(tmp_path / "agent.toml", tmp_path / "archive.db", uplink=broker.url,
                       key=key, transport="mqtt")
        for i in range(3):
            agent = start_agent(cfg, d.clock)
            time.sleep(rng.uniform(1.5, 3.0))
            broker.kill()                       # the broker dies with messages in flight
            time.sleep(rng.uniform(0.3, 1.0))
            broker.start()
            time.sleep(rng.uniform(1.0, 2.0))
            if i == 1:
                hes.kill()                      # the HES dies too
                hes.start()
            agent.send_signal(signal.SIGKILL)
            agent.wait()
        drain(cfg, d.clock, tmp_path / "archive.db")   # the HES reconnects on its own
        assert_all_at_hes(tmp_path / "archive.db", hes)
    finally:
        d.stop()
        hes.stop()

