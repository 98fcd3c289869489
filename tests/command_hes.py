"""A STAND-IN for HES-lite's command side, for the agent's own tests while
the real one (branch i11-hes) is built in parallel: the real formats
(``agent/command.py``, ``agent/envelope.py``) and the wire of
/work/wt/briefs/i11-wire.md, none of the HES's store, queue or API.

It signs commands with its own Ed25519 key, seals them for the device
(kind 2, downlink key, one Sealer so nonces never repeat), and serves them
the three ways the agent fetches them: in batch acks (``PUT
/v1/batches/...``), in idle-poll answers (``POST /v1/poll/...``), and pushed
on MQTT ``wum/cmd/<device>``; it stores results (kind 3) by counter, once,
and answers ``accepted``/``duplicate`` like the wire says. Tests using it
say so in their docstring; the lead's end-to-end tests use ``hes-lite
serve`` itself."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from agent import command, envelope
from agent.ed25519 import public_key

SECRET = hashlib.sha256(b"stand-in HES command key").digest()


class StandInHes:
    def __init__(self, device: str, root_key: bytes, clock: Callable[[], float] = time.time,
                 secret: bytes = SECRET) -> None:
        self.device = device
        self.clock = clock
        self.secret = secret
        self.public = public_key(secret)
        self.counter = 0
        self.sealer = envelope.Sealer(device, root_key, envelope.MemoryBootStore(),
                                      purpose=envelope.PURPOSE_DOWNLINK)
        self.uplink = envelope.Keyring()
        self.uplink.add(device, root_key)
        self.pending: dict[int, bytes] = {}          # counter -> sealed, until a result
        self.results: dict[int, dict[str, Any]] = {}
        self.result_posts = 0
        self.keep_pending = False       # True: act as a HES that lost the results it got
        self.polls = 0
        self.batches = 0
        self.lock = threading.Condition()
        self._http: http.server.ThreadingHTTPServer | None = None
        self._mqtt: Any = None

    # -- making commands ---------------------------------------------------------
    def sign(self, op: str, meter: str = "", args: dict[str, Any] | None = None,
             counter: int | None = None, ttl: int = 3600, concentrator: str | None = None,
             secret: bytes | None = None, issued: int | None = None) -> bytes:
        """A signed command (not queued). ``counter`` None takes the next one."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        sec = secret or self.secret
        now = int(self.clock()) if issued is None else issued
        cmd = command.Command(op, "c-%d" % counter, concentrator or self.device, meter, counter,
                              now, now + ttl, command.key_id(public_key(sec)), args or {})
        body = cmd.to_body()
        return command.signed(body, command.sign(body, sec))

    def seal(self, signed: bytes) -> bytes:
        return self.sealer.seal(signed, envelope.KIND_COMMAND)

    def queue(self, signed: bytes) -> bytes:
        """Seal and hold ``signed`` for delivery (acks, polls); push it on MQTT
        when attached. Returns the sealed bytes."""
        sealed = self.seal(signed)
        cmd, _, _ = command.parse_signed(signed)
        with self.lock:
            self.pending[cmd.counter] = sealed
        if self._mqtt is not None:
            self._mqtt.publish("wum/cmd/%s" % self.device, sealed, qos=1).wait_for_publish(10)
        return sealed

    def wait_result(self, counter: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while counter not in self.results:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no result for counter %d in %.0fs (have %s)" % (
                        counter, timeout, sorted(self.results)))
                self.lock.wait(left)
            return self.results[counter]

    # -- what arrives --------------------------------------------------------------
    def _open(self, sealed: bytes, kind: int) -> bytes:
        opened = envelope.open_envelope(sealed, self.uplink)
        assert opened.header.kind == kind, opened.header
        return opened.payload

    def take_result(self, counter: int, sealed: bytes) -> dict[str, Any]:
        doc = json.loads(self._open(sealed, envelope.KIND_RESULT))
        assert doc["counter"] == counter
        with self.lock:
            self.result_posts += 1
            status = "duplicate" if counter in self.results else "accepted"
            self.results.setdefault(counter, doc)
            if not self.keep_pending:
                self.pending.pop(counter, None)
            self.lock.notify_all()
        return {"device": self.device, "counter": counter, "status": status}

    def _commands(self) -> list[str]:
        with self.lock:
            return [self.pending[c].hex() for c in sorted(self.pending)][:16]

    # -- HTTP ----------------------------------------------------------------------
    def serve_http(self) -> str:
        hes = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _reply(self, doc: dict[str, Any], status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def do_PUT(self) -> None:  # noqa: N802
                parts = self.path.strip("/").split("/")
                data = self._body()
                if parts[:2] == ["v1", "batches"]:
                    hes._open(data, envelope.KIND_BATCH)
                    hes.batches += 1
                    self._reply({"device": parts[2], "seq": int(parts[3]), "status": "accepted",
                                 "server_time": hes.clock(), "commands": hes._commands()})
                elif parts[:2] == ["v1", "results"]:
                    self._reply(hes.take_result(int(parts[3]), data))
                else:
                    self._reply({"error": "not_found"}, 404)

            def do_POST(self) -> None:  # noqa: N802
                parts = self.path.strip("/").split("/")
                data = self._body()
                if parts[:2] != ["v1", "poll"]:
                    self._reply({"error": "not_found"}, 404)
                    return
                hes._open(data, envelope.KIND_POLL)
                hes.polls += 1
                self._reply({"device": parts[2], "commands": hes._commands(),
                             "server_time": hes.clock()})

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return "http://127.0.0.1:%d" % self._http.server_address[1]

    # -- MQTT ----------------------------------------------------------------------
    def attach_mqtt(self, broker_url: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from agent.transport import mqtt_endpoint

        ep = mqtt_endpoint(broker_url, "standin")
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=ep["client_id"],
                        protocol=mqtt.MQTTv5)
        ready = threading.Event()

        def on_connect(client: Any, *a: Any) -> None:
            client.subscribe([("wum/result/#", 1), ("wum/up/#", 1)])

        def on_subscribe(*a: Any) -> None:
            ready.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            parts = msg.topic.split("/")
            if parts[1] == "result":
                doc = self.take_result(int(parts[3]), bytes(msg.payload))
                client.publish("wum/rack/%s" % parts[2], json.dumps(doc), qos=1)
            elif parts[1] == "up":
                self._open(bytes(msg.payload), envelope.KIND_BATCH)
                self.batches += 1
                client.publish("wum/ack/%s" % parts[2], json.dumps(
                    {"device": parts[2], "seq": int(parts[3]), "status": "accepted",
                     "server_time": self.clock(), "commands": self._commands()}), qos=1)

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect(ep["host"], ep["port"])
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("stand-in HES: no subscription on %s" % broker_url)
        self._mqtt = c

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
