"""Uplink transports: the pipes a sealed batch travels to HES-lite.

Owns moving one opaque payload ``(device_id, seq, bytes)`` to the head end
and bringing back its acknowledgement: the ``Transport`` interface, ``Ack``,
``TransportError`` and ``transport_for(url)`` live here; the pipes are
``agent.transport.http`` (stdlib ``http.client``: the agent pulls in no web
framework) and ``agent.transport.mqtt`` (paho-mqtt 2.x, MQTT 5). Every
failure is a ``TransportError`` whose ``reason`` says what the store-and-
forward loop should do:

    unreachable  no connection / server error (5xx) / broker down: retry later
    timeout      sent, but no answer in time: retransmit the same bytes
    rejected     the HES refused the batch (``hes_reason`` names why): do not
                 retransmit these bytes
    protocol     the answer made no sense (bad JSON, wrong device/seq)

Brokers are pipes: an MQTT ack that never comes (broker restarted, message
dropped) is a ``timeout`` and costs one retransmission; the HES acknowledges a
retransmitted ``(device, seq)`` as ``duplicate``.

The same pipes carry signed commands back (docs/command-format.md): an
``Ack`` lists the sealed commands pending for the device; ``poll`` asks for
them when the agent is idle (HTTP ``POST /v1/poll/{device}``); ``listen``
subscribes to pushed commands (MQTT ``wum/cmd/<device>``; HTTP has no push);
``send_result`` delivers a sealed command result (HTTP ``PUT
/v1/results/{device}/{counter}``, MQTT ``wum/result/<device>/<counter>``
answered on ``wum/rack/<device>``). Errors are ``TransportError`` with the
same reasons as for batches.

Must not know what is inside a payload (batch codec, envelope) nor how the
HES stores it. Never blocks longer than the ``timeout`` given to ``send``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agent import AgentError

log = logging.getLogger(__name__)

REASONS = ("unreachable", "timeout", "rejected", "protocol")
STATUSES = ("accepted", "duplicate")
UP_TOPIC = "wum/up/%s/%d"
ACK_TOPIC = "wum/ack/%s"
CMD_TOPIC = "wum/cmd/%s"
RESULT_TOPIC = "wum/result/%s/%d"
RACK_TOPIC = "wum/rack/%s"
MAX_COMMANDS = 64           # sealed commands taken from one answer (the HES sends <= 16)


class TransportError(AgentError):
    """A batch could not be delivered; ``reason`` is one of ``REASONS``.

    Fields: ``reason``, ``device``, ``seq``, ``url``, and for ``rejected``
    the HES's ``hes_reason``; ``status`` (HTTP status) when there was one.
    """

    reason: str
    hes_reason: str | None

    def __init__(self, message: str, reason: str, **fields: object) -> None:
        fields.setdefault("hes_reason", None)
        super().__init__(message, reason=reason, **fields)

    @property
    def retryable(self) -> bool:
        """False only when the HES refused these exact bytes."""
        return self.reason != "rejected"


@dataclass(frozen=True)
class Ack:
    device: str
    seq: int
    status: str  # "accepted" | "duplicate"
    server_time: float
    # The HES holds the batch but lacks the codec state it is a delta of: the
    # next batch must be a keyframe.
    need_keyframe: bool = False
    # Sealed commands pending for this device, oldest first (kind-2 envelopes).
    commands: tuple[bytes, ...] = ()

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"device": self.device, "seq": self.seq, "status": self.status,
                                "server_time": self.server_time}
        if self.need_keyframe:
            d["need_keyframe"] = True
        if self.commands:
            d["commands"] = [c.hex() for c in self.commands]
        return d


@dataclass(frozen=True)
class Polled:
    """The HES's answer to an idle poll."""
    device: str
    commands: tuple[bytes, ...]
    server_time: float


@dataclass(frozen=True)
class ResultAck:
    """The HES stored a command result (``accepted``) or had it (``duplicate``)."""
    device: str
    counter: int
    status: str


def parse_commands(answer: dict[str, Any], device: str) -> tuple[bytes, ...]:
    """The ``commands`` list of an answer: hex strings of sealed commands. An
    entry that is not hex is dropped with a warning (the batch it rides on was
    still acknowledged)."""
    raw = answer.get("commands")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        log.warning("HES answer for %s: commands is not a list; ignored", device)
        return ()
    out = []
    for item in raw[:MAX_COMMANDS]:
        try:
            out.append(bytes.fromhex(item))
        except (TypeError, ValueError):
            log.warning("HES answer for %s: a command that is not hex; ignored: %r", device,
                        str(item)[:80])
    return tuple(out)


def _refusal(answer: Any, what: str, device: str, url: str, **fields: object) -> None:
    if isinstance(answer, dict) and "error" in answer:
        reason = str(answer["error"])
        raise TransportError("HES rejected %s of %s: %s" % (what, device, reason), "rejected",
                             device=device, url=url, hes_reason=reason, **fields)


def parse_polled(answer: Any, device: str, url: str) -> Polled:
    _refusal(answer, "a poll", device, url)
    if not isinstance(answer, dict) or answer.get("device") != device:
        raise TransportError("bad poll answer from %s for %s" % (url, device), "protocol",
                             device=device, url=url)
    t = answer.get("server_time")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        t = 0.0
    return Polled(device, parse_commands(answer, device), float(t))


def parse_result_ack(answer: Any, device: str, counter: int, url: str) -> ResultAck:
    _refusal(answer, "result %d" % counter, device, url, counter=counter)
    if not isinstance(answer, dict) or answer.get("device") != device or \
            answer.get("counter") != counter or answer.get("status") not in STATUSES:
        raise TransportError("bad result answer from %s for %s/%d" % (url, device, counter),
                             "protocol", device=device, counter=counter, url=url)
    return ResultAck(device, counter, str(answer["status"]))


