"""The mesh in the agent, in one process over real sockets: ``MeshAgent``s
(the IO loop, the mesh transport, the gateway) chained over UDP on loopback
with 10 % datagram loss, a real ``hes-lite serve`` behind the gateway (and a
small HTTP proxy in front of it that can be made slow for one origin, or
answer 503 like a HES that is down); LoRa through the SX126x driver on a
simulated chip over the radio medium.

    DC-A --- DC-B --- DC-G (gateway, HTTP -> proxy -> hes-lite)
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import mesh_wire
from agent.archive import Archive
from agent.clock import SystemClock
from agent.config import Config, parse
from agent.mesh_agent import MeshAgent
from agent.transport import TransportError
from agent.uplink import Uplink
from hes_lite import wire
from mesh.actions import Delivered
from tests.agent_rig import HES, HesProcess, hes_rows
from tests.test_e2e_mesh import udp_port

NET = "5a" * 32
IDS = ["DC-A", "DC-B", "DC-G", "DC-H"]
KEYS = {i: os.urandom(32) for i in IDS}
T0 = 1795910400
FAST = {"trickle_imin_ms": 300}        # routes form in well under a second


class Proxy(ThreadingHTTPServer):
    """In front of a real hes-lite: ``down`` answers 503, ``delay[device]``
    holds that origin's requests; ``puts`` counts them per device."""

    daemon_threads = True

    def __init__(self, target: int) -> None:
        self.target = target
        self.down = False
        self.delay: dict[str, float] = {}
        self.puts: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


class _ProxyHandler(BaseHTTPRequestHandler):
    server: Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        self._forward("PUT")

    def do_POST(self) -> None:
        self._forward("POST")

    def _forward(self, method: str) -> None:
        s = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        device = self.path.split("/")[3]
        s.puts[device] = s.puts.get(device, 0) + 1
        if s.down:
            status, answer = 503, b'{"error": "down"}'
        else:
            time.sleep(s.delay.get(device, 0.0))
            c = http.client.HTTPConnection("127.0.0.1", s.target, timeout=30)
            c.request(method, self.path, body, {"Content-Type": "application/octet-stream"})
            r = c.getresponse()
            status, answer = r.status, r.read()
            c.close()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def config(tmp: Path, ident: str, role: str, port: int, peers: list[int], url: str = "",
           links: list[dict] | None = None, transport: str = "") -> Config:
    transport = transport or ("mesh" if role == "node" else "http")
    up = {"transport": transport, "key": KEYS[ident].hex()}
    if url:
        up["url"] = url
    link = links or [{"kind": "udp", "listen": "127.0.0.1:%d" % port, "loss": 0.1,
                      "seed": port, "peers": ["127.0.0.1:%d" % p for p in peers]}]
    return parse({"concentrator": {"id": ident, "archive": str(tmp / (ident + ".db"))},
                  "uplink": up, "bus": [{"port": "/dev/null", "meter": [{"address": "1"}]}],
                  "mesh": {"role": role, "network_key": NET, "members": IDS, "link": link}})


class Net:
    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.ports = {i: udp_port() for i in IDS}
        self.agents: dict[str, MeshAgent] = {}
        self.archives: list[Archive] = []

    def start(self, ident: str, role: str, peers: list[str], url: str = "",
              control: bool = False, transport: str = "", **options: object) -> MeshAgent:
        cfg = config(self.tmp, ident, role, self.ports[ident], [self.ports[p] for p in peers],
                     url, transport=transport)
        a = Archive(cfg.archive).open()
        self.archives.append(a)
        ag = MeshAgent(cfg, a, threading.Lock(), node_options={**FAST, **options},
                       control=control).start()
        self.agents[ident] = ag
        return ag

    def stop(self) -> None:
        for ag in self.agents.values():
            ag.stop()
        for a in self.archives:
            a.close()


