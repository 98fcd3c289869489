"""What the mesh run and the flooding baseline of ``wum-hil mesh-sim`` share:
the radio plan a scenario implies, the district's hosts as concentrators
(the hourly read of their meters, their store-and-forward origin), the
gateways' uplink to the HES (an always-on pipe with an acknowledgement,
unless the scenario takes it down), the HES's acks gathered per origin, the
scenario's events, and the clock they all run on (the medium's).

Owns the district around the network under test. Must not know how a
network moves frames: ``MeshHost`` (``hil.mesh_sim_host``) and
``FloodHost`` (``hil.flooding``) do, as subclasses of ``Host``.
"""

from __future__ import annotations

import zlib
from typing import Any

from hil.mesh_sim_data import BatchSource, Hes, RunBatches
from hil.mesh_sim_metrics import Metrics
from hil.mesh_sim_origin import Origin
from hil.radio import AirParams, RadioMedium

PIPE_MS = 300                     # gateway <-> HES, one way (LTE)
ACK_TAG = 0xA1                    # the simulator's downlink ack: tag, then LEB128 seqs
SWEEP_MS = 300000                 # origins look for batches to resend this often
READ_WINDOW_S = 2700


def encode_ack(seqs: list[int]) -> bytes:
    out = bytearray((ACK_TAG,))
    for s in seqs:
        while True:
            b = s & 0x7F
            s >>= 7
            out.append(b | (0x80 if s else 0))
            if not s:
                break
    return bytes(out)


def decode_ack(data: bytes) -> list[int] | None:
    """The seqs of an ack, None if ``data`` is not one."""
    if not data or data[0] != ACK_TAG:
        return None
    out, v, shift = [], 0, 0
    for b in data[1:]:
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            out.append(v)
            v, shift = 0, 0
        elif shift > 35:
            return None
    return out if shift == 0 else None


def read_offset_ms(node: str) -> int:
    """When after each hour boundary a concentrator reads its meters and
    builds the hour's batches: a fixed minute per node, spread over the
    first 45 minutes (the meters capture the hour's profile row at the
    boundary; reading it later spreads the district's traffic instead of
    every node transmitting at once)."""
    return (30 + zlib.crc32(node.encode()) % (READ_WINDOW_S - 29)) * 1000


class RadioPlan:
    """The scenario's radio as the medium and the mesh core see it."""

    def __init__(self, sc: dict[str, Any]) -> None:
        r = sc["radio"]
        self.kind = r["kind"]
        self._air: dict[int, AirParams] = {}
        if self.kind == "wifi":
            self.channel = None
            self.listen = AirParams("wifi", freq_hz=int(r["channel_mhz"] * 1000000),
                                    rate_kbps=r["rate_kbps"])
            self.link: dict[str, Any] = {"kind": "udp"}
            return
        self.channel = int(round(r["frequency_mhz"] * 1e6))
        self.bw = r["bandwidth_khz"] * 1000
        self.cr = int(r["coding_rate"][2]) - 4
        self.min_sf, self.max_sf = r["min_sf"], r["max_sf"]
        self.preamble = r["preamble"]
        adaptive = self.min_sf < self.max_sf
        self.link = {"kind": "lora", "sf": self.max_sf, "bandwidth": self.bw,
                     "coding_rate": self.cr, "channel": self.channel,
                     "preamble": self.preamble, "adaptive_sf": adaptive, "min_sf": self.min_sf}
        # SF chosen per link needs receivers that demodulate every SF of the
        # range at once (docs/mesh-sim.md, "SF per link").
        self.listen = self.air(self.max_sf, range(self.min_sf, self.max_sf + 1)
                               if adaptive else None)

    def air(self, sf: int, sfs: Any = None) -> AirParams:
        p = self._air.get(sf) if sfs is None else None
        if p is None:
            p = AirParams("lora", freq_hz=self.channel, sf=sf, bw_hz=self.bw, cr=self.cr,
                          preamble=self.preamble, sfs=sfs)
            if sfs is None:
                self._air[sf] = p
        return p


class Host:
    """A concentrator of either run: its meters and its origin. Subclasses
    give ``transport`` (``offer``), ``alive`` and ``send_acks``."""

    transport: Any

    def __init__(self, run: DistrictRun, spec: dict[str, Any]) -> None:
        self.run = run
        self.id = spec["id"]
        self.meters = spec["meters"]
        self.gateway = spec["gateway"]
        self.uplink = True
        self.hours_read = 0
        self.offset_ms = read_offset_ms(self.id)
        self.origin = Origin(run.resend_ms, run.window_bytes)
        self.acks_out: dict[str, list[int]] = {}     # gateway: origin -> seqs to send down
        self.ack_timer = False

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def catch_up(self, now: int) -> None:
        """Read every hour whose time has come (a concentrator that was
        down reads the hours it missed when it comes back), then offer."""
        r = self.run
        while self.hours_read < r.sc["hours"] and \
                (self.hours_read + 1) * 3600000 + self.offset_ms <= now:
            h = self.hours_read
            batches = r.batches.batches(self.id, self.meters, h)
            r.metrics.hour_read(self.id, h, batches, now)
            self.origin.add(batches, now)
            self.hours_read += 1
        self.pump(now)

    def pump(self, now: int) -> None:
        if self.alive:
            self.origin.pump(self.transport, now)

    def queue_acks(self, origin: str, seqs: list[int], now: int) -> None:
        """The HES acknowledged ``seqs`` of ``origin`` through this gateway:
        send them down, gathered per origin for the run's ``ack_delay_ms``."""
        if not self.alive:
            return
        if origin == self.id:
            self.origin.acked(seqs)
            self.pump(now)
            return
        self.acks_out.setdefault(origin, []).extend(seqs)
        if not self.ack_timer:
            self.ack_timer = True
            self.run.medium.schedule((now + self.run.ack_delay_ms) * 1000, self._flush_acks)

    def _flush_acks(self) -> None:
        self.ack_timer = False
        if self.alive and self.acks_out:
            acks, self.acks_out = self.acks_out, {}
            self.send_acks(acks, self.run.now())

    def send_acks(self, acks: dict[str, list[int]], now: int) -> None:
        raise NotImplementedError

    def acked_down(self, payload: bytes, now: int) -> None:
        """An ack from the HES reached this origin."""
        seqs = decode_ack(payload)
        if seqs is None:
            self.run.stats["bad_acks"] += 1
            return
        self.origin.acked(seqs)
        self.pump(now)

    def power(self, up: bool, now: int) -> None:
        raise NotImplementedError

    def set_uplink(self, up: bool, now: int) -> None:
        self.uplink = up


