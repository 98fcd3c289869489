"""HTTP(S) uplink: ``PUT {base}/v1/batches/{device_id}/{seq}`` with the sealed
envelope as body; the JSON answer is the acknowledgement (docs/INTERFACES.md).
Commands come back in that answer, or in the answer to an idle ``POST
{base}/v1/poll/{device_id}``; results go up as ``PUT
{base}/v1/results/{device_id}/{counter}`` (docs/command-format.md).

Owns one kept-alive ``http.client`` connection per transport (stdlib only:
the agent image carries no web framework), HTTPS with the default ``ssl``
context, and mapping statuses onto ``TransportError`` reasons: 200 → ``Ack``;
4xx ``{"error": reason}`` → ``rejected``; 408 → ``timeout``; 429/5xx and
connection failures → ``unreachable``; socket timeouts → ``timeout``.

Must not know what is inside a payload.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from agent.transport import (
    Ack,
    Polled,
    ResultAck,
    Transport,
    TransportError,
    check_device,
    parse_ack,
    parse_polled,
    parse_result_ack,
    redact,
)

log = logging.getLogger(__name__)

MAX_ANSWER = 64 * 1024


class HttpTransport(Transport):
    """``PUT {base}/v1/batches/{device_id}/{seq}`` over one kept-alive connection."""

    def __init__(self, base_url: str, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise TransportError("not an http(s) URL: %r" % redact(base_url), "protocol",
                                 url=redact(base_url))
        self.url = redact(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        if self._conn is not None:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            return self._conn, True
        if self.scheme == "https":
            ctx = self.context or ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn = conn
        return conn, False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, device_id: str, seq: int, payload: bytes, timeout: float) -> Ack:
        check_device(device_id, seq, self.url)
        path = "%s/v1/batches/%s/%d" % (self.prefix, quote(device_id, safe=""), seq)
        status, body = self._call("PUT", path, payload, timeout, device_id, seq)
        return self._answer(status, body, device_id, seq)

    def poll(self, device_id: str, payload: bytes, timeout: float) -> Polled:
        check_device(device_id, 0, self.url)
        path = "%s/v1/poll/%s" % (self.prefix, quote(device_id, safe=""))
        status, body = self._call("POST", path, payload, timeout, device_id, 0)
        doc = self._document(status, body, "poll", device_id, 0)
        return parse_polled(doc, device_id, self.url)

    def send_result(self, device_id: str, counter: int, payload: bytes,
                    timeout: float) -> ResultAck:
        check_device(device_id, counter, self.url)
        path = "%s/v1/results/%s/%d" % (self.prefix, quote(device_id, safe=""), counter)
        status, body = self._call("PUT", path, payload, timeout, device_id, counter)
        doc = self._document(status, body, "result %d" % counter, device_id, counter)
        return parse_result_ack(doc, device_id, counter, self.url)

    def _call(self, method: str, path: str, payload: bytes, timeout: float, device_id: str,
              seq: int) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                left = max(0.001, deadline - time.monotonic())
                conn, reused = self._connection(left)
                # Socket timeouts bound each read, not the whole answer (a server
                # dripping bytes could stretch it): a watchdog cuts the socket at
                # the deadline.
                expired = threading.Event()
                watchdog = threading.Timer(left, self._expire, args=(conn, expired))
                watchdog.daemon = True
                watchdog.start()
                try:
                    status, body = self._exchange(conn, method, path, payload)
                    if expired.is_set():    # cut mid-answer: what we read is partial
                        self._drop()
                        raise TimeoutError("answer cut at the deadline")
                    return status, body
                except (OSError, http.client.HTTPException) as e:
                    self._drop()
                    if expired.is_set():
                        raise self._error(TimeoutError("no answer in %.1fs" % timeout),
                                          device_id, seq) from e
                    stale = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                           ConnectionResetError))
                    if stale and reused and time.monotonic() < deadline:
                        continue  # the server closed an idle kept-alive connection
                    raise self._error(e, device_id, seq) from e
                finally:
                    watchdog.cancel()

    @staticmethod
    def _expire(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str,
                  payload: bytes) -> tuple[int, bytes]:
        conn.request(method, path, body=payload, headers={
            "Content-Type": "application/octet-stream", "Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(MAX_ANSWER)
        if resp.will_close or not resp.isclosed():
            self._drop()
        return resp.status, body

    def _error(self, e: BaseException, device: str, seq: int) -> TransportError:
        if isinstance(e, TimeoutError):
            reason = "timeout"
        elif isinstance(e, (ssl.SSLError, http.client.HTTPException)):
            reason = "protocol"
        else:
            reason = "unreachable"
        log.info("uplink %s %s/%d: %s (%s)", self.url, device, seq, reason, e)
        return TransportError("%s: %s" % (self.url, e), reason, device=device, seq=seq,
                              url=self.url)

    def _answer(self, status: int, body: bytes, device: str, seq: int) -> Ack:
        try:
            doc: Any = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            doc = None
        if status == 200:
            return parse_ack(doc, device, seq, self.url)
        if status == 408:
            reason = "timeout"
        elif 400 <= status < 500 and status != 429:
            hes = doc.get("error") if isinstance(doc, dict) else None
            hes_reason = str(hes) if hes else "http_%d" % status
            raise TransportError("HES rejected batch %s/%d: %s" % (device, seq, hes_reason),
                                 "rejected", device=device, seq=seq, url=self.url,
                                 status=status, hes_reason=hes_reason)
        else:
            reason = "unreachable"  # 5xx, 429, or a status we do not know: retry later
        raise TransportError("HES answered %d for %s/%d" % (status, device, seq), reason,
                             device=device, seq=seq, url=self.url, status=status)

    def _document(self, status: int, body: bytes, what: str, device: str, seq: int) -> Any:
        """The JSON of a 200 answer; other statuses become errors as for batches."""
        try:
            doc: Any = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            doc = None
        if status == 200:
            return doc
        if 400 <= status < 500 and status not in (408, 429):
            hes = doc.get("error") if isinstance(doc, dict) else None
            hes_reason = str(hes) if hes else "http_%d" % status
            raise TransportError("HES rejected %s of %s: %s" % (what, device, hes_reason),
                                 "rejected", device=device, seq=seq, url=self.url,
                                 status=status, hes_reason=hes_reason)
        raise TransportError("HES answered %d to %s of %s" % (status, what, device),
                             "timeout" if status == 408 else "unreachable", device=device,
                             seq=seq, url=self.url, status=status)

    def fetch(self, package_id: str, sealed: bytes, length: int, timeout: float) -> bytes:
        from agent.update_fetch import post_fetch  # (it imports this package)
        port = ":%d" % self.port if self.port else ""
        return post_fetch("%s://%s%s%s" % (self.scheme, self.host, port, self.prefix),
                          package_id, sealed, length, timeout)

    def close(self) -> None:
        with self._lock:
            self._drop()