def routed(agent: MeshAgent, gateway: str, within: float = 15.0, best: bool = True) -> bool:
    """``agent`` routes to ``gateway`` (as its best gateway, or one of its routes)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        st = agent.snapshot()
        if st["gateway"] == gateway or not best and any(
                r["gateway"] == gateway for r in st["routes"]):
            return True
        time.sleep(0.1)
    return False


def batch(device: str, seq: int, counter: int | None = None) -> bytes:
    rows = {"%s-m1" % device: [(T0 + 3600 * seq, {"1.0.1.8.0.255": 1000 + seq})]}
    return wire.seal_batch(KEYS[device], device, 0, seq if counter is None else counter, seq,
                           rows, boot=7)


@pytest.fixture(scope="module")
def hes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hes")
    h = HesProcess(tmp / "hes.db", IDS[0], KEYS[IDS[0]].hex())
    import subprocess

    for ident in IDS[1:]:
        subprocess.run([HES, "keys", "add", ident, "--key", KEYS[ident].hex(), "--db", h.db],
                       check=True, capture_output=True)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def chain(tmp_path, hes):
    proxy = Proxy(hes.port)
    net = Net(tmp_path, proxy.url)
    net.start("DC-G", "gateway", ["DC-B"], url=proxy.url)
    net.start("DC-B", "node", ["DC-A", "DC-G"])
    net.start("DC-A", "node", ["DC-B"])
    assert routed(net.agents["DC-A"], "DC-G"), net.agents["DC-A"].snapshot()
    yield net, proxy
    net.stop()
    proxy.shutdown()
    proxy.server_close()


def test_batch_up_two_hops_ack_down_duplicate_and_refusal(chain, hes):
    net, proxy = chain
    a = net.agents["DC-A"]
    ack = a.transport.send("DC-A", 1, batch("DC-A", 1), 20)
    assert (ack.device, ack.seq, ack.status) == ("DC-A", 1, "accepted")
    assert abs(ack.server_time - time.time()) < 60
    again = a.transport.send("DC-A", 1, batch("DC-A", 1), 20)      # the answer is kept:
    assert again.status == "accepted" and a.transport.stats()["sent"] == 1   # nothing travels
    a.stop()                        # an origin that restarted sends the same bytes again
    a = net.start("DC-A", "node", ["DC-B"])
    assert routed(a, "DC-G")
    # a copy of the old answer re-delivered after the restart (its hop ack was lost,
    # so the relay sent it again) answers no request of this life: it is not kept
    a.service.dispatch(Delivered("DC-G", mesh_wire.ack(1, "accepted", time.time()), 0, "down"))
    assert a.transport.stats()["stray"] >= 1
    assert a.transport.send("DC-A", 1, batch("DC-A", 1), 20).status == "duplicate"
    bad = bytearray(batch("DC-A", 2))
    bad[-12] ^= 0x55                                                  # altered on the way
    with pytest.raises(TransportError) as e:
        a.transport.send("DC-A", 2, bytes(bad), 20)
    assert e.value.reason == "rejected" and e.value.hes_reason == "bad_tag"
    fw = net.agents["DC-G"].gateway.stats()
    assert (fw["accepted"], fw["duplicate"], fw["rejected"]) == (1, 1, 1)
    got, dup = hes_rows(hes.export_jsonl())
    assert got[("DC-A-m1", T0 + 3600)] == {"1.0.1.8.0.255": 1001} and dup == 0
    # the relay saw frames, never readings: it forwarded, delivered nothing of A's
    b = net.agents["DC-B"].snapshot()
    assert b["counters"]["forwarded"] >= 3 and b["counters"]["delivered"] == 0


def test_idle_poll_and_a_command_result_through_the_mesh(chain):
    """The command exchanges ride the same way: an idle poll (POST
    /v1/poll/DC-A at the gateway) answered with the pending commands, and a
    result for a command the HES never sent, refused by the HES by name."""
    from agent.envelope import KIND_POLL, KIND_RESULT, MemoryBootStore, Sealer

    net, proxy = chain
    a = net.agents["DC-A"].transport
    sealer = Sealer("DC-A", KEYS["DC-A"], MemoryBootStore(1000))
    polled = a.poll("DC-A", sealer.seal(b'{"ts": %d}' % int(time.time()), KIND_POLL), 20)
    assert polled.device == "DC-A" and polled.commands == ()
    assert abs(polled.server_time - time.time()) < 60
    result = sealer.seal(b'{"counter": 77, "id": "x", "state": "executed"}', KIND_RESULT)
    with pytest.raises(TransportError) as e:
        a.send_result("DC-A", 77, result, 20)
    assert e.value.reason == "rejected" and e.value.hes_reason
    g = net.agents["DC-G"].gateway.stats()
    assert g["polls"] == 1 and g["rejected"] == 1
    assert a.stats()["polls"] == 1 and a.stats()["in_flight"] == 0


def test_one_slow_origin_does_not_hold_up_another(chain):
    net, proxy = chain
    proxy.delay["DC-A"] = 6.0
    done: dict[str, float] = {}

    def send_a() -> None:
        net.agents["DC-A"].transport.send("DC-A", 10, batch("DC-A", 10), 30)
        done["DC-A"] = time.monotonic()

    t0 = time.monotonic()
    t = threading.Thread(target=send_a)
    t.start()
    time.sleep(0.5)                                   # A's upload is being held at the HES
    ack = net.agents["DC-B"].transport.send("DC-B", 1, batch("DC-B", 1), 30)
    done["DC-B"] = time.monotonic()
    t.join()
    assert ack.status == "accepted"
    assert done["DC-B"] - t0 < 5.0 < done["DC-A"] - t0, done


def test_a_late_answer_is_kept_for_the_next_send(chain):
    net, proxy = chain
    a = net.agents["DC-A"].transport
    a.resend_floor = 60.0
    proxy.delay["DC-A"] = 2.5
    with pytest.raises(TransportError) as e:
        a.send("DC-A", 20, batch("DC-A", 20), 1.0)
    assert e.value.reason == "timeout"
    deadline = time.monotonic() + 15                  # the answer comes while nobody waits
    while not a.stats()["answers_waiting"] and time.monotonic() < deadline:
        time.sleep(0.1)
    t = time.monotonic()
    assert a.send("DC-A", 20, batch("DC-A", 20), 10).status == "accepted"
    assert time.monotonic() - t < 0.5                 # at once, nothing sent again
    st = a.stats()
    assert (st["sent"], st["resent"], st["late"]) == (1, 0, 1) and proxy.puts["DC-A"] == 1


def test_no_answer_after_resend_after_sends_a_copy_answered_once(chain):
    net, proxy = chain
    a = net.agents["DC-A"].transport
    a.resend_floor = 0.5
    proxy.delay["DC-A"] = 5.0
    with pytest.raises(TransportError):
        a.send("DC-A", 30, batch("DC-A", 30), 1.0)
    deadline = time.monotonic() + 5
    while a._flights[(1, 30)].handed is None and time.monotonic() < deadline:
        time.sleep(0.05)                              # the first hop holds all of it
    time.sleep(0.6)
    assert a.send("DC-A", 30, batch("DC-A", 30), 15).status == "accepted"
    assert a.stats()["resent"] == 1
    # the copy reached the gateway while the first was being uploaded: one upload
    assert net.agents["DC-G"].gateway.stats()["dropped_duplicate"] == 1
    assert proxy.puts["DC-A"] == 1


def test_hes_down_batch_stays_in_the_archive_until_the_ack_comes_down(chain, tmp_path):
    """The store-and-forward rule over the mesh: Uplink.flush keeps the batch
    while the gateway cannot reach the HES, and drops it from the backlog only
    once the HES's ack has come back down."""
    net, proxy = chain
    a = net.agents["DC-A"]
    arc = Archive(str(tmp_path / "uplink.db")).open()
    try:
        m = arc.meter_id("bus1", "modbus", "1")
        arc.set_identity(m, "SN-A1", "WUM", "sim")
        arc.store_meter_read(m, 3600, (T0, {"1.0.1.8.0.255": 5.0}), [], [(T0, 1)])
        up = Uplink("DC-A", KEYS["DC-A"], arc, a.transport, SystemClock(), timeout=10)
        proxy.down = True
        assert up.flush() == {"sent_bytes": 0, "acked": 0}
        assert arc.backlog()["batches_pending"] == 1
        g = net.agents["DC-G"].gateway.stats()
        assert g["failed"] >= 1 and not g["uplink_up"]
        assert a.transport.stats()["retry"] >= 1
        assert net.agents["DC-G"].snapshot()["gateway_active"]     # role gateway stays one
        proxy.down = False
        assert up.flush()["acked"] == 1
        assert arc.backlog()["batches_pending"] == 0
    finally:
        arc.close()


