"""Many simulated concentrators uploading real sealed batches over MQTT, for
the scale test and bench scripts.

A concentrator here is what the HES sees of one: its device id, its key,
and its hourly batches (keyframe, then deltas, made by the real encoder and
sealed by the real envelope), published QoS 1 on ``wum/up/<device>/<seq>``
and kept until their ack comes on ``wum/ack/<device>``; what is not acked
within ``retry`` seconds is published again, so a lost message (a broker
restart, a killed HES) costs a retransmission, as with the agent. To stay
light, the concentrators share a few MQTT connections (``clients``), each
subscribed to its own concentrators' ack topics and resubscribing after a
reconnect. All of a concentrator's batches go out at once, so consecutive
batches of one concentrator reach different HES workers of a shared
subscription.

    fleet = Fleet(broker_url, batches)   # {device: {seq: sealed}}
    fleet.start(); fleet.wait_acked(60); fleet.stop()
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hes_lite import wire


def hourly_batches(devices: list[str], key: bytes, hours: int, meters: int,
                   t0: int) -> dict[str, dict[int, bytes]]:
    """Per device: seq 1..hours, a keyframe then deltas, sealed."""
    out: dict[str, dict[int, bytes]] = {}
    for d in devices:
        state, out[d] = None, {}
        for h in range(1, hours + 1):
            data, state = wire.encode(d, h, readings(d, h, meters, t0), base=state)
            out[d][h] = wire.seal(key, d, 0, h, data)
    return out


def readings(device: str, hour: int, meters: int, t0: int) -> dict[str, list[tuple[int, dict]]]:
    return {f"{device}-m{i}": [(t0 + 3600 * hour, {"1.0.1.8.0.255": 1000 * hour + i,
                                                   "1.0.32.7.0.255": 230.0 + i / 10})]
            for i in range(meters)}


class Fleet:
    def __init__(self, url: str, batches: dict[str, dict[int, bytes]], clients: int = 8,
                 retry: float = 4.0) -> None:
        host, _, port = url.split("://", 1)[1].rpartition(":")
        self.host, self.port = host, int(port)
        self.batches = batches
        self.retry = retry
        devices = sorted(batches)
        self.shares = [devices[i::clients] for i in range(clients)]
        self.unacked = {d: set(b) for d, b in batches.items()}
        self.acks: dict[str, int] = {"accepted": 0, "duplicate": 0, "error": 0}
        self.errors: list[dict[str, object]] = []
        self.published = 0
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.clients: list[mqtt.Client] = []
        self._sent: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._resender: threading.Thread | None = None
        self.on_progress: Callable[[int], None] | None = None

    @property
    def total(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def outstanding(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.unacked.values())

    def start(self) -> Fleet:
        for k, share in enumerate(self.shares):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-%d-%d" % (
                k, time.monotonic_ns() % 1_000_000), protocol=mqtt.MQTTv5)
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.reconnect_delay_set(0.5, 2)
            c.on_connect = self._on_connect(share)
            c.on_message = self._on_message
            c.connect_async(self.host, self.port, keepalive=30)
            c.loop_start()
            self.clients.append(c)
        self._resender = threading.Thread(target=self._resend, daemon=True)
        self._resender.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._resender is not None:
            self._resender.join(10)
        for c in self.clients:
            c.disconnect()
            c.loop_stop()

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.done:
            while any(self.unacked.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.done.wait(min(left, 1.0))
        return True

    def wait_progress(self, fraction: float, timeout: float) -> bool:
        """Until at least ``fraction`` of all batches are acked."""
        deadline = time.monotonic() + timeout
        want = self.total * (1 - fraction)
        while self.outstanding() > want:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def send_again(self, devices: list[str]) -> int:
        """Publish each of ``devices``' first batch again, as a concentrator
        that lost its ack does; the batch counts as unacked until acked."""
        n = 0
        for client, share in zip(self.clients, self.shares, strict=True):
            for d in share:
                if d not in devices:
                    continue
                seq = min(self.batches[d])
                with self.lock:
                    self.unacked[d].add(seq)
                    self._sent[(d, seq)] = time.monotonic()
                client.publish("wum/up/%s/%d" % (d, seq), self.batches[d][seq], qos=1)
                self.published += 1
                n += 1
        return n

    # -- callbacks -----------------------------------------------------------------
    def _on_connect(self, share: list[str]) -> Callable[..., None]:
        def connected(client: mqtt.Client, userdata: object, flags: object, rc: object,
                      properties: object = None) -> None:
            for i in range(0, len(share), 100):
                client.subscribe([("wum/ack/%s" % d, 1) for d in share[i:i + 100]])
            self._publish(client, share, force=True)
        return connected

    def _publish(self, client: mqtt.Client, share: list[str], force: bool = False) -> None:
        now = time.monotonic()
        for d in share:
            with self.lock:
                todo = sorted(self.unacked[d])
            for seq in todo:
                if not force and now - self._sent.get((d, seq), -1e9) < self.retry:
                    continue
                self._sent[(d, seq)] = now
                client.publish("wum/up/%s/%d" % (d, seq), self.batches[d][seq], qos=1)
                self.published += 1

    def _on_message(self, client: mqtt.Client, userdata: object,
                    msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self.done:
            if "error" in doc:
                self.acks["error"] += 1
                self.errors.append(doc)
                return
            self.acks[doc["status"]] = self.acks.get(doc["status"], 0) + 1
            self.unacked[doc["device"]].discard(int(doc["seq"]))
            self.done.notify_all()

    def _resend(self) -> None:
        while not self._stop.wait(0.5):
            for client, share in zip(self.clients, self.shares, strict=True):
                if client.is_connected():
                    self._publish(client, share)
