"""Refused registers (issue 9, failure 1): the client's narrowing finds exactly
the refused optional set, a refused mandatory register fails loudly, and an
agent cycle on a 64-meter bus reports each refusal once and never asks again.

The narrowing property runs our client (with pymodbus's serial client and our
transport underneath) against ``hil.modbus_meter.ModbusMeter`` in process:
the "wire" is a pyserial-like handle whose far end is the simulator's
``feed``, so every request is real RTU bytes, without a pty.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.archive import Archive
from agent.clock import ScaledClock
from agent.config import BusConfig, Config, MeterConfig
from agent.cycle import BusCycle
from drivers import MeterRefused
from drivers.modbus import open_client
from drivers.modbus.profile import PROFILE_DIR, Profile
from hil.bus import Bus
from hil.modbus_meter import ModbusMeter
from hil.model import HOUR, ORIGIN, MeterModel
from hil.ports import open_port

T0 = ORIGIN + 40 * 86400 + 13 * HOUR
IDENTITY = "0.0.96.1.0.255"


class MeterWire:
    """A pyserial-like handle: what is written reaches ``meter.feed``, its
    replies are what is read."""

    is_open = True

    def __init__(self, meter: ModbusMeter) -> None:
        self.meter = meter
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        for reply, _ in self.meter.feed(bytes(data), T0):
            self.buf += reply
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.buf)

    def read(self, size: int = 1) -> bytes:
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def close(self) -> None:
        pass


class WireLink:
    """What ``open_client(link=...)`` accepts: a connected port's handle."""

    baudrate = 115200

    def __init__(self, meter: ModbusMeter) -> None:
        self._ser = MeterWire(meter)


def profile_with(name: str, optional: set[str], identity_optional: bool) -> Profile:
    with open(os.path.join(PROFILE_DIR, name + ".json"), encoding="utf-8") as f:
        data = json.load(f)
    for reg in data["registers"]:
        reg["optional"] = reg["obis"] in optional
    data["identity"]["optional"] = identity_optional
    return Profile(data)


def session(profile: Profile, refuse: list[str], refused: set[str] | None = None):
    meter = ModbusMeter(MeterModel(3, 7), 3, lambda: T0, profile=profile, refuse=refuse)
    client = open_client("wire://%d" % id(meter), 3, link=WireLink(meter), profile=profile,
                         timeout=0.2, retries=0, clock=lambda: T0, refused=refused or ())
    return meter, client


def read_all(client) -> tuple[str, dict[str, int | float]]:
    try:
        ident = client.identify()
        return ident.id, {r.obis: r.value for r in client.read_registers()}
    finally:
        client.close()


@st.composite
def refusals(draw):
    name = draw(st.sampled_from(["generic", "eastron-sdm630", "eastron-sdm120"]))
    with open(os.path.join(PROFILE_DIR, name + ".json"), encoding="utf-8") as f:
        obis = [r["obis"] for r in json.load(f)["registers"]]
    optional = draw(st.sets(st.sampled_from(obis)))
    identity_optional = draw(st.booleans())
    pool = sorted(optional) + ([IDENTITY] if identity_optional else [])
    refused = draw(st.sets(st.sampled_from(pool))) if pool else set()
    return name, optional, identity_optional, refused


@given(refusals())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_narrowing_finds_exactly_the_refused_optional_set(case):
    name, optional, identity_optional, refused = case
    profile = profile_with(name, optional, identity_optional)
    _, control = session(profile, [])
    serial, want = read_all(control)
    meter, client = session(profile, ["identity" if o == IDENTITY else o for o in refused])
    ident, got = read_all(client)
    # Exactly the refused set skipped, each once; every other register read as
    # a meter without refusals gives it.
    assert sorted(o for o, _ in client.skipped) == sorted(refused)
    assert {reason for _, reason in client.skipped} <= {"illegal_data_address"}
    assert got == {k: v for k, v in want.items() if k not in refused}
    assert ident == ("" if IDENTITY in refused else serial)
    # Cost of finding them: the mandatory registers re-read around the n
    # optional ones (at most n + 1 requests), then per refused register one
    # path down the halving (two requests a level).
    n = len(optional) + identity_optional
    if refused:
        bound = control.round_trips + n + 1 + 2 * len(refused) * (n.bit_length() + 1)
        assert client.round_trips <= bound
    else:
        assert client.round_trips == control.round_trips
    # The next session, told what was refused, never touches it again and
    # costs at most one request more per refused register (a split block).
    before = meter.refusals
    meter.framer.reset()
    again = open_client("wire://%d" % id(meter), 3, link=WireLink(meter), profile=profile,
                        timeout=0.2, retries=0, clock=lambda: T0, refused=client.refused)
    assert read_all(again) == (ident, got)
    assert again.skipped == [] and meter.refusals == before
    assert again.round_trips <= control.round_trips + len(refused)