def test_batch_with_events_goes_first(chain, tmp_path):
    a = chain[0].agents["DC-A"]
    with a.lock:
        a.archive.store_batch(1, b"x", [], [(1, T0, 1)], 0.0)
        a.archive.store_batch(2, b"y", [], [], 0.0)
    assert (a._priority(1), a._priority(2), a._priority(99)) == (0, 1, 1)


def test_frame_counter_epoch_persisted_in_the_archive(tmp_path):
    """Every start of the node takes a new link-layer epoch, kept in the
    archive before the first frame, so a restart never reuses a nonce."""
    cfg = config(tmp_path, "DC-A", "node", udp_port(), [])
    arc = Archive(cfg.archive).open()
    try:
        epochs = []
        for _ in range(3):
            a = MeshAgent(cfg, arc, threading.Lock(), control=False).start()
            epochs.append(a.snapshot()["epoch"])
            a.stop()
        assert epochs[1] == epochs[0] + 1 and epochs[2] == epochs[0] + 2
        assert arc.meta("mesh_epoch") == str(epochs[2]).encode()
    finally:
        arc.close()


def test_a_full_mesh_queue_says_busy(tmp_path, hes):
    """A node whose own queue is full says unreachable (mesh_reason busy)."""
    net = Net(tmp_path, hes.url)
    try:
        a = net.start("DC-A", "node", ["DC-B"], own_bytes=800)   # nobody there: nothing drains
        a.transport.no_route_wait = 0.2
        with pytest.raises(TransportError) as e:
            a.transport.send("DC-A", 1, batch("DC-A", 1), 2)
        assert e.value.reason == "unreachable"
        with pytest.raises(TransportError) as e:
            a.transport.send("DC-A", 2, os.urandom(780), 2)
        assert e.value.reason == "unreachable" and e.value.mesh_reason == "busy"
    finally:
        net.stop()


