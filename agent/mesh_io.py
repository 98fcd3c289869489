"""The mesh's IO loop in the agent: one thread runs a ``mesh.node.Node``
over the concentrator's links (UDP sockets, LoRa radios).

Owns the thread, the links' descriptors (``selectors``), the clock the node
is fed (a monotonic millisecond tick, wrapped like MicroPython's
``ticks_ms``: the agent's accelerated test clocks never reach the mesh,
whose timers are protocol timing), which UDP endpoint a neighbour's address
was last heard from, carrying out the node's ``Transmit`` actions, and handing
its other actions (``Delivered``, ``MessageAcked``, ``MessageFailed``,
``PongReceived``) to listeners. The node is not thread-safe, so every other
thread reaches it through ``call(fn)``, which runs ``fn(node, now_ms)`` in
the loop and returns its result. Must not know batches, transports or the
HES (``agent.transport.mesh``, ``agent.mesh_gateway``).

The node's frame-counter epoch is persisted in the archive and its epoch
file (``ArchiveCounterStore``, ``mesh_epoch``; ``agent.epochs``), as the
envelope's boot epoch is: neither a restart nor a recreated archive reuses a
link-layer nonce.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from agent import AgentError

log = logging.getLogger(__name__)

T = TypeVar("T")
TICKS_MASK = (1 << 30) - 1
BROADCAST = 0xFFF
MAX_WAIT_MS = 1000          # the loop wakes at least this often
Listener = Callable[[Any], None]


class MeshStopped(AgentError):
    """The mesh loop is not running (not started, stopped, or it failed)."""


def now_ms() -> int:
    """The node's clock: monotonic milliseconds, wrapping at 2^30."""
    return (time.monotonic_ns() // 1_000_000) & TICKS_MASK


def ticks_diff(a: int, b: int) -> int:
    half = (TICKS_MASK + 1) >> 1
    return ((a - b + half) & TICKS_MASK) - half


class ArchiveCounterStore:
    """The node's counter epoch in the archive and the epoch file beside it
    (durable before it is used; the larger of both is loaded: a recreated
    archive does not restart it)."""

    KEY = "mesh_epoch"

    def __init__(self, archive: Any, lock: threading.Lock) -> None:
        self.archive = archive
        self.lock = lock

    def load(self) -> int:
        with self.lock:
            n: int = self.archive.high_water(self.KEY)
        return n

    def save(self, value: int) -> None:
        with self.lock:
            self.archive.raise_high_water(self.KEY, int(value))


class MeshService:
    """``node_factory(now_ms)`` builds the ``mesh.node.Node``; ``links`` are
    ``drivers.link`` links in the node's link order (connected by ``start``)."""

    def __init__(self, node_factory: Callable[[int], Any], links: list[Any],
                 name: str = "mesh") -> None:
        self.node_factory = node_factory
        self.links = links
        self.name = name
        self.node: Any = None
        self.listeners: list[Listener] = []
        self.routed = False                 # a route to a gateway exists (or we are one)
        self.gateway_active = False
        self.failure: BaseException | None = None
        self.counters = {"send_errors": 0, "link_busy": 0, "frames_in": 0, "frames_out": 0,
                         "calls": 0}
        self._endpoints: dict[tuple[int, int], Any] = {}
        self._calls: deque[tuple[Callable[[Any, int], Any], Future[Any]]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def add_listener(self, fn: Listener) -> None:
        self.listeners.append(fn)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> MeshService:
        for link in self.links:
            link.connect()
        self.node = self.node_factory(now_ms())
        self._refresh()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        log.info("mesh %s: node %r on %d link(s)", self.name, self.node, len(self.links))
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for link in self.links:
            link.close()
        self._wake_r.close()
        self._wake_w.close()
        while self._calls:
            _, fut = self._calls.popleft()
            fut.set_exception(MeshStopped("mesh stopped"))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    # -- other threads --------------------------------------------------------
    def call(self, fn: Callable[[Any, int], T], timeout: float = 10.0) -> T:
        """Run ``fn(node, now_ms)`` in the mesh thread and return its result
        (or raise its exception); ``MeshStopped`` when the loop is not
        running or does not answer in ``timeout``. From the mesh thread
        itself it runs inline."""
        if threading.current_thread() is self._thread:
            return fn(self.node, now_ms())
        if not self.running:
            raise MeshStopped("mesh not running", failure=repr(self.failure))
        fut: Future[Any] = Future()
        self._calls.append((fn, fut))
        self._wake()
        try:
            result: T = fut.result(timeout)
        except FutureTimeout:
            raise MeshStopped("mesh loop did not answer in %.1f s" % timeout) from None
        return result

    def dispatch(self, action: Any) -> None:
        """Hand ``action`` to the listeners as if the node had reported it
        (a gateway answering its own batch). Mesh thread or not."""
        if threading.current_thread() is self._thread:
            self._emit(action)
        else:
            self.call(lambda node, now: self._emit(action))

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:               # full (a wake-up is pending anyway) or closed
            pass

    # -- the loop -------------------------------------------------------------
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        polled = []
        for no, link in enumerate(self.links):
            fd = link.fileno()
            if fd is None:
                polled.append(no)
            else:
                sel.register(fd, selectors.EVENT_READ, no)
        poll_ms = min([max(1, self.links[no].poll_ms()) for no in polled] or [MAX_WAIT_MS])
        try:
            while not self._stop.is_set():
                wait = min(MAX_WAIT_MS, poll_ms, max(1, ticks_diff(self.node.next_deadline(),
                                                                    now_ms())))
                for key, _ in sel.select(wait / 1000):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._receive(key.data)
                for no in polled:
                    self._receive(no)
                self._run_calls()
                self._poll()
        except Exception as e:         # a bug must not silently stop the mesh: record it
            self.failure = e
            log.exception("mesh %s: IO loop failed", self.name)
            self._stop.set()
        finally:
            sel.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _receive(self, no: int) -> None:
        from drivers.link import LinkError

        link = self.links[no]
        while True:
            try:
                r = link.receive(0.0)
            except LinkError as e:
                log.warning("mesh link %d (%s): %s", no, link.kind, e)
                return
            if r is None:
                return
            self.counters["frames_in"] += 1
            nb = self.node.receive(no, r.frame, r.rssi, r.snr, now_ms())
            if nb is not None and r.src is not None:
                self._endpoints[(no, nb)] = r.src
                link.learn(r.src)

    def _run_calls(self) -> None:
        while self._calls:
            fn, fut = self._calls.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            self.counters["calls"] += 1
            try:
                fut.set_result(fn(self.node, now_ms()))
            except BaseException as e:   # handed to the caller, who raises it
                fut.set_exception(e)

    def _poll(self) -> None:
        from mesh.actions import Transmit

        for a in self.node.poll(now_ms()):
            if isinstance(a, Transmit):
                self._transmit(a)
            else:
                self._emit(a)
        self._refresh()

    def _refresh(self) -> None:
        r = self.node.routes
        self.gateway_active = bool(r.gateway)
        self.routed = self.gateway_active or r.best() is not None

    def _emit(self, action: Any) -> None:
        for fn in self.listeners:
            try:
                fn(action)
            except AgentError as e:
                log.warning("mesh %s: listener refused %r: %s", self.name, action, e)

    def _transmit(self, a: Any) -> None:
        from drivers.link import LinkBusy, LinkError

        link = self.links[a.link_no]
        dest = None if a.dest == BROADCAST else self._endpoints.get((a.link_no, a.dest))
        try:
            link.send(a.frame, dest)
            self.counters["frames_out"] += 1
        except LinkBusy:
            self.counters["link_busy"] += 1      # the frame's per-hop ack will not come: retried
        except LinkError as e:
            self.counters["send_errors"] += 1
            log.warning("mesh link %d (%s): %s", a.link_no, link.kind, e)

    # -- what the CLI and status show ------------------------------------------
    def snapshot(self, timeout: float = 5.0) -> dict[str, Any]:
        """The node's stats, the links' counters and the loop's own."""
        def take(node: Any, now: int) -> dict[str, Any]:
            st: dict[str, Any] = node.stats(now)
            st["links"] = [dict(link.stats(), kind=link.kind) for link in self.links]
            st["io"] = dict(self.counters)
            return st
        return self.call(take, timeout)
