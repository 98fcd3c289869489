"""Commands over MQTT with a real Mosquitto and ``hes-lite serve --mqtt`` as a
process: a command queued through the API is pushed at once on
``wum/cmd/<device>`` and becomes ``delivered`` when the broker acknowledged
it; one queued by the CLI (another process) is pushed within a tick; an
unanswered one is pushed again when the device's next batch comes; results
on ``wum/result/<device>/<counter>`` are answered on ``wum/rack/<device>``,
stored once (duplicates acknowledged as such), refusals answered with the
reason. The agent's side is the real envelope/command formats."""

import json
import os
import queue
import subprocess
import sys
import time

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hes_lite import auth
from hes_lite.ingest import Ingestor
from hes_lite.store import open_store
from tests.command_agent import DISCONNECTED, AgentSide
from tests.mqtt_broker import free_port, running_broker

KEY = bytes.fromhex("5566778899aabbccddeeff0011223344" * 2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV = "DC-Q"


@pytest.fixture
def mosquitto():
    yield from running_broker()


class Peer:
    """The agent's MQTT side: subscribed to its command and result-ack topics."""

    def __init__(self, url):
        self.got = {"cmd": queue.Queue(), "rack": queue.Queue()}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-" + DEV,
                             protocol=mqtt.MQTTv5)
        self.c.on_message = lambda c, u, m: self.got[m.topic.split("/")[1]].put(
            bytes(m.payload))
        host, port = url[len("mqtt://"):].split(":")
        self.c.connect(host, int(port))
        self.c.loop_start()
        for t in ("wum/cmd/" + DEV, "wum/rack/" + DEV):
            self.c.subscribe(t, qos=1)[1]
        time.sleep(0.2)   # let the SUBACKs arrive (no later message may be missed)

    def next(self, what, timeout=10):
        return self.got[what].get(timeout=timeout)

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_push_deliver_result_over_mqtt(mosquitto, tmp_path, db_url):
    db = db_url
    agent = AgentSide(DEV, KEY)
    s = open_store(db)
    s.add_key(DEV, 0, KEY, 0.0)
    Ingestor(s).submit(agent.batch()[1])
    ops = {"authorization": "Bearer " + auth.create(s, "ops", "operator", 0.0)}
    s.close()
    port = free_port()
    log = open(tmp_path / "hes.log", "w+")
    hes = subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db", db, "--http",
                            f"127.0.0.1:{port}", "--mqtt", mosquitto.url + "?client_id=hes-q"],
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peer = Peer(mosquitto.url)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:   # uvicorn starts once the MQTT receiver is subscribed
            try:
                httpx.get(base + "/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert hes.poll() is None and time.monotonic() < deadline, log.read()
                time.sleep(0.1)
        key = subprocess.run([sys.executable, "-m", "hes_lite.cli", "keys", "command-key",
                              "--db", db], cwd=ROOT, capture_output=True, text=True, check=True)
        agent.verify_key = bytes.fromhex(key.stdout.strip())
        # queued through the API: pushed at once
        t0 = time.monotonic()
        r = httpx.post(base + "/v1/commands", headers=ops, timeout=5,
                       json={"meter": f"{DEV}-m1", "op": "disconnect", "args": {}})
        assert r.status_code == 202
        cmd = agent.open(peer.next("cmd"))
        assert cmd.id == r.json()["id"] and time.monotonic() - t0 < 5

        def state(cid):
            return httpx.get(f"{base}/v1/commands/{cid}", headers=ops, timeout=5).json()

        deadline = time.monotonic() + 5
        while state(cmd.id)["state"] != "delivered":     # the broker's PUBACK came back
            assert time.monotonic() < deadline
            time.sleep(0.05)
        peer.publish(f"wum/result/{DEV}/{cmd.counter}", agent.result(cmd, result=DISCONNECTED))
        assert json.loads(peer.next("rack")) == {"device": DEV, "counter": cmd.counter,
                                                 "status": "accepted"}
        done = state(cmd.id)
        assert (done["state"], done["result"]) == ("executed", DISCONNECTED)
        peer.publish(f"wum/result/{DEV}/{cmd.counter}", agent.result(cmd, result=DISCONNECTED))
        assert json.loads(peer.next("rack"))["status"] == "duplicate"
        assert state(cmd.id) == done
        bad = bytearray(agent.result(cmd))
        bad[-1] ^= 1
        peer.publish(f"wum/result/{DEV}/{cmd.counter}", bytes(bad))
        assert json.loads(peer.next("rack")) == {"device": DEV, "counter": cmd.counter,
                                                 "error": "bad_tag"}
        # queued by the CLI (another process): the serve process pushes it within a tick
        out = subprocess.run([sys.executable, "-m", "hes_lite.cli", "command", "reconnect",
                              "--meter", f"{DEV}-m1", "--db", db], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        again = agent.open(peer.next("cmd"))
        assert again.id == out.stdout.strip() and again.counter == cmd.counter + 1
        # unanswered: the device's next batch brings it once more, in a fresh envelope
        seq, env = agent.batch()
        peer.publish(f"wum/up/{DEV}/{seq}", env)
        third = agent.open(peer.next("cmd"))
        assert third.to_body() == again.to_body()
    finally:
        peer.close()
        hes.terminate()
        try:
            hes.wait(10)
        except subprocess.TimeoutExpired:
            hes.kill()
            hes.wait()
    log.seek(0)
    assert KEY.hex() not in log.read()