def test_replies_go_to_learnt_addresses_forged_datagrams_teach_nothing(tmp_path):
    """DC-G has no static peers: it answers DC-A at the address DC-A's
    authenticated frames came from; a forged datagram is refused by the mesh
    and its sender never becomes a neighbour."""
    net = Net(tmp_path, "")
    try:
        g = net.start("DC-G", "gateway", [], url="http://127.0.0.1:1")
        a = net.start("DC-A", "node", ["DC-G"])
        assert routed(a, "DC-G")
        assert a.ping("DC-G", 5)["ok"] and g.ping("DC-A", 5)["ok"]
        def dropped(st):         # not a frame, or not for us: dropped before any crypto
            return sum(st["refused"].values()) + st["counters"]["overheard"]
        before = dropped(g.snapshot())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            for _ in range(20):
                forger.sendto(os.urandom(40), ("127.0.0.1", net.ports["DC-G"]))
            deadline = time.monotonic() + 5
            while dropped(g.snapshot()) - before < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            st = g.snapshot()
            assert dropped(st) - before >= 10                    # 10 % loss: most arrive
            assert st["links"][0]["peers"] == ["127.0.0.1:%d" % net.ports["DC-A"]]
            assert [n["id"] for n in st["neighbours"]] == ["DC-A"]
    finally:
        net.stop()


def test_a_crashed_io_loop_is_a_daemon_failure_not_silence(tmp_path):
    """A bug under the loop (here a link that raises on one datagram) stops the
    mesh loudly: the node's sends say so at once and the daemon exits 1."""
    from agent import AgentError
    from agent.daemon import Daemon
    from drivers.udp_link import UdpLink

    class Buggy(UdpLink):
        def receive(self, timeout=0.0):
            r = super().receive(timeout)
            if r is not None and r.frame == b"boom":
                raise ValueError("a bug")
            return r

    port = udp_port()
    cfg = config(tmp_path, "DC-A", "node", port, [])
    arc = Archive(cfg.archive).open()
    a = MeshAgent(cfg, arc, threading.Lock(), control=False,
                  link_factory=lambda lc: Buggy(lc.table["listen"])).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"boom", ("127.0.0.1", port))          # Buggy has no loss
        deadline = time.monotonic() + 5
        while a.service.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(a.service.failure, ValueError) and not a.service.running
        with pytest.raises(TransportError) as e:
            a.transport.send("DC-A", 1, batch("DC-A", 1), 5)
        assert e.value.reason == "unreachable" and e.value.mesh_reason == "stopped"
        d = Daemon(cfg, SystemClock())
        d.mesh = a
        with pytest.raises(AgentError, match="mesh IO loop failed"):
            d._check_mesh()
    finally:
        a.stop()
        arc.close()


def test_a_taken_port_is_a_clear_start_error(tmp_path):
    from agent import AgentError

    net = Net(tmp_path, "")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", net.ports["DC-A"]))
        with pytest.raises(AgentError) as e:
            net.start("DC-A", "node", [])
    net.stop()
    assert "mesh cannot start" in str(e.value) and e.value.reason == "bind"


