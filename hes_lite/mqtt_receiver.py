"""The MQTT receiver of HES-lite: batches in on ``wum/up/{device_id}/{seq}``,
acknowledgements out on ``wum/ack/{device_id}``; with a ``results`` handler
also command results in on ``wum/result/{device_id}/{counter}``, answered on
``wum/rack/{device_id}``; and ``publish`` for the command push
(``wum/cmd/{device_id}``), calling back when the broker acknowledged it.

Owns the broker connection (paho-mqtt 2.x, MQTT 5), the subscription (an
MQTT 5 shared subscription ``$share/<group>/wum/up/+/+`` when several HES
workers split the load), turning a message into a ``handle(device_id, seq,
payload)`` call and its outcome into the ack JSON:

    handle returns a dict            → that dict (``{"device", "seq", "status",
                                       "server_time"}``) QoS 1 to the ack topic
    handle raises with a ``reason``  → ``{"device", "seq", "error": reason}``
    handle raises anything else      → no ack (a transient failure: the agent
                                       times out and retransmits)

Results go the same way through ``results(device_id, counter, payload)``
(``{"device", "counter", "status"}`` or ``{"device", "counter", "error"}``).

``handle`` runs in paho's network thread and the broker's PUBACK for the
upload goes out only after it returns, so the ingest's durable write happens
before anything is acknowledged to anyone. With ``handle_many`` instead
(a worker of a busy fleet), uploads are queued as they come and a thread of
the receiver hands what has gathered — up to ``group`` — to one
``handle_many([(device, seq, payload), …])`` call (one durable transaction
for all of them), whose answers (an ack dict or the exception) become the
ack JSON as above; the PUBACKs are sent by hand (paho's manual acks) after
that call returned, so the rule holds per message. The broker is only a pipe: nothing
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
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
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
RESULT_FILTER = "wum/result/+/+"
RACK_TOPIC = "wum/rack/%s"
CMD_TOPIC = "wum/cmd/%s"
SESSION_EXPIRY = 3600  # s the broker keeps a named HES's session and its messages

Handle = Callable[[str, int, bytes], dict[str, Any]]
# [(device, seq, payload)] -> per item its ack dict, or the exception it raised
HandleMany = Callable[[Sequence[tuple[str, int, bytes]]], list[dict[str, Any] | Exception]]


class ReceiverError(HesError):
    """The receiver could not connect or subscribe (fields: url, detail)."""


def _endpoint(url: str) -> dict[str, Any]:
    try:
        return mqtt_endpoint(url, prefix="hes")
    except TransportError as e:
        raise ReceiverError(str(e), url=redact(url)) from None


def parse_up_topic(topic: str, kind: str = "up") -> tuple[str, int] | None:
    """``wum/up/{device}/{seq}`` (or ``wum/<kind>/…``) → (device, seq), or None
    if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "wum" or parts[1] != kind or not parts[2]:
        return None
    if any(c in parts[2] for c in "+#\x00"):   # could not be answered on an ack topic
        return None
    if not parts[3].isdigit():
        return None
    return parts[2], int(parts[3])


