"""MQTT receiver of HES-lite (paho-mqtt 2.x, MQTT 5).

Subscribes QoS 1 to ``$share/{group}/wum/up/+/+`` (a shared subscription, so
several HES workers on one broker split the load), ingests each message as
``PUT /v1/batches/{device}/{seq}`` would, publishes the same JSON answer QoS 1
to ``wum/ack/{device}`` (``{"device", "seq", "error"}`` for a refusal) and
only then PUBACKs the broker (manual acks): a batch the HES could not store
durably stays with the broker and comes again. The session is persistent
(fixed client id, session expiry) so messages published while the HES is
down wait for it. Brokers are pipes: anything lost costs one retransmission.

Owns the broker connection and the topic contract (shared with
``agent.transport``). Must not know byte layouts or SQL.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hes_lite import HesError
from hes_lite.ingest import Ingestor, Rejected

log = logging.getLogger("hes_lite.mqtt")

UP_FILTER = "wum/up/+/+"
ACK_TOPIC = "wum/ack/%s"
SESSION_EXPIRY = 3600


class MqttError(HesError):
    pass


def endpoint(url: str) -> dict[str, Any]:
    """``mqtt(s)://[user:pass@]host[:port][?client_id=…&group=…]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise MqttError(f"not an mqtt(s) URL: {parts.scheme}://{parts.hostname}")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {"host": parts.hostname,
            "port": parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            "tls": parts.scheme == "mqtts",
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "client_id": q.get("client_id") or "hes-lite-" + socket.gethostname(),
            "group": q.get("group", "hes-lite")}


class MqttReceiver:
    def __init__(self, url: str, ingestor: Ingestor,
                 clock: Callable[[], float] = time.time) -> None:
        self.ep = endpoint(url)
        self.ingestor = ingestor
        self.clock = clock
        self._client: mqtt.Client | None = None
        self._queue: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue(maxsize=1024)
        self._worker: threading.Thread | None = None
        self.received = 0

    def start(self) -> MqttReceiver:
        ep = self.ep
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ep["client_id"],
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if ep["username"]:
            client.username_pw_set(ep["username"], ep["password"])
        if ep["tls"]:
            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(1, 8)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY
        client.connect_async(ep["host"], ep["port"], keepalive=30, clean_start=False,
                             properties=props)
        self._worker = threading.Thread(target=self._work, name="hes-mqtt", daemon=True)
        self._worker.start()
        client.loop_start()
        self._client = client
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(10)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    properties: Any = None) -> None:
        if rc.is_failure:
            log.warning("mqtt %s:%s refused the connection: %s", self.ep["host"],
                        self.ep["port"], rc)
            return
        client.subscribe(f"$share/{self.ep['group']}/{UP_FILTER}", qos=1)
        log.info("mqtt %s:%s connected, subscribed to %s", self.ep["host"], self.ep["port"],
                 UP_FILTER)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(msg)  # ingest off paho's network thread

    def _work(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            self.received += 1
            self._handle(msg)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        client = self._client
        if client is None:
            return
        parts = msg.topic.split("/")
        if len(parts) != 4 or not parts[3].isdigit():
            log.warning("mqtt: ignoring message on %r", msg.topic[:200])
            client.ack(msg.mid, msg.qos)
            return
        device, seq = parts[2], int(parts[3])
        try:
            answer: dict[str, object] = self.ingestor.submit(bytes(msg.payload), device,
                                                             seq).as_dict()
        except Rejected as r:
            answer = {"device": device, "seq": seq, "error": r.reason}
        except HesError as e:  # not stored: no PUBACK, the broker keeps it
            log.error("mqtt: batch %s/%d not stored (%s); left with the broker", device, seq, e)
            return
        client.publish(ACK_TOPIC % device, json.dumps(answer), qos=1)
        client.ack(msg.mid, msg.qos)
