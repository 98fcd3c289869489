"""Everything the daemon runs for a ``[mesh]`` table: the links, the mesh IO
loop (``agent.mesh_io``), the uplink transport it implies
(``transport = "mesh"``, or a gateway's own uplink), the gateway forwarder
(roles ``gateway`` and ``auto``), ``wum mesh ping``, the control channel and
the snapshot ``wum status`` shows when the daemon is not running.

Owns the assembly from configuration and the answers of the control
channel. Must not know batches' contents, the mesh's internals (it uses
``mesh.node.Node``'s API) or the chips' protocols.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from agent import AgentError
from agent.config import Config
from agent.mesh_config import MeshLinkConfig
from agent.mesh_control import ControlError, ControlServer, socket_path
from agent.mesh_gateway import Gateway, OwnUplink
from agent.mesh_io import ArchiveCounterStore, MeshService, MeshStopped
from agent.transport import Transport, transport_for
from agent.transport.mesh import MeshTransport

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "mesh_stats"
LinkFactory = Callable[[MeshLinkConfig], Any]


def open_link(link: MeshLinkConfig) -> Any:
    """A ``drivers.link`` link for one ``[[mesh.link]]`` (not yet connected)."""
    t = link.table
    if link.kind == "udp":
        from drivers.udp_link import UdpLink

        kw: dict[str, Any] = {"loss": t["loss"], "seed": t["seed"]}
        if "mtu" in t:
            kw["mtu"] = t["mtu"]
        return UdpLink(t["listen"], t["peers"], **kw)
    from drivers.lora.linux import open_lora_link

    return open_lora_link(t)


class MeshAgent:
    """``link_factory`` builds each link (default ``open_link``; tests give
    LoRa links over simulated chips); ``node_options`` tune the node."""

    def __init__(self, cfg: Config, archive: Any, lock: threading.Lock,
                 link_factory: LinkFactory | None = None,
                 node_options: dict[str, Any] | None = None, control: bool = True) -> None:
        if cfg.mesh is None:
            raise AgentError("no [mesh] in the configuration")
        self.cfg = cfg
        self.mcfg = cfg.mesh
        self.archive = archive
        self.lock = lock
        self.identity = cfg.concentrator_id
        self.links = [(link_factory or open_link)(lc) for lc in self.mcfg.links]
        self.node_options = dict(node_options or {})
        if self.mcfg.mtu:
            self.node_options.setdefault("mtu", self.mcfg.mtu)
        self.service = MeshService(self._node, self.links, name="mesh-" + self.identity)
        self.service.add_listener(self._on_action)
        self.lora = any(lc.kind == "lora" for lc in self.mcfg.links)
        self.transport: Transport | None = None
        self.mesh_transport: MeshTransport | None = None
        self.gateway: Gateway | None = None
        self.control: ControlServer | None = None
        self._want_control = control
        self._pings: dict[int, tuple[threading.Event, dict[str, Any]]] = {}

    def _node(self, now: int) -> Any:
        from mesh.node import Node

        rng = random.Random(os.urandom(16))     # message ids must not restart alike
        store = ArchiveCounterStore(self.archive, self.lock)
        return Node(self.identity, self.mcfg.role, self.mcfg.network_key,  # type: ignore[no-untyped-call]
                    [lc.table for lc in self.mcfg.links], store,
                    rand=lambda lo, hi: rng.randrange(lo, hi),
                    members=list(self.mcfg.members) or None, now_ms=now, **self.node_options)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> MeshAgent:
        from drivers import DriverError
        from mesh import MeshError

        cfg = self.cfg
        try:
            self.service.start()
        except (DriverError, MeshError) as e:
            self.service.stop()
            raise AgentError("mesh cannot start: %s" % e, **e.fields) from e
        if cfg.transport == "mesh" or self.mcfg.role == "auto":
            self.mesh_transport = MeshTransport(self.service, self.identity, self._priority,
                                                resend_floor=180.0 if self.lora else 10.0)
        if self.mcfg.role in ("gateway", "auto"):
            direct = transport_for(cfg.url)
            shared = cfg.transport == "mqtt"     # one thread-safe broker client for all

            def factory() -> Transport:
                return direct if shared else transport_for(cfg.url)
            self.gateway = Gateway(self.service, self.identity, self.mcfg.role, factory).start()
            self.transport = OwnUplink(direct, self.gateway,
                                       self.mesh_transport if self.mcfg.role == "auto" else None)
        elif cfg.transport == "mesh":
            self.transport = self.mesh_transport
        if self._want_control:
            try:
                self.control = ControlServer(socket_path(cfg.archive), self.handle).start()
            except ControlError as e:
                log.error("%s: wum mesh and wum status cannot reach this daemon", e)
        return self

    def stop(self) -> None:
        self.persist()
        if self.control is not None:
            self.control.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.service.stop()

    def _priority(self, seq: int) -> int:
        """The priority of the batch's content (agent.priority): 0 with meter
        events, 1 with energy registers, 2 with instantaneous values only."""
        with self.lock:
            p: int = self.archive.batch_priority(seq)
        return p

    # -- ping -------------------------------------------------------------------
    def _on_action(self, a: Any) -> None:
        from mesh.actions import MessageFailed, PongReceived

        if isinstance(a, (PongReceived, MessageFailed)):
            waiter = self._pings.pop(a.message_id, None)
            if waiter is not None:
                if isinstance(a, PongReceived):
                    waiter[1]["rtt_ms"] = a.rtt_ms
                else:
                    waiter[1]["error"] = "ping given up (%s)" % a.reason
                waiter[0].set()

    def ping(self, node_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """A round trip to ``node_id`` through the mesh."""
        from mesh import MeshError

        done = threading.Event()
        box: dict[str, Any] = {}

        def go(node: Any, now: int) -> int:
            mid: int = node.ping(node_id, now)
            self._pings[mid] = (done, box)
            return mid
        try:
            mid = self.service.call(go)
        except MeshError as e:
            return {"ok": False, "node": node_id,
                    "error": "no route to %s (%s)" % (node_id, e.fields.get("reason", e))}
        if not done.wait(timeout):
            self._pings.pop(mid, None)
            return {"ok": False, "node": node_id, "error": "no answer in %.1f s" % timeout}
        if "rtt_ms" in box:
            return {"ok": True, "node": node_id, "rtt_ms": box["rtt_ms"]}
        return {"ok": False, "node": node_id, "error": box.get("error", "?")}

    # -- what wum status and wum mesh show ---------------------------------------
    def snapshot(self) -> dict[str, Any]:
        st = self.service.snapshot()
        st["configured_role"] = self.mcfg.role
        st["as_of"] = time.time()
        if self.gateway is not None:
            st["forwarding"] = self.gateway.stats()
        if self.mesh_transport is not None:
            st["uplink"] = self.mesh_transport.stats()
        return st

    def persist(self) -> None:
        """Keep the last snapshot in the archive for ``wum status`` offline."""
        if not self.service.running:
            return
        try:
            raw = json.dumps(self.snapshot(), default=str).encode()
        except (AgentError, FutureTimeout) as e:
            log.warning("mesh snapshot not taken: %s", e)
            return
        with self.lock:
            self.archive.set_meta(SNAPSHOT_KEY, raw)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        try:
            if op == "stats":
                return {"ok": True, "stats": self.snapshot()}
            if op == "ping":
                node = req.get("node")
                timeout = req.get("timeout", 10.0)
                if not isinstance(node, str) or not isinstance(timeout, (int, float)):
                    return {"ok": False, "error": "ping needs node (string) and timeout (s)"}
                return self.ping(node, float(min(max(timeout, 0.1), 300.0)))
        except (MeshStopped, FutureTimeout) as e:
            return {"ok": False, "error": "mesh not answering: %s" % (e or type(e).__name__)}
        return {"ok": False, "error": "unknown op %r" % (op,)}