class MqttReceiver:
    def __init__(self, url: str, handle: Handle, shared_group: str | None = None,
                 qos: int = 1, results: Handle | None = None,
                 handle_many: HandleMany | None = None, group: int = 32) -> None:
        self.endpoint = _endpoint(url)
        self.url = redact(url)          # what logs and errors show: no password
        self.handle = handle
        self.handle_many = handle_many
        self.group = group
        self._inbox: queue.Queue[tuple[str, int, bytes, int, int]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self.results = results
        self.shared_group = shared_group
        self.qos = qos
        filters = [UP_FILTER] + ([RESULT_FILTER] if results is not None else [])
        self.topics = [("$share/%s/%s" % (shared_group, f)) if shared_group else f
                       for f in filters]
        self.topic = self.topics[0]
        self._client: mqtt.Client | None = None
        self._cond = threading.Condition()
        self._subscribed = False
        self._error = ""
        self._pub_lock = threading.Lock()
        self._on_acked: dict[int, Callable[[], None]] = {}
        self._acked_early: set[int] = set()   # PUBACKs that beat their registration
        self._registering = 0
        self.counts = {"received": 0, "acked": 0, "rejected": 0, "failed": 0, "malformed": 0}
        self.command_counts = {"results": 0, "published": 0}

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> MqttReceiver:
        """Connect and subscribe; ``ReceiverError`` if that takes longer than
        ``timeout`` (paho keeps retrying in the background until ``stop``)."""
        if self._client is None:
            ep = self.endpoint
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ep["client_id"],
                                 protocol=mqtt.MQTTv5, manual_ack=self.handle_many is not None)
            if ep["username"]:
                client.username_pw_set(ep["username"], ep["password"])
            if ep["tls"]:
                client.tls_set_context(ssl.create_default_context(cafile=ep["ca"]))
            client.reconnect_delay_set(1, 4)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            if ep["persistent"]:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY
                client.connect_async(ep["host"], ep["port"], keepalive=30, clean_start=False,
                                     properties=props)
            else:
                client.connect_async(ep["host"], ep["port"], keepalive=30)
            client.loop_start()
            self._client = client
            if self.handle_many is not None and self._worker is None:
                self._stopping.clear()
                self._worker = threading.Thread(target=self._drain, name="hes-mqtt-ingest",
                                                daemon=True)
                self._worker.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._subscribed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReceiverError("%s: not subscribed within %.1fs %s" % (
                        self.url, timeout, self._error), url=self.url, detail=self._error)
                self._cond.wait(left)
        log.info("mqtt receiver %s: listening on %s", self.url, ", ".join(self.topics))
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(30)
            self._worker = None
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
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       properties: Any = None) -> None:
        with self._cond:
            self._subscribed = False
        log.info("mqtt receiver %s: disconnected (%s)", self.url, rc)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                      properties: Any = None) -> None:
        with self._cond:
            if codes and not any(c.is_failure for c in codes):
                self._subscribed = True
            else:
                self._error = "subscription refused: %s" % (codes,)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.handle_many is None:
            self._answer(client, msg)
            return
        up = parse_up_topic(msg.topic)
        if up is not None:   # to the ingest thread; acked there once durable
            self.counts["received"] += 1
            self._inbox.put((up[0], up[1], bytes(msg.payload), msg.mid, msg.qos))
            return
        try:
            self._answer(client, msg)
        finally:
            client.ack(msg.mid, msg.qos)

    def _answer(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        self.counts["received"] += 1
        up = parse_up_topic(msg.topic)
        res = parse_up_topic(msg.topic, "result") if up is None and self.results else None
        if up is None and res is None:
            self.counts["malformed"] += 1
            log.warning("mqtt receiver %s: ignoring message on %r", self.url, msg.topic)
            return
        if up is not None:
            device, seq = up
            answer = self._ingest(self.handle, "seq", device, seq, bytes(msg.payload))
            topic = ACK_TOPIC % device
        else:
            assert res is not None and self.results is not None
            device, seq = res
            answer = self._ingest(self.results, "counter", device, seq, bytes(msg.payload))
            topic = RACK_TOPIC % device
        if answer is None:
            return
        try:
            client.publish(topic, json.dumps(answer, separators=(",", ":")), qos=self.qos)
        except (ValueError, TypeError) as e:   # an unsendable ack: the agent will retry
            log.error("mqtt receiver: cannot acknowledge %s/%d: %s", device, seq, e)

    def _ingest(self, handle: Handle, name: str, device: str, seq: int,
                payload: bytes) -> dict[str, Any] | None:
        try:
            ack = handle(device, seq, payload)
            answer = dict(ack.as_dict() if hasattr(ack, "as_dict") else ack)
        except Exception as e:  # noqa: BLE001 - every failure is sorted below, none lost
            reason = getattr(e, "reason", None)
            if isinstance(reason, str) and reason:
                self.counts["rejected"] += 1
                log.info("mqtt receiver: %s/%d rejected: %s", device, seq, reason)
                return {"device": device, name: seq, "error": reason}
            self.counts["failed"] += 1
            log.exception("mqtt receiver: %s %s/%d failed; not acknowledged", name, device, seq)
            return None
        if name == "seq":
            self.counts["acked"] += 1
        else:
            self.command_counts["results"] += 1
        return answer

    # -- uploads in groups (the ingest thread) -----------------------------------
    def _drain(self) -> None:
        while not self._stopping.is_set():
            try:
                items = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(items) < self.group:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._ingest_group(items)

    def _ingest_group(self, items: list[tuple[str, int, bytes, int, int]]) -> None:
        assert self.handle_many is not None
        try:
            answers = self.handle_many([(d, s, p) for d, s, p, _, _ in items])
        except Exception as e:  # noqa: BLE001 - a failing store: no acks, the agents retry
            log.exception("mqtt receiver: ingest of %d uploads failed; not acknowledged",
                          len(items))
            answers = [e] * len(items)
        client = self._client
        for (device, seq, _, mid, qos), answer in zip(items, answers, strict=True):
            doc = self._outcome(device, seq, answer)
            if client is None:
                continue
            if doc is not None:
                try:
                    client.publish(ACK_TOPIC % device, json.dumps(doc, separators=(",", ":")),
                                   qos=self.qos)
                except (ValueError, TypeError) as e:
                    log.error("mqtt receiver: cannot acknowledge %s/%d: %s", device, seq, e)
            client.ack(mid, qos)

    def _outcome(self, device: str, seq: int, answer: dict[str, Any] | Exception
                 ) -> dict[str, Any] | None:
        if not isinstance(answer, Exception):
            self.counts["acked"] += 1
            return dict(answer)
        reason = getattr(answer, "reason", None)
        if isinstance(reason, str) and reason:
            self.counts["rejected"] += 1
            log.info("mqtt receiver: %s/%d rejected: %s", device, seq, reason)
            return {"device": device, "seq": seq, "error": reason}
        self.counts["failed"] += 1
        log.warning("mqtt receiver: %s/%d failed (%s); not acknowledged", device, seq, answer)
        return None

    # -- publishing (the command push) --------------------------------------------
    def publish(self, topic: str, payload: bytes,
                on_acked: Callable[[], None] | None = None) -> None:
        """Publish at the receiver's QoS; ``on_acked()`` runs (in paho's
        network thread) once the broker acknowledged it. Raises
        ``ReceiverError`` when not started or paho refuses the message."""
        client = self._client
        if client is None:
            raise ReceiverError("%s: not started" % self.url, url=self.url)
        with self._pub_lock:
            self._registering += 1
        try:
            try:
                info = client.publish(topic, payload, qos=self.qos)
            except (ValueError, TypeError) as e:
                raise ReceiverError("%s: cannot publish on %s: %s" % (self.url, topic, e),
                                    url=self.url, topic=topic) from None
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise ReceiverError("%s: publish on %s refused: %s" % (self.url, topic, info.rc),
                                    url=self.url, topic=topic)
            # without a connection paho queues the message and sends it on reconnect
            self.command_counts["published"] += 1
            with self._pub_lock:   # the PUBACK may have come back before we got here
                early = info.mid in self._acked_early
                if not early and on_acked is not None:
                    self._on_acked[info.mid] = on_acked
        finally:
            with self._pub_lock:
                self._registering -= 1
                if not self._registering:
                    self._acked_early.clear()
        if early and on_acked is not None:
            on_acked()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any = None,
                    properties: Any = None) -> None:
        with self._pub_lock:
            done = self._on_acked.pop(mid, None)
            if done is None and self._registering:   # a publish() may not have registered yet
                self._acked_early.add(mid)
        if done is not None:
            done()
