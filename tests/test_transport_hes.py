"""The uplink transports against the real head end: ``HttpTransport`` to a
``hes-lite serve`` process, and ``MqttTransport`` → real Mosquitto →
``MqttReceiver`` → the real ``hes_lite.ingest.Ingestor`` on SQLite. Batches
are sealed with HES-lite's own ``wire.seal_batch``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from agent.transport import TransportError
from agent.transport.http import HttpTransport
from agent.transport.mqtt import MqttTransport
from hes_lite import wire
from hes_lite.ingest import Ingestor
from hes_lite.mqtt_receiver import MqttReceiver
from hes_lite.store import open_store
from tests.mqtt_broker import running_broker

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
T0 = 1780272000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(seq, device="conc-t", key=KEY):
    rows = {"%s-m%d" % (device, i): [(T0 + 3600 * seq, {"1.0.1.8.0.255": 1000 * seq + i})]
            for i in range(3)}
    return wire.seal_batch(key, device, 1, seq, seq, rows, {}, {"1.0.1.8.0.255": "Wh"})


def tampered(env: bytes) -> bytes:
    b = bytearray(env)
    b[len(b) // 2] ^= 1
    return bytes(b)


def new_db(tmp_path, name="hes.db"):
    db = tmp_path / name
    s = open_store(str(db))
    s.add_key("conc-t", 1, KEY, 0.0)
    s.close()
    return db


@pytest.fixture
def mosquitto():
    yield from running_broker()


@pytest.fixture
def hes_http(tmp_path):
    db = new_db(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db",
                             "sqlite:///%s" % db, "--http", "127.0.0.1:%d" % port],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail("hes-lite serve did not start: " + log.read())
            time.sleep(0.1)
    try:
        yield "http://127.0.0.1:%d" % port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_http_transport_against_hes_lite_serve(hes_http):
    with HttpTransport(hes_http) as t:
        acks = [t.send("conc-t", seq, batch(seq), timeout=10) for seq in (1, 2, 3)]
        assert [a.status for a in acks] == ["accepted"] * 3
        assert t.send("conc-t", 2, batch(2), timeout=10).status == "duplicate"
        with pytest.raises(TransportError) as e:
            t.send("conc-t", 4, tampered(batch(4)), timeout=10)
        assert (e.value.reason, e.value.hes_reason) == ("rejected", "bad_tag")
        with pytest.raises(TransportError) as e:
            t.send("conc-u", 1, batch(1, device="conc-u"), timeout=10)
        assert (e.value.reason, e.value.hes_reason) == ("rejected", "unknown_key")
        assert t.send("conc-t", 4, batch(4), timeout=10).status == "accepted"


def test_mqtt_transport_through_mosquitto_into_the_ingest(mosquitto, tmp_path):
    store = open_store(str(new_db(tmp_path)))
    ingestor = Ingestor(store)

    def handle(device: str, seq: int, payload: bytes) -> dict[str, object]:
        return ingestor.submit(payload, device, seq).as_dict()

    rx = MqttReceiver(mosquitto.url, handle).start()
    try:
        with MqttTransport(mosquitto.url) as t:
            assert t.send("conc-t", 1, batch(1), timeout=10).status == "accepted"
            with pytest.raises(TransportError) as e:
                t.send("conc-t", 2, tampered(batch(2)), timeout=10)
            assert (e.value.reason, e.value.hes_reason) == ("rejected", "bad_tag")
            assert t.send("conc-t", 2, batch(2), timeout=10).status == "accepted"
        with MqttTransport(mosquitto.url) as t2:    # a restarted agent retransmits
            assert t2.send("conc-t", 1, batch(1), timeout=10).status == "duplicate"
    finally:
        rx.stop()
        store.close()
    assert rx.counts == {"received": 4, "acked": 3, "rejected": 1, "failed": 0, "malformed": 0}