class DistrictRun:
    """One run over a scenario: hosts on a medium, the HES, the measurements.
    Subclasses build ``hosts`` and start them in ``start``."""

    host_class: type[Host]

    def __init__(self, sc: dict[str, Any], seed: int, source: BatchSource) -> None:
        self.sc = sc
        self.seed = seed
        self.plan = RadioPlan(sc)
        lora = self.plan.kind == "lora"
        self.resend_ms = 1800000 if lora else 300000
        self.window_bytes = 8192 if lora else 65536
        self.ack_delay_ms = 20000 if lora else 1000
        self.medium = RadioMedium.from_scenario(sc, seed, schedule_events=False)
        self.members = [n["id"] for n in sc["nodes"]]
        self.batches: RunBatches = source.run()
        self.hes = Hes(source.keyring(self.members))
        self.metrics = Metrics(sc)
        self.stats: dict[str, int] = {"bad_acks": 0}
        self.end_ms = int((sc["hours"] + sc["drain_h"]) * 3600000)
        self.hosts: dict[str, Any] = {n["id"]: self.host_class(self, n) for n in sc["nodes"]}

    def now(self) -> int:
        return self.medium.now_us // 1000

    def to_hes(self, gw: Host, sealed: bytes) -> None:
        """A gateway's uplink carried a batch to the HES; the ack comes back
        the same way (unless the gateway or its uplink died meanwhile)."""
        now = self.now()
        key = self.hes.receive(sealed, now, gw.id)
        if key is not None:
            self.medium.schedule((now + PIPE_MS) * 1000, self._ack_at_gateway, gw, key)

    def uplink(self, gw: Host, sealed: bytes, now: int) -> None:
        self.medium.schedule((now + PIPE_MS) * 1000, self.to_hes, gw, sealed)

    def _ack_at_gateway(self, gw: Host, key: tuple[str, int]) -> None:
        if gw.alive and gw.uplink:
            gw.queue_acks(key[0], [key[1]], self.now())

    def _hour(self, host: Host) -> None:
        now = self.now()
        if host.alive:
            host.catch_up(now)
        if host.hours_read < self.sc["hours"]:
            nxt = (host.hours_read + 1) * 3600000 + host.offset_ms
            if nxt <= now:                  # down: it catches up when it comes back
                nxt = ((now - host.offset_ms) // 3600000 + 1) * 3600000 + host.offset_ms
            self.medium.schedule(nxt * 1000, self._hour, host)

    def _sweep(self) -> None:
        now = self.now()
        for host in self.hosts.values():
            if host.alive:
                self.housekeeping(host, now)
                if host.origin.sweep(now):
                    host.pump(now)
        if now + SWEEP_MS < self.end_ms:
            self.medium.schedule((now + SWEEP_MS) * 1000, self._sweep)

    def housekeeping(self, host: Any, now: int) -> None:
        """Every ``SWEEP_MS`` for each live host (subclasses)."""

    def _event(self, ev: dict[str, Any]) -> None:
        host = self.hosts[ev["node"]]
        now = self.now()
        action = ev["action"]
        if action == "down" and host.alive:
            self.before_down(host, now)
            host.power(False, now)
        elif action == "up" and not host.alive:
            host.power(True, now)
            host.catch_up(now)
        elif action in ("uplink_down", "uplink_up"):
            if action == "uplink_down":
                self.before_down(host, now)
            host.set_uplink(action == "uplink_up", now)

    def before_down(self, host: Any, now: int) -> None:
        """A node or a gateway's uplink is about to go (subclasses watch)."""

    def start(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        m = self.medium
        for host in self.hosts.values():
            m.attach(host.id, host)
        self.start()
        for host in self.hosts.values():
            m.schedule((3600000 + host.offset_ms) * 1000, self._hour, host)
        for ev in self.sc["events"]:
            m.schedule(int(ev["at_h"] * 3600e6), self._event, ev)
        m.schedule(SWEEP_MS * 1000, self._sweep)
        m.run_until(self.end_ms * 1000)

    def result(self) -> dict[str, Any]:
        return self.metrics.result(self.hes.first, self.end_ms)