def test_auto_gateway_with_its_uplink_down_goes_through_the_mesh(tmp_path, hes):
    """DC-H (role auto) loses its own uplink: it stops being a gateway and its
    own batch reaches the HES through DC-A and the gateway DC-G."""
    dead = Proxy(hes.port)
    dead.down = True
    net = Net(tmp_path, hes.url)
    try:
        net.start("DC-G", "gateway", ["DC-A"], url=hes.url)
        net.start("DC-A", "node", ["DC-G", "DC-H"])
        h = net.start("DC-H", "auto", ["DC-A"], url=dead.url)
        assert routed(net.agents["DC-A"], "DC-G", best=False)
        assert routed(net.agents["DC-A"], "DC-H", best=False)       # two gateways at one hop
        assert h.snapshot()["gateway_active"]
        ack = h.transport.send("DC-H", 1, batch("DC-H", 1), 30)
        assert ack.status == "accepted" and dead.puts["DC-H"] == 1
        st = h.snapshot()
        assert not st["gateway_active"] and st["gateway"] == "DC-G"
        assert st["forwarding"]["uplink_up"] is False
        assert net.agents["DC-G"].gateway.stats()["accepted"] == 1
        from agent.envelope import KIND_POLL, MemoryBootStore, Sealer

        poll = Sealer("DC-H", KEYS["DC-H"], MemoryBootStore(50)).seal(b"{}", KIND_POLL)
        assert h.transport.poll("DC-H", poll, 20).device == "DC-H"   # idle polls too
        assert net.agents["DC-G"].gateway.stats()["polls"] == 1
    finally:
        net.stop()
        dead.shutdown()
        dead.server_close()


@pytest.fixture
def broker():
    from tests.mqtt_broker import running_broker

    yield from running_broker()


def test_gateway_forwards_over_mqtt(tmp_path, broker):
    """A gateway whose own uplink is MQTT (a real Mosquitto, `hes-lite serve
    --mqtt`): it publishes on the origin's behalf and the HES's ack, which
    comes on the origin's ack topic, goes back down."""
    import subprocess

    h = HesProcess(tmp_path / "hes.db", "DC-A", KEYS["DC-A"].hex(), mqtt=broker.url)
    subprocess.run([HES, "keys", "add", "DC-G", "--key", KEYS["DC-G"].hex(), "--db", h.db],
                   check=True, capture_output=True)
    h.start()
    net = Net(tmp_path, "")
    try:
        g = net.start("DC-G", "gateway", ["DC-A"], url=broker.url, transport="mqtt")
        a = net.start("DC-A", "node", ["DC-G"])
        assert routed(a, "DC-G")
        ack = a.transport.send("DC-A", 3, batch("DC-A", 3), 30)
        assert ack.status == "accepted"
        own = g.transport.send("DC-G", 1, batch("DC-G", 1), 30)
        assert own.status == "accepted"                  # the same broker client for both
        got, _ = hes_rows(h.export_jsonl())
        assert ("DC-A-m1", T0 + 3 * 3600) in got and ("DC-G-m1", T0 + 3600) in got
    finally:
        net.stop()
        h.stop()


def test_lora_node_and_gateway_on_simulated_sx1262(tmp_path, hes):
    """The IO loop over LoRa links (no descriptor: polled), the SX126x driver
    against simulated chips on the radio medium in real time: a ping and a
    batch up and its ack down, charged to the duty-cycle budget."""
    from drivers.lora import params_from_config
    from drivers.lora.link import LoRaLink
    from drivers.lora.sx126x import Sx126x
    from hil.radio import RadioMedium, RealtimeMedium
    from hil.sx126x_sim import Sx126xSim

    medium = RadioMedium(seed=3, path_loss={"shadowing_db": 0.0})
    medium.add_node("DC-A", 0, 0)
    medium.add_node("DC-G", 200, 0)
    rt = RealtimeMedium(medium).start()
    lora = {"kind": "lora", "chip": "sx1262", "busy": "gpiochip0:1", "region": "EU868",
            "channel": 869525000, "sf": 7, "bandwidth": 125000, "coding_rate": "4/5"}
    agents = []
    try:
        for ident, role in (("DC-G", "gateway"), ("DC-A", "node")):
            def factory(lc, ident=ident):
                chip = Sx126xSim(medium, ident)
                return LoRaLink(Sx126x(chip, chip.busy, chip.dio1, chip.reset),
                                params_from_config(lc.table))
            cfg = config(tmp_path, ident, role, 0, [], url=hes.url if role != "node" else "",
                         links=[lora])
            arc = Archive(cfg.archive).open()
            agents.append((MeshAgent(cfg, arc, threading.Lock(), link_factory=factory,
                                     node_options={"trickle_imin_ms": 1000}).start(), arc))
        g, a = agents[0][0], agents[1][0]
        assert routed(a, "DC-G", 20), a.snapshot()
        pong = a.ping("DC-G", 10)
        assert pong["ok"] and pong["rtt_ms"] > 20          # two LoRa frames at SF7
        ack = a.transport.send("DC-A", 5, batch("DC-A", 5), 30)
        assert ack.status == "accepted"
        duty = a.snapshot()["duty"]
        assert duty[0]["band"] == "g3" and duty[0]["used_ms"] > 0
        assert g.snapshot()["links"][0]["sent"] > 0
    finally:
        for ag, arc in agents:
            ag.stop()
            arc.close()
        rt.stop()
