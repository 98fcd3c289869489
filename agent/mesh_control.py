"""The running daemon's local control channel: a Unix socket next to the
archive (``<archive>.sock``, mode 0600, so only the daemon's user — or root
— may use it), through which ``wum mesh …`` and ``wum status`` ask the live
mesh what it knows.

Owns the socket's life (a stale socket from a killed daemon is replaced, a
live one is left alone and refused), and the wire: one JSON object per line
in, one per line out, then the connection closes::

    {"op": "stats"}                       -> {"ok": true, "stats": {...}}
    {"op": "ping", "node": "DC-0003", "timeout": 10}
                                          -> {"ok": true, "node": ..., "rtt_ms": 41}
    anything else                         -> {"ok": false, "error": "..."}

Must not know what the answers hold (the handler, ``agent.mesh_agent``,
builds them). A path longer than a ``sun_path`` allows is reached through
``/proc/self/fd`` of its folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from agent import AgentError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
SUN_PATH_MAX = 100


class ControlError(AgentError):
    """No daemon answers on the control socket, or its answer is unreadable."""


def socket_path(archive: str) -> str:
    return archive + ".sock"


class _Path:
    """A socket path usable with bind/connect, however long the real one is."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> str:
        if len(self.path.encode()) <= SUN_PATH_MAX:
            return self.path
        folder, name = os.path.split(os.path.abspath(self.path))
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        return "/proc/self/fd/%d/%s" % (self.fd, name)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def request(path: str, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Ask the daemon listening on ``path``; ``ControlError`` if none does."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with _Path(path) as p:
            s.connect(p)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as e:
        raise ControlError("no wum daemon answers on %s (%s)" % (path, e.strerror or e),
                           path=path) from e
    finally:
        s.close()
    try:
        doc = json.loads(buf.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ControlError("unreadable answer on %s" % path, path=path) from e
    if not isinstance(doc, dict):
        raise ControlError("unreadable answer on %s" % path, path=path)
    return doc


class ControlServer:
    """``handler(request) -> answer`` runs in a short thread per connection."""

    def __init__(self, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> ControlServer:
        if os.path.exists(self.path):
            try:
                request(self.path, {"op": "hello"}, timeout=1.0)
            except ControlError:
                os.unlink(self.path)          # a killed daemon's socket
            else:
                raise ControlError("another wum daemon answers on %s" % self.path,
                                   path=self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            with _Path(self.path) as p:
                s.bind(p)
        except OSError as e:
            s.close()
            raise ControlError("cannot create control socket %s: %s" % (self.path, e.strerror),
                               path=self.path) from e
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        s.settimeout(0.5)
        self._sock = s
        self._thread = threading.Thread(target=self._serve, name="wum-control", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), name="wum-control-conn",
                             daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with conn:
            try:
                buf = b""
                while b"\n" not in buf and len(buf) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                try:
                    req = json.loads(buf.split(b"\n", 1)[0].decode())
                except (UnicodeDecodeError, ValueError):
                    req = None
                if not isinstance(req, dict):
                    answer: dict[str, Any] = {"ok": False, "error": "not a JSON object"}
                elif req.get("op") == "hello":
                    answer = {"ok": True}
                else:
                    answer = self.handler(req)
                conn.settimeout(None)
                conn.sendall(json.dumps(answer, default=str).encode() + b"\n")
            except OSError as e:
                log.info("control channel: client went away (%s)", e)
