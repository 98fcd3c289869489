"""agent.transport over HTTP against a real (stdlib) HTTP server that keeps
the uplink contract of docs/INTERFACES.md: PUT /v1/batches/{device}/{seq},
200 {"device","seq","status","server_time"}, 4xx {"error": reason}."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transport import Ack, TransportError, parse_ack, transport_for
from agent.transport.http import HttpTransport
from tests.mqtt_broker import self_signed_cert


class FakeHes(ThreadingHTTPServer):
    """The PUT contract with switchable misbehaviour (``mode``)."""

    daemon_threads = True

    def __init__(self, keep_alive: bool = True, port: int = 0) -> None:
        self.stored: dict[tuple[str, int], bytes] = {}
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.open_sockets: list[socket.socket] = []
        handler = type("H", (Handler,), {"protocol_version":
                                          "HTTP/1.1" if keep_alive else "HTTP/1.0"})
        super().__init__(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def get_request(self):  # count TCP connections (keep-alive reuse)
        self.connections += 1
        sock, addr = super().get_request()
        self.open_sockets.append(sock)
        return sock, addr

    def crash(self) -> None:
        """Stop listening and cut every open connection (a dead HES)."""
        self.shutdown()
        self.server_close()
        for sock in self.open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    server: FakeHes

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, doc: object = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        s = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        s.requests.append((self.path, self.headers.get("Content-Type", "")))
        parts = self.path.split("/")
        if len(parts) < 5 or parts[-3] != "batches":
            return self._answer(404, {"error": "not_found"})
        device, seq = unquote(parts[-2]), int(parts[-1])
        if s.delay:
            time.sleep(s.delay)
        if s.mode == "reject":
            return self._answer(403, {"error": "bad_tag"})
        if s.mode == "reject_plain":
            return self._answer(400, raw=b"nope")
        if s.mode == "down":
            return self._answer(503, {"error": "overloaded"})
        if s.mode == "drip":               # headers, then a byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                time.sleep(0.2)
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
            return
        if s.mode == "garbage":
            return self._answer(200, raw=b"\x00not json")
        if s.mode == "wrong_seq":
            return self._answer(200, {"device": device, "seq": seq + 1, "status": "accepted",
                                      "server_time": time.time()})
        status = "duplicate" if (device, seq) in s.stored else "accepted"
        s.stored.setdefault((device, seq), body)
        self._answer(200, {"device": device, "seq": seq, "status": status,
                           "server_time": time.time()})


@pytest.fixture
def hes():
    server = FakeHes()
    server.thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_accepted_then_duplicate_on_one_kept_alive_connection(hes):
    payload = bytes(range(256)) * 3
    with HttpTransport(hes.url) as t:
        a1 = t.send("conc-01", 7, payload, timeout=5)
        a2 = t.send("conc-01", 7, payload, timeout=5)
        a3 = t.send("conc-01", 8, b"x", timeout=5)
    assert isinstance(a1, Ack)
    assert (a1.device, a1.seq, a1.status) == ("conc-01", 7, "accepted")
    assert a2.status == "duplicate" and a3.status == "accepted"
    assert abs(a1.server_time - time.time()) < 60
    assert hes.stored[("conc-01", 7)] == payload
    assert hes.requests[0] == ("/v1/batches/conc-01/7", "application/octet-stream")
    assert hes.connections == 1


def test_base_path_and_quoted_device_id(hes):
    t = transport_for(hes.url + "/hes/")
    assert isinstance(t, HttpTransport)
    ack = t.send("site 3:conc", 1, b"p", timeout=5)
    t.close()
    assert ack.device == "site 3:conc"
    assert hes.requests[0][0] == "/hes/v1/batches/site%203%3Aconc/1"


def test_rejected_carries_hes_reason_and_is_not_retryable(hes):
    hes.mode = "reject"
    with HttpTransport(hes.url) as t, pytest.raises(TransportError) as e:
        t.send("c", 1, b"p", timeout=5)
    assert e.value.reason == "rejected" and e.value.hes_reason == "bad_tag"
    assert e.value.status == 403 and not e.value.retryable
    hes.mode = "reject_plain"
    with HttpTransport(hes.url) as t, pytest.raises(TransportError) as e:
        t.send("c", 1, b"p", timeout=5)
    assert e.value.reason == "rejected" and e.value.hes_reason == "http_400"


def test_server_error_is_unreachable_and_retryable(hes):
    hes.mode = "down"
    with HttpTransport(hes.url) as t:
        with pytest.raises(TransportError) as e:
            t.send("c", 1, b"p", timeout=5)
        assert e.value.reason == "unreachable" and e.value.status == 503 and e.value.retryable
        hes.mode = "ok"                     # the same transport recovers
        assert t.send("c", 1, b"p", timeout=5).status == "accepted"


def test_connection_refused_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with HttpTransport("http://127.0.0.1:%d" % port) as t, pytest.raises(TransportError) as e:
        t.send("c", 1, b"p", timeout=2)
    assert e.value.reason == "unreachable"
    assert time.monotonic() - t0 < 2.5


def test_slow_server_is_timeout_within_the_deadline(hes):
    hes.delay = 1.5
    t0 = time.monotonic()
    with HttpTransport(hes.url) as t:
        with pytest.raises(TransportError) as e:
            t.send("c", 1, b"p", timeout=0.4)
        took = time.monotonic() - t0
        assert e.value.reason == "timeout" and e.value.retryable
        assert took < 1.2
        hes.delay = 0
        time.sleep(1.3)                    # the slow first copy lands: retransmit = duplicate
        assert t.send("c", 1, b"p", timeout=5).status == "duplicate"


def test_a_dripping_answer_cannot_stretch_the_deadline(hes):
    hes.mode = "drip"
    t0 = time.monotonic()
    with HttpTransport(hes.url) as t, pytest.raises(TransportError) as e:
        t.send("c", 1, b"p", timeout=1.0)
    assert e.value.reason == "timeout"
    assert time.monotonic() - t0 < 1.5


def test_nonsense_answers_are_protocol_errors(hes):
    for mode in ("garbage", "wrong_seq"):
        hes.mode = mode
        with HttpTransport(hes.url) as t, pytest.raises(TransportError) as e:
            t.send("c", 1, b"p", timeout=5)
        assert e.value.reason == "protocol", mode


def test_server_closing_idle_connections_is_transparent():
    server = FakeHes(keep_alive=False)      # HTTP/1.0: closes after every answer
    server.thread.start()
    try:
        with HttpTransport(server.url) as t:
            for seq in range(5):
                assert t.send("c", seq, b"p", timeout=5).status == "accepted"
        assert server.connections == 5
    finally:
        server.shutdown()
        server.server_close()


def test_restarted_server_behind_a_kept_alive_connection():
    server = FakeHes()
    server.thread.start()
    port = server.server_address[1]
    t = HttpTransport(server.url)
    assert t.send("c", 1, b"p", timeout=5).status == "accepted"
    server.crash()                          # the kept-alive socket is now dead
    with pytest.raises(TransportError) as e:
        t.send("c", 2, b"p", timeout=2)
    assert e.value.reason == "unreachable"
    again = FakeHes(port=port)              # back on the same port
    again.thread.start()
    try:
        assert t.send("c", 2, b"p", timeout=5).status == "accepted"
    finally:
        t.close()
        again.shutdown()
        again.server_close()


def test_bad_urls_and_device_ids():
    with pytest.raises(TransportError) as e:
        transport_for("ftp://x")
    assert e.value.reason == "protocol"
    with pytest.raises(TransportError):
        HttpTransport("http://")
    t = HttpTransport("http://127.0.0.1:9")
    for dev, seq in (("a/b", 1), ("", 1), ("a#", 1), ("ok", -1)):
        with pytest.raises(TransportError) as e:
            t.send(dev, seq, b"", timeout=1)
        assert e.value.reason == "protocol"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=8)
answers = st.one_of(
    json_values,
    st.fixed_dictionaries({"device": st.sampled_from(["d", "e", 1]),
                           "seq": st.sampled_from([5, 6, "5", True]),
                           "status": st.sampled_from(["accepted", "duplicate", "nope", None]),
                           "server_time": st.one_of(st.floats(allow_nan=False),
                                                    st.integers(), st.booleans(), st.text())}),
    st.fixed_dictionaries({"error": json_values}))


@settings(max_examples=300, deadline=None)
@given(answers)
def test_parse_ack_gives_an_ack_or_the_typed_error(doc):
    try:
        ack = parse_ack(doc, "d", 5, "u")
    except TransportError as e:
        assert e.reason in ("protocol", "rejected")
    else:
        assert (ack.device, ack.seq) == ("d", 5) and ack.status in ("accepted", "duplicate")


@settings(max_examples=300, deadline=None)
@given(st.integers(100, 599), st.binary(max_size=64) | answers.map(
    lambda d: json.dumps(d).encode()))
def test_any_http_answer_gives_an_ack_or_the_typed_error(status, body):
    t = HttpTransport("http://127.0.0.1:9")
    try:
        t._answer(status, body, "d", 5)
    except TransportError as e:
        assert e.reason in ("protocol", "rejected", "unreachable", "timeout")
        if status != 200:   # a 200 may carry {"error": ...} too (the MQTT ack shape)
            assert (e.reason == "rejected") == (400 <= status < 500 and status not in (408, 429))
    else:
        assert status == 200


def test_https_verifies_the_server_certificate(tmp_path):
    import ssl

    cert, key = self_signed_cert(str(tmp_path))
    server = FakeHes()
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    server.socket = sctx.wrap_socket(server.socket, server_side=True)
    server.thread.start()
    url = "https://127.0.0.1:%d" % server.server_address[1]
    try:
        trusting = ssl.create_default_context(cafile=cert)
        with HttpTransport(url, context=trusting) as t:
            assert t.send("c", 1, b"tls", timeout=5).status == "accepted"
        assert server.stored[("c", 1)] == b"tls"
        with transport_for(url) as t, pytest.raises(TransportError) as e:
            t.send("c", 2, b"tls", timeout=5)     # the system CAs do not know this one
        assert e.value.reason == "protocol" and ("c", 2) not in server.stored
    finally:
        server.shutdown()
        server.server_close()
