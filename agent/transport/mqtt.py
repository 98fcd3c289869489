"""MQTT uplink (paho-mqtt 2.x, MQTT 5): publish the sealed envelope QoS 1 to
``wum/up/{device_id}/{seq}`` and wait for the HES's application-level ack on
``wum/ack/{device_id}`` (the same JSON as the HTTP answer, or
``{"device", "seq", "error": reason}`` for a refusal).

Commands: the HES pushes each sealed command to ``wum/cmd/{device_id}``
(QoS 1; ``listen`` subscribes and hands them over at once); results go to
``wum/result/{device_id}/{counter}`` and the HES answers on
``wum/rack/{device_id}`` like the HTTP result answer.

Owns one broker connection kept open across sends (paho's network thread
reconnects on its own), the ack subscriptions (re-made on every reconnect),
and matching acks to ``(device, seq)``. The broker is only a pipe: a PUBACK
from the broker proves nothing, only the HES's ack does; no ack within the
timeout is a ``timeout`` and the caller retransmits the same bytes (the HES
answers ``duplicate`` if the first copy did arrive). An ack that arrives
late is remembered, so the retransmission of that batch returns at once.

The session asks the broker to keep it for ``SESSION_EXPIRY`` seconds, so an
ack published while the agent's link blinks is delivered on reconnect (a
broker *restart* still loses it: that costs one retransmission).

Must not know what is inside a payload.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transport import (
    ACK_TOPIC,
    CMD_TOPIC,
    RACK_TOPIC,
    RESULT_TOPIC,
    UP_TOPIC,
    Ack,
    ResultAck,
    Transport,
    TransportError,
    check_device,
    mqtt_endpoint,
    parse_ack,
    parse_result_ack,
    redact,
)

log = logging.getLogger(__name__)

SESSION_EXPIRY = 300  # s the broker keeps our subscriptions while we are away
KEEP_ACKS = 4096      # late acks remembered


def no_delay(client: mqtt.Client) -> None:
    """TCP_NODELAY on paho's socket (paho leaves Nagle on): an upload, its
    PUBACK and the ack are small packets, and Nagle against delayed ACKs
    cost ~40 ms per round trip (90 ms per batch measured on loopback)."""
    setsockopt = getattr(client.socket(), "setsockopt", None)   # None: a websocket
    if setsockopt is not None:
        try:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:             # not a TCP socket (unix domain)
            pass


class MqttTransport(Transport):
    push = True

    def __init__(self, url: str, qos: int = 1) -> None:
        self.endpoint = mqtt_endpoint(url)
        self.url = redact(url)          # what logs and errors show: no password
        self.qos = qos
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connect_error = ""
        self._topics: set[str] = set()        # topics we want (acks, racks, commands)
        self._subscribed: set[str] = set()    # ... and have on this connection
        self._pending_sub: dict[int, str] = {}
        self._early_subacks: dict[int, bool] = {}
        self._acks: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._racks: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._listeners: dict[str, Callable[[bytes], object]] = {}    # cmd topic -> callback
        self.commands_received = 0
        self.published = 0
        self.acks_received = 0

    # -- connection (paho's thread calls the on_* methods) ----------------------
    def connect(self) -> MqttTransport:
        """Start the connection once (paho keeps it up); thread-safe: two
        clients with one client id would evict each other forever."""
        with self._start_lock:
            if self._client is None:
                self._client = self._start()
        return self

    def _start(self) -> mqtt.Client:
        ep = self.endpoint
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ep["client_id"],
                             protocol=mqtt.MQTTv5)
        if ep["username"]:
            client.username_pw_set(ep["username"], ep["password"])
        if ep["tls"]:
            client.tls_set_context(ssl.create_default_context(cafile=ep["ca"]))
        client.reconnect_delay_set(1, 4)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY
        client.connect_async(ep["host"], ep["port"], keepalive=ep["keepalive"],
                             properties=props)
        client.loop_start()
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    properties: Any = None) -> None:
        with self._cond:
            if rc.is_failure:
                self._connect_error = str(rc)
                log.warning("uplink %s: broker refused connection: %s", self.url, rc)
                return
            no_delay(client)
            self._connected = True
            self._connect_error = ""
            self._subscribed.clear()
            self._pending_sub.clear()
            self._early_subacks.clear()
            topics = sorted(self._topics)
            self._cond.notify_all()
        for topic in topics:        # paho's thread: SUBACKs cannot overtake these
            self._subscribe(client, topic)
        log.info("uplink %s: connected", self.url)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       properties: Any = None) -> None:
        with self._cond:
            self._connected = False
            self._subscribed.clear()
            self._cond.notify_all()
        log.info("uplink %s: disconnected (%s)", self.url, rc)

    def _subscribe(self, client: mqtt.Client, topic: str) -> None:
        """Never called by ``send`` with ``_cond`` held: paho takes its callback
        lock inside ``subscribe`` while its thread may be waiting for ``_cond``."""
        rc, mid = client.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return
        with self._cond:
            if mid in self._early_subacks:      # the SUBACK overtook us
                if self._early_subacks.pop(mid):
                    self._subscribed.add(topic)
                self._cond.notify_all()
            else:
                self._pending_sub[mid] = topic

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                      properties: Any = None) -> None:
        ok = bool(codes) and not codes[0].is_failure
        with self._cond:
            topic = self._pending_sub.pop(mid, None)
            if topic is None:
                self._early_subacks[mid] = ok
            elif ok:
                self._subscribed.add(topic)
            else:
                log.warning("uplink %s: subscription to %s refused: %s", self.url, topic, codes)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        listener = self._listeners.get(msg.topic)
        if listener is not None:            # a pushed sealed command (raw bytes)
            self.commands_received += 1
            try:
                listener(bytes(msg.payload))
            except Exception:       # paho's network thread must survive any callback
                log.exception("uplink %s: pushed command not taken", self.url)
            return
        rack = msg.topic.startswith(RACK_TOPIC % "")
        try:
            doc = json.loads(msg.payload.decode("utf-8"))
            key = (str(doc["device"]), int(doc["counter" if rack else "seq"]))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            log.warning("uplink %s: unreadable answer on %s: %r", self.url, msg.topic,
                        msg.payload[:200])
            return
        with self._cond:
            table = self._racks if rack else self._acks
            table[key] = doc
            table.move_to_end(key)
            while len(table) > KEEP_ACKS:
                table.popitem(last=False)
            if not rack:
                self.acks_received += 1
            self._cond.notify_all()

    # -- sending -----------------------------------------------------------------
    def _wait(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Wait (holding ``_cond``) until ``ready()`` or the deadline."""
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        return True

    def _ensure(self, topic: str, device_id: str, seq: int, deadline: float) -> mqtt.Client:
        """Connected, and subscribed to ``topic`` (once; re-made on reconnects)."""
        self.connect()
        client = self._client
        assert client is not None
        with self._cond:
            if not self._wait(lambda: self._connected, deadline):
                why = self._connect_error or "broker not reachable"
                raise TransportError("%s: %s" % (self.url, why), "unreachable",
                                     device=device_id, seq=seq, url=self.url)
            new = topic not in self._topics
            self._topics.add(topic)
        if new:
            self._subscribe(client, topic)
        with self._cond:
            if not self._wait(lambda: topic in self._subscribed or not self._connected,
                              deadline) or topic not in self._subscribed:
                raise TransportError("%s: no subscription to %s" % (self.url, topic),
                                     "unreachable" if not self._connected else "timeout",
                                     device=device_id, seq=seq, url=self.url)
        return client

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes, device_id: str,
                 seq: int) -> None:
        info = client.publish(topic, payload, qos=self.qos)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError("%s: publish failed: %s" % (self.url, mqtt.error_string(info.rc)),
                                 "unreachable", device=device_id, seq=seq, url=self.url)
        self.published += 1

    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        check_device(device_id, seq, self.url)
        deadline = time.monotonic() + timeout
        key = (device_id, seq)
        with self._cond:
            if key in self._acks:
                if "error" not in self._acks[key]:   # a late ack of an earlier copy came
                    return parse_ack(self._acks[key], device_id, seq, self.url)
                del self._acks[key]                  # a refusal is asked again
        client = self._ensure(ACK_TOPIC % device_id, device_id, seq, deadline)
        self._publish(client, UP_TOPIC % (device_id, seq), payload, device_id, seq)
        with self._cond:
            if not self._wait(lambda: key in self._acks, deadline):
                raise TransportError("%s: no ack for %s/%d within %.1fs" % (
                    self.url, device_id, seq, timeout), "timeout", device=device_id, seq=seq,
                    url=self.url)
            doc = self._acks[key]
        return parse_ack(doc, device_id, seq, self.url)

    def send_result(self, device_id: str, counter: int, payload: bytes,
                    timeout: float) -> ResultAck:
        check_device(device_id, counter, self.url)
        deadline = time.monotonic() + timeout
        key = (device_id, counter)
        with self._cond:
            doc = self._racks.pop(key, None)
            if doc is not None and "error" not in doc:
                return parse_result_ack(doc, device_id, counter, self.url)
        client = self._ensure(RACK_TOPIC % device_id, device_id, counter, deadline)
        self._publish(client, RESULT_TOPIC % (device_id, counter), payload, device_id, counter)
        with self._cond:
            if not self._wait(lambda: key in self._racks, deadline):
                raise TransportError("%s: no answer to result %s/%d within %.1fs" % (
                    self.url, device_id, counter, timeout), "timeout", device=device_id,
                    seq=counter, url=self.url)
            doc = self._racks.pop(key)
        return parse_result_ack(doc, device_id, counter, self.url)

    def listen(self, device_id: str, on_command: Callable[[bytes], object]) -> bool:
        """Subscribe to ``wum/cmd/<device>``: each pushed command goes to
        ``on_command`` from paho's thread. Returns at once (the subscription is
        made when the broker is reachable, and again after every reconnect)."""
        check_device(device_id, 0, self.url)
        topic = CMD_TOPIC % device_id
        self._listeners[topic] = on_command
        self.connect()
        client = self._client
        assert client is not None
        with self._cond:
            new = topic not in self._topics
            self._topics.add(topic)
            connected = self._connected
        if new and connected:
            self._subscribe(client, topic)
        return True

    def listening(self, device_id: str, timeout: float) -> bool:
        """Wait until the command subscription is in place (tests, start-up)."""
        topic = CMD_TOPIC % device_id
        with self._cond:
            return self._wait(lambda: topic in self._subscribed,
                              time.monotonic() + timeout)

    def close(self) -> None:
        with self._start_lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._cond:
            self._connected = False
            self._subscribed.clear()