def parse_ack(answer: Any, device: str, seq: int, url: str) -> Ack:
    """Check an answer document against the batch it acknowledges."""
    def bad(why: str) -> TransportError:
        return TransportError("bad acknowledgement from %s: %s" % (url, why), "protocol",
                              device=device, seq=seq, url=url)

    if not isinstance(answer, dict):
        raise bad("not a JSON object")
    if "error" in answer:
        reason = str(answer["error"])
        raise TransportError("HES rejected batch %s/%d: %s" % (device, seq, reason), "rejected",
                             device=device, seq=seq, url=url, hes_reason=reason)
    status = answer.get("status")
    t = answer.get("server_time")
    if answer.get("device") != device or answer.get("seq") != seq:
        raise bad("acknowledges %r/%r" % (answer.get("device"), answer.get("seq")))
    if status not in STATUSES:
        raise bad("status %r" % (status,))
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise bad("server_time %r" % (t,))
    return Ack(device, seq, str(status), float(t), answer.get("need_keyframe") is True,
               parse_commands(answer, device))


def check_device(device: str, seq: int, url: str) -> None:
    if not device or any(c in device for c in "/+#\x00") or seq < 0:
        raise TransportError("device id %r / seq %r cannot be sent" % (device, seq), "protocol",
                             device=device, seq=seq, url=url)


class Transport:
    """One way to the HES. ``send``, ``poll`` and ``send_result`` are blocking
    and thread-safe. ``push`` says whether ``listen`` delivers commands at once
    (then the agent need not poll)."""

    url = ""
    push = False

    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        raise NotImplementedError

    def poll(self, device_id: str, payload: bytes, timeout: float) -> Polled:
        """Ask for pending commands with a sealed kind-4 envelope."""
        raise TransportError("%s cannot poll" % type(self).__name__, "protocol",
                             device=device_id, url=self.url)

    def send_result(self, device_id: str, counter: int, payload: bytes,
                    timeout: float) -> ResultAck:
        """Deliver a sealed kind-3 command result; returns once the HES stored it."""
        raise TransportError("%s cannot carry command results" % type(self).__name__,
                             "protocol", device=device_id, url=self.url)

    def fetch(self, package_id: str, sealed: bytes, length: int, timeout: float) -> bytes:
        """A range of an update package for a sealed kind-5 request (the
        device's own, or a mesh origin's at a gateway): ``POST
        /v1/firmware/{id}/fetch`` over HTTP, a FETCH message over the mesh."""
        raise TransportError("this uplink cannot fetch update packages (set [update] url)",
                             "protocol")

    def listen(self, device_id: str, on_command: Callable[[bytes], object]) -> bool:
        """Have pushed sealed commands handed to ``on_command`` (from another
        thread). False when this transport has no push (poll instead)."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def transport_for(url: str) -> Transport:
    """``http(s)://host[:port][/prefix]`` or ``mqtt(s)://[user:pass@]host[:port]``."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return HttpTransport(url)
    if scheme in ("mqtt", "mqtts"):
        from agent.transport.mqtt import MqttTransport as Mqtt  # needs paho-mqtt

        return Mqtt(url)
    raise TransportError("no transport for %r (http, https, mqtt, mqtts)" % redact(url),
                         "protocol", url=redact(url))


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = "%s:***@%s" % (parts.username or "", parts.netloc.rpartition("@")[2])
    return parts._replace(netloc=netloc).geturl()


def mqtt_endpoint(url: str, prefix: str = "wum") -> dict[str, Any]:
    """Split ``mqtt(s)://[user:pass@]host[:port][?client_id=…&keepalive=…&ca=…&group=…]``
    into what paho needs; both ends of the uplink (the agent's transport and
    HES-lite's receiver) parse their broker URL here. A stable ``client_id``
    lets the broker keep a session (and queued messages) across restarts
    (``persistent``); the default is random per process (``prefix-pid-random``),
    so two clients can never evict each other. ``group`` names an MQTT 5
    shared subscription (HES workers splitting the load)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise TransportError("not an mqtt(s) URL: %r" % redact(url), "protocol", url=redact(url))
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        keepalive = int(query.get("keepalive", "30"))
        port = parts.port
    except ValueError:
        raise TransportError("bad port or keepalive in %r" % redact(url), "protocol",
                             url=redact(url)) from None
    return {
        "host": parts.hostname,
        "port": port or (8883 if parts.scheme == "mqtts" else 1883),
        "tls": parts.scheme == "mqtts",
        "ca": query.get("ca"),          # mqtts://…?ca=/path/ca.pem: a private CA
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "client_id": query.get("client_id") or "%s-%d-%s" % (prefix, os.getpid(),
                                                              os.urandom(4).hex()),
        "persistent": bool(query.get("client_id")),
        "group": query.get("group"),
        "keepalive": keepalive,
    }


# The pipes, importable from here too (they import the names above).
from agent.transport.http import HttpTransport  # noqa: E402

try:
    from agent.transport.mqtt import MqttTransport  # noqa: E402
except ImportError:  # pragma: no cover - an image without paho-mqtt has HTTP only
    pass

__all__ = ["REASONS", "Ack", "HttpTransport", "MqttTransport", "Polled", "ResultAck",
           "Transport", "TransportError", "mqtt_endpoint", "parse_ack", "parse_polled",
           "parse_result_ack", "redact", "transport_for"]
