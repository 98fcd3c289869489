"""``hes-lite serve --mqtt`` with a real Mosquitto broker on a free port and
the agent's own MQTT transport on the other side: acks, duplicates, refusals,
and a batch published while the HES is down is ingested when it returns."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hes_lite import auth, wire
from hes_lite.store import open_store
from tests.mqtt_broker import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="mosquitto not installed")
KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90" * 2)
T0 = 1780272000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(seq, device="mq-1"):
    rows = {"mq-meter": [(T0 + 3600 * seq, {"1.0.1.8.0.255": seq * 10})]}
    return wire.seal_batch(KEY, device, 1, seq, seq, rows)


def wait_port(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen")


@pytest.fixture
def broker(tmp_path):
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc, "mosquitto")
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def start_hes(db, url, http_port, client_id):
    proc = subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db", str(db),
                             "--http", f"127.0.0.1:{http_port}", "--mqtt",
                             f"{url}?client_id={client_id}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(http_port, proc, "hes-lite")
    return proc


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read().decode()
    assert KEY.hex() not in err
    return err


def test_mqtt_uplink_with_the_agent_transport(broker, db_url):
    from agent.transport import TransportError, transport_for

    db = db_url
    s = open_store(db)
    s.add_key("mq-1", 1, KEY, 0.0)
    viewer = {"authorization": "Bearer " + auth.create(s, "reader", "viewer", 0.0)}
    s.close()
    http_port = free_port()
    hes = start_hes(db, broker, http_port, "hes-test-1")
    try:
        with transport_for(broker + "?client_id=agent-1") as t:
            t.connect()
            deadline = time.monotonic() + 10
            while True:  # the HES subscribes asynchronously after start
                try:
                    ack = t.send("mq-1", 1, batch(1), timeout=1.0)
                    break
                except TransportError as e:
                    if e.reason != "timeout" or time.monotonic() > deadline:
                        raise
            assert ack.status in ("accepted", "duplicate")
            assert t.send("mq-1", 2, batch(2), timeout=10).status == "accepted"
            bad = bytearray(batch(3))
            bad[-1] ^= 1
            with pytest.raises(TransportError) as e:
                t.send("mq-1", 3, bytes(bad), timeout=10)
            assert e.value.reason == "rejected" and e.value.hes_reason == "bad_tag"
        with transport_for(broker + "?client_id=agent-1b") as t2:  # no remembered acks
            assert t2.send("mq-1", 1, batch(1), timeout=10).status == "duplicate"
        h = httpx.get(f"http://127.0.0.1:{http_port}/v1/health", timeout=5,
                      headers=viewer).json()
        assert h["concentrators"][0]["last_seq"] == 2 and h["rejects"] == {"bad_tag": 1}
    finally:
        stop(hes)


def test_batch_published_while_hes_is_down_arrives(broker, db_url):
    db = db_url
    s = open_store(db)
    s.add_key("mq-1", 1, KEY, 0.0)
    viewer = {"authorization": "Bearer " + auth.create(s, "reader", "viewer", 0.0)}
    s.close()
    http_port = free_port()
    stop(start_hes(db, broker, http_port, "hes-test-2"))  # makes the persistent session
    acks = []
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-2", protocol=mqtt.MQTTv5)
    pub.on_message = lambda c, u, m: acks.append(json.loads(m.payload))
    host, port = broker[len("mqtt://"):].split(":")
    pub.connect(host, int(port))
    pub.loop_start()
    try:
        pub.subscribe("wum/ack/mq-1", qos=1)
        pub.publish("wum/up/mq-1/7", batch(7), qos=1).wait_for_publish(5)
        hes = start_hes(db, broker, http_port, "hes-test-2")
        try:
            deadline = time.monotonic() + 15
            while not acks and time.monotonic() < deadline:
                time.sleep(0.1)
            assert acks and acks[0]["status"] == "accepted" and acks[0]["seq"] == 7
            r = httpx.get(f"http://127.0.0.1:{http_port}/v1/meters/mq-meter/readings",
                          timeout=5, headers=viewer).json()
            assert [x["value"] for x in r["readings"]] == [70]
        finally:
            stop(hes)
    finally:
        pub.loop_stop()
        pub.disconnect()
