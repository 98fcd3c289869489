"""Wi-Fi mesh link over real UDP sockets (``drivers.link`` interface).

Owns one UDP socket: broadcast-like sending to a static peer list plus the
neighbours the mesh vouched for (``learn``), non-blocking receive with the
source address, and a seeded drop-rate manipulator (``loss``) so tests can
make a lossy network without root. Must not know packets or authentication:
it learns an address only when the mesh, having authenticated a frame from
it, calls ``learn(src)`` (replies may come from any address). Linux/CPython.
"""

from __future__ import annotations

import errno
import random
import select
import socket
import time
from collections import OrderedDict
from typing import Any

from drivers.link import FrameTooLong, Link, LinkClosed, LinkError, Received, monotonic_ms

Address = tuple[str, int]


def parse_endpoint(text: str, default_host: str = "0.0.0.0") -> Address:
    """``"host:port"``, ``"[v6]:port"`` or ``":port"`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise LinkError("endpoint must be host:port", link="udp", reason="endpoint",
                        endpoint=text)
    host = host.strip("[]") or default_host
    return host, int(port)


class UdpLink(Link):
    """``listen`` "host:port" to bind; ``peers`` static neighbours (their
    names are resolved at ``connect``); ``loss`` the share of received
    datagrams dropped on purpose (``seed`` makes the drops repeatable);
    ``max_learnt`` neighbours learnt, the least recently heard evicted,
    forgotten after ``learnt_ttl_s`` of silence."""

    kind = "udp"

    def __init__(self, listen: str = "0.0.0.0:47800", peers: Any = (), loss: float = 0.0,
                 seed: int | None = None, mtu: int = 1400, max_learnt: int = 64,
                 learnt_ttl_s: float = 3600.0) -> None:
        if not 0.0 <= loss < 1.0:
            raise LinkError("loss must be in [0, 1)", link="udp", reason="loss", loss=loss)
        self.listen_at = parse_endpoint(listen)
        self.peer_names = [parse_endpoint(p, "127.0.0.1") for p in peers]
        self.loss = loss
        self.mtu = mtu
        self.max_learnt = max_learnt
        self.learnt_ttl_s = learnt_ttl_s
        self._rng = random.Random(seed)
        self._sock: socket.socket | None = None
        self._peers: list[Address] = []
        self._learnt: OrderedDict[Address, float] = OrderedDict()
        self.counters = {"sent": 0, "send_errors": 0, "received": 0, "dropped_loss": 0,
                         "oversize": 0, "learnt": 0}

    # -- lifecycle ----------------------------------------------------------

    def connect(self) -> None:
        host, port = self.listen_at
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise LinkError("cannot bind %s:%d: %s" % (host, port, e.strerror), link="udp",
                            reason="bind", errno=e.errno) from e
        sock.setblocking(False)
        self._sock = sock
        self._peers = [self._resolve(h, p, family) for h, p in self.peer_names]

    def _resolve(self, host: str, port: int, family: int) -> Address:
        # An IPv6 socket reaches IPv4 peers as v4-mapped addresses (::ffff:a.b.c.d).
        flags = socket.AI_V4MAPPED if family == socket.AF_INET6 else 0
        try:
            info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, flags)
        except OSError as e:
            raise LinkError("cannot resolve peer %s: %s" % (host, e), link="udp",
                            reason="resolve", peer="%s:%d" % (host, port)) from e
        addr = info[0][4]
        return str(addr[0]), int(addr[1])

    @property
    def address(self) -> Address:
        """The bound (host, port): the port the OS chose when ``listen`` said 0."""
        sock = self._need()
        name = sock.getsockname()
        return str(name[0]), int(name[1])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _need(self) -> socket.socket:
        if self._sock is None:
            raise LinkClosed("UDP link not connected", link="udp")
        return self._sock

    def fileno(self) -> int:
        return self._need().fileno()

    # -- neighbours ---------------------------------------------------------

    def learn(self, src: Any) -> None:
        """The mesh authenticated a frame from ``src``: send to it from now on."""
        if src is None:
            return
        addr = (str(src[0]), int(src[1]))
        if addr in self._peers:
            return
        if addr not in self._learnt:
            self.counters["learnt"] += 1
        self._learnt[addr] = time.monotonic()
        self._learnt.move_to_end(addr)
        while len(self._learnt) > self.max_learnt:
            self._learnt.popitem(last=False)

    def peers(self) -> list[Address]:
        """Static peers, then learnt neighbours heard within the TTL."""
        cutoff = time.monotonic() - self.learnt_ttl_s
        for addr in [a for a, t in self._learnt.items() if t < cutoff]:
            del self._learnt[addr]
        return list(self._peers) + [a for a in self._learnt if a not in self._peers]

    # -- data ---------------------------------------------------------------

    def send(self, frame: bytes, dest: Any = None) -> int:
        """One datagram to ``dest``, or to every peer; -> 0 (no air time to
        report). A peer that is down costs a counted error, never an exception:
        the mesh's per-hop acknowledgements deal with it."""
        sock = self._need()
        if len(frame) > self.mtu:
            raise FrameTooLong("frame longer than the UDP link's MTU", link="udp",
                               size=len(frame), mtu=self.mtu)
        targets = [(str(dest[0]), int(dest[1]))] if dest is not None else self.peers()
        for addr in targets:
            try:
                sock.sendto(frame, addr)
                self.counters["sent"] += 1
            except OSError as e:
                if e.errno not in (errno.ECONNREFUSED, errno.EAGAIN, errno.ENETUNREACH,
                                   errno.EHOSTUNREACH, errno.ENOBUFS, errno.EINVAL):
                    raise LinkError("UDP send failed: %s" % e, link="udp", reason="send",
                                    errno=e.errno, peer=addr) from e
                self.counters["send_errors"] += 1
        return 0

    def receive(self, timeout: float = 0.0) -> Received | None:
        """The next datagram not dropped by ``loss``; None when none is waiting
        (after up to ``timeout`` seconds)."""
        sock = self._need()
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, src = sock.recvfrom(65535)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    return None
                continue
            except OSError as e:
                if e.errno == errno.ECONNREFUSED:      # an ICMP error from an earlier send
                    self.counters["send_errors"] += 1
                    continue
                raise LinkError("UDP receive failed: %s" % e, link="udp", reason="receive",
                                errno=e.errno) from e
            if len(data) > self.mtu:
                self.counters["oversize"] += 1
                continue
            if self.loss and self._rng.random() < self.loss:
                self.counters["dropped_loss"] += 1
                continue
            self.counters["received"] += 1
            return Received(data, None, None, monotonic_ms(), (str(src[0]), int(src[1])))

    def poll_ms(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out["peers"] = ["%s:%d" % a for a in self.peers()]
        return out
