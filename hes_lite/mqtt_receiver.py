"""The MQTT receiver of HES-lite: batches in on ``wum/up/{device_id}/{seq}``,
acknowledgements out on ``wum/ack/{device_id}``.

Owns the broker connection (paho-mqtt 2.x, MQTT 5), the subscription (an
MQTT 5 shared subscription ``$share/<group>/wum/up/+/+`` when several HES
workers split the load), turning a message into a ``handle(device_id, seq,
payload)`` call and its outcome into the ack JSON:

    handle returns a dict            → that dict (``{"device", "seq", "status",
                                       "server_time"}``) QoS 1 to the ack topic
    handle raises with a ``reason``  → ``{"device", "seq", "error": reason}``
    handle raises anything else      → no ack (a transient failure: the agent
                                       times out and retransmits)

``handle`` runs in paho's network thread and the broker's PUBACK for the
upload goes out only after it returns, so the ingest's durable write happens
before anything is acknowledged to anyone. The broker is only a pipe: nothing
here assumes a message survives a broker restart. With a stable
``?client_id=`` in the URL the session is persistent (clean start off,
session expiry ``SESSION_EXPIRY``), so batches published while this HES was
down are delivered when it comes back; without one the id is random and the
session clean.

Must not know how batches are decoded or stored (that is ``handle``), nor
serial ports or radios.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.transport import ACK_TOPIC, TransportError, mqtt_endpoint, redact
from agent.transport.mqtt import no_delay
from hes_lite import HesError

log = logging.getLogger(__name__)

UP_FILTER = "wum/up/+/+"
SESSION_EXPIRY = 3600  # s the broker keeps a named HES's session and its messages

Handle = Callable[[str, int, bytes], dict[str, Any]]


class ReceiverError(HesError):
    """The receiver could not connect or subscribe (fields: url, detail)."""


def _endpoint(url: str) -> dict[str, Any]:
    try:
        return mqtt_endpoint(url, prefix="hes")
    except TransportError as e:
        raise ReceiverError(str(e), url=redact(url)) from None


def parse_up_topic(topic: str) -> tuple[str, int] | None:
    """``wum/up/{device}/{seq}`` → (device, seq), or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "wum" or parts[1] != "up" or not parts[2]:
        return None
    if any(c in parts[2] for c in "+#\x00"):   # could not be answered on an ack topic
        return None
    if not parts[3].isdigit():
        return None
    return parts[2], int(parts[3])


class MqttReceiver:
    def __init__(self, url: str, handle: Handle, shared_group: str | None = None,
                 qos: int = 1) -> None:
        self.endpoint = _endpoint(url)
        self.url = redact(url)          # what logs and errors show: no password
        self.handle = handle
        self.shared_group = shared_group
        self.qos = qos
        self.topic = ("$share/%s/%s" % (shared_group, UP_FILTER)) if shared_group else UP_FILTER
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._subscribed = False
        self._error = ""
        self.counts = {"received": 0, "acked": 0, "rejected": 0, "failed": 0, "malformed": 0}

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> MqttReceiver:
        """Connect and subscribe; ``ReceiverError`` if that takes longer than
        ``timeout`` (paho keeps retrying in the background until ``stop``)."""
        if self._client is None:
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
            if ep["persistent"]:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY
                client.connect_async(ep["host"], ep["port"], keepalive=30, clean_start=False,
                                     properties=props)
            else:
                client.connect_async(ep["host"], ep["port"], keepalive=30)
            client.loop_start()
            self._client = client
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._subscribed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReceiverError("%s: not subscribed within %.1fs %s" % (
                        self.url, timeout, self._error), url=self.url, detail=self._error)
                self._cond.wait(left)
        log.info("mqtt receiver %s: listening on %s", self.url, self.topic)
        return self

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._cond:
            self._subscribed = False

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    # -- paho callbacks (network thread) -----------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    properties: Any = None) -> None:
        if rc.is_failure:
            with self._cond:
                self._error = str(rc)
                self._cond.notify_all()
            log.warning("mqtt receiver %s: broker refused connection: %s", self.url, rc)
            return
        no_delay(client)
        client.subscribe(self.topic, qos=self.qos)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       properties: Any = None) -> None:
        with self._cond:
            self._subscribed = False
        log.info("mqtt receiver %s: disconnected (%s)", self.url, rc)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                      properties: Any = None) -> None:
        with self._cond:
            if codes and not codes[0].is_failure:
                self._subscribed = True
            else:
                self._error = "subscription refused: %s" % (codes,)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.counts["received"] += 1
        where = parse_up_topic(msg.topic)
        if where is None:
            self.counts["malformed"] += 1
            log.warning("mqtt receiver %s: ignoring message on %r", self.url, msg.topic)
            return
        device, seq = where
        answer = self._ingest(device, seq, bytes(msg.payload))
        if answer is None:
            return
        try:
            client.publish(ACK_TOPIC % device, json.dumps(answer, separators=(",", ":")),
                           qos=self.qos)
        except (ValueError, TypeError) as e:   # an unsendable ack: the agent will retry
            log.error("mqtt receiver: cannot acknowledge %s/%d: %s", device, seq, e)

    def _ingest(self, device: str, seq: int, payload: bytes) -> dict[str, Any] | None:
        try:
            ack = self.handle(device, seq, payload)
            answer = dict(ack.as_dict() if hasattr(ack, "as_dict") else ack)
        except Exception as e:  # noqa: BLE001 - every failure is sorted below, none lost
            reason = getattr(e, "reason", None)
            if isinstance(reason, str) and reason:
                self.counts["rejected"] += 1
                log.info("mqtt receiver: %s/%d rejected: %s", device, seq, reason)
                return {"device": device, "seq": seq, "error": reason}
            self.counts["failed"] += 1
            log.exception("mqtt receiver: ingest of %s/%d failed; not acknowledged", device, seq)
            return None
        self.counts["acked"] += 1
        return answer