@pytest.mark.parametrize("name,obis", [("generic", "1.0.1.8.0.255"),
                                       ("eastron-sdm630", "1.0.14.7.0.255")])
def test_a_refused_mandatory_register_fails_the_read(name, obis):
    profile = profile_with(name, {"1.0.32.7.0.255"}, True)
    _, client = session(profile, [obis, "identity"])
    with pytest.raises(MeterRefused) as e:
        read_all(client)
    assert obis in e.value.fields["obis"] and e.value.fields["code"] == 2
    # Also when the meter was remembered as refusing it (a stale archive):
    # only optional registers are ever left out.
    _, client = session(profile, [obis], refused={obis})
    with pytest.raises(MeterRefused):
        read_all(client)


def test_plan_never_spans_an_avoided_register():
    profile = profile_with("generic", {"1.0.32.7.0.255"}, True)
    volts = profile.register("1.0.32.7.0.255")
    rest = [r for r in profile.registers if r is not volts]
    assert [(b.start, b.count) for b in profile.plan(rest)] == [(0, 51)]
    assert [(b.start, b.count) for b in profile.plan(rest, [volts, profile.identity])] == \
        [(0, 28), (29, 22)]


# -- the agent on a 64-meter bus ----------------------------------------------

def _config(tmp_path, port: str, n: int, name: str) -> Config:
    meters = tuple(MeterConfig(address=str(i), protocol="modbus", profile="generic")
                   for i in range(1, n + 1))
    bus = BusConfig(name=name, port=port, baud=115200, protocol="modbus", discover=False,
                    timeout=0.3, meters=meters)
    # No clock corrections: a meter whose offset sits near the threshold would
    # be set or not by the second's truncation, whatever this test is about.
    return Config(concentrator_id="DC-T", archive=str(tmp_path / ("%s.db" % name)),
                  buses=(bus,), retries=1, initial_backfill=6 * 3600, transport="none",
                  clock_threshold=86400.0)


def _two_cycles(tmp_path, n: int, refuse: list[str], name: str):
    """Two agent cycles on a bus of ``n`` generic meters: per cycle, the
    results and the requests each meter received."""
    # Mid-hour: no meter's drifted clock (within ±70 s) crosses an hour, so
    # each meter's requests depend on its model only, not on when it is read.
    clock = ScaledClock(T0 + 1800, 1.0)
    port = open_port("pty")
    meters = [ModbusMeter(MeterModel(i, 7), i, clock.now, refuse=refuse)
              for i in range(1, n + 1)]
    bus = Bus(port, meters, baud=115200, pace=False).start()
    cfg = _config(tmp_path, port.agent_path, n, name)
    arc = Archive(cfg.archive).open()
    out = []
    try:
        for _ in range(2):
            before = [m.requests for m in meters]
            cyc = BusCycle(cfg.buses[0], cfg, arc, clock)
            results = cyc.run(arc.begin_cycle(clock.now()))
            out.append((results, [m.requests - b for m, b in zip(meters, before, strict=True)]))
        ids = [arc.serial(r.meter) for r in out[0][0]]
        refused = [arc.meta("modbus_refused:%d" % r.meter) for r in out[0][0]]
    finally:
        arc.close()
        bus.stop()
        port.close()
    return out, ids, refused, meters


def test_64_meters_each_refusing_its_serial(tmp_path):
    t = time.monotonic()
    (first, second), ids, remembered, meters = _two_cycles(tmp_path, 64, ["identity"], "bus1")
    elapsed = time.monotonic() - t
    results, _ = first
    assert [r.status for r in results] == ["read"] * 64, [r.error for r in results]
    assert all(r.error is not None and r.error.count(IDENTITY) == 1 for r in results)
    assert ids == ["bus1:modbus:%d" % i for i in range(1, 65)]          # the fallback id
    assert remembered == [IDENTITY.encode()] * 64
    assert all(m.refusals == 1 for m in meters)                         # asked once, ever
    results, requests = second
    assert [(r.status, r.error) for r in results] == [("read", None)] * 64
    # Each meter: as many requests as the same meter (same model, so the same
    # clock drift and load-profile backfill) with its serial register.
    (_, (ctl_results, ctl_requests)), _, _, _ = _two_cycles(tmp_path, 64, [], "control")
    assert [(r.status, r.error) for r in ctl_results] == [("read", None)] * 64
    assert requests == ctl_requests
    assert elapsed < 40
