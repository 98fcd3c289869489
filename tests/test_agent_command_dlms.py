"""Signed commands on DLMS meters: the agent's executor over a pty against
the DLMS simulator, whose class 70/20/71 objects follow the Blue Book and
whose traffic log shows every service the meter was asked.

Commands are signed and sealed by ``tests/command_hes.py`` (a STAND-IN for
the HES's signing; the real formats)."""

from __future__ import annotations

import threading

import pytest

from agent.archive import Archive
from agent.clock import ScaledClock
from agent.command_args import check_args
from agent.commands import CommandLog, Inbox
from agent.commands_exec import Executor
from agent.config import BusConfig, CommandsConfig, Config, MeterConfig
from drivers import DriverError
from drivers.dlms import cosem
from hil.bus import Bus
from hil.dlms_meter import DlmsMeter
from hil.model import MeterModel
from hil.ports import open_port
from tests.command_agent_args import TARIFF
from tests.command_hes import StandInHes

T0 = 1795910400 + 1800
ROOT = bytes(range(32))
DEV = "DC-DLMS"
M1, M2 = "bus1:dlms:1", "bus1:dlms:2"
WRITES = ("SET", "ACTION")


class DlmsRig:
    def __init__(self, tmp_path, max_disconnects: int = 10) -> None:
        self.clock = ScaledClock(T0, 1.0)
        self.models = [MeterModel(i, seed=5) for i in (1, 2)]
        self.port = open_port("pty")
        self.meters = [DlmsMeter(m, i + 1, self.clock.now) for i, m in enumerate(self.models)]
        self.bus = Bus(self.port, self.meters, baud=115200, pace=False).start()
        self.hes = StandInHes(DEV, ROOT, self.clock.now)
        meters = tuple(MeterConfig(address=str(a), protocol="dlms") for a in (1, 2))
        self.cfg = Config(concentrator_id=DEV, archive=str(tmp_path / "a.db"), transport="none",
                          retries=1,
                          buses=(BusConfig("bus1", self.port.agent_path, 115200, "dlms", False,
                                           0.5, meters),),
                          commands=CommandsConfig(verify_keys=(self.hes.public,),
                                                  max_disconnects_per_hour=max_disconnects))
        self.lock = threading.Lock()
        self.archive = Archive(self.cfg.archive).open()
        self.log = CommandLog(self.archive, self.lock)
        self.executor = Executor(lambda: self.cfg, self.archive, self.lock, self.clock, self.log,
                                 {})
        self.queued: list = []
        self.inbox = Inbox(DEV, ROOT, self.cfg.commands, self.log, self.clock, self.queued.append)

    def run(self, op: str, meter: str, args: dict | None = None, **kw) -> dict:
        signed = self.hes.sign(op, meter, args, **kw)
        outcome = self.inbox.receive(self.hes.seal(signed))
        if outcome == "failed":             # expired, rate_limited: answered without a meter
            counter = signed[2:10]
            return next(d for d in self.log.pending_results(1000)
                        if d["counter"] == int.from_bytes(counter, "big"))
        if outcome != "accepted":
            return {"outcome": outcome}
        return self.executor.run(self.queued.pop())

    def writes(self, i: int) -> list[tuple]:
        return [t for t in self.meters[i].traffic if t[0] in WRITES]

    def close(self) -> None:
        self.archive.close()
        self.bus.stop()
        self.port.close()


@pytest.fixture
def rig(tmp_path):
    r = DlmsRig(tmp_path)
    yield r
    r.close()


def test_disconnect_opens_the_relay_and_reconnect_closes_it_mode_4(rig):
    assert rig.meters[0].objects.control_mode == 4
    doc = rig.run("disconnect", M1)
    assert doc["state"] == "executed", doc
    assert doc["result"] == {"output_state": False, "control_state": "disconnected"}
    assert not rig.models[0].relay_connected and rig.models[1].relay_connected
    assert rig.writes(0) == [("ACTION", 70, "0.0.96.3.10.255", 1)]
    assert [t for t in rig.meters[0].traffic if t[1] == 70][-2:] == [
        ("GET", 70, "0.0.96.3.10.255", 2), ("GET", 70, "0.0.96.3.10.255", 3)]
    doc = rig.run("reconnect", M1)             # mode 4: direct remote reconnection
    assert doc["result"] == {"output_state": True, "control_state": "connected"}
    assert rig.models[0].relay_connected
    assert [code for _, code in rig.models[0].relay_events] == [59, 60]
    assert rig.writes(1) == []


def test_mode_1_reconnect_waits_for_the_customer_button(rig):
    rig.meters[1].objects.control_mode = 1
    assert rig.run("disconnect", M2)["result"]["output_state"] is False
    doc = rig.run("reconnect", M2)
    assert doc["result"] == {"output_state": False, "control_state": "ready_for_reconnection"}
    assert not rig.models[1].relay_connected
    assert rig.meters[1].objects.press_button()
    assert rig.models[1].relay_connected
    rig.meters[1].objects.control_mode = 0     # mode 0: no remote disconnection at all
    doc = rig.run("disconnect", M2)
    assert doc["state"] == "failed" and doc["reason"].startswith("meter_error"), doc
    assert rig.models[1].relay_connected


def test_tariff_calendar_is_written_passive_and_reads_back_equal(rig):
    doc = rig.run("tariff", M1, TARIFF)
    assert doc["state"] == "executed", doc
    assert doc["result"] == {"name": "TOU-2026", "activate": TARIFF["activate"],
                             "read_back": "equal"}
    objs = rig.meters[0].objects
    want = dict(cosem.passive_calendar(check_args("tariff", TARIFF)))
    assert {a: objs.passive[a] for a in want} == want
    assert {t[3] for t in rig.writes(0)} == {6, 7, 8, 9, 10}
    assert objs.active[2] == (9, b"")          # not active before its activation time
    rig.clock.t0 += TARIFF["activate"] - T0 + 60
    assert objs.get(20, cosem.CALENDAR, 2) == (9, b"TOU-2026")


def test_limit_reads_back_equal(rig):
    args = {"threshold_normal": 5000, "threshold_emergency": 2000,
            "min_over_threshold_duration": 60, "min_under_threshold_duration": 30}
    doc = rig.run("limit", M2, args)
    assert doc["state"] == "executed" and doc["result"] == args, doc
    assert rig.meters[1].objects.limiter[4] == (6, 5000)
    doc = rig.run("limit", M2, {"threshold_normal": 7000})
    assert doc["result"] == dict(args, threshold_normal=7000)


def test_time_brings_a_drifted_meter_clock_within_a_second(rig):
    rig.models[0].clock_offset += 437.0
    doc = rig.run("time", M1)
    assert doc["state"] == "executed", doc
    assert abs(doc["result"]["offset_before"]) > 400
    assert abs(doc["result"]["offset_after"]) <= 1.0
    true = rig.clock.now()
    assert abs(rig.models[0].clock(true) - true) <= 1.0


def test_refused_commands_never_reach_the_meter(tmp_path):
    rig = DlmsRig(tmp_path, max_disconnects=1)
    try:
        other = StandInHes(DEV, ROOT, rig.clock.now, secret=bytes(32))
        assert rig.run("disconnect", M1, counter=20)["state"] == "executed"
        assert rig.run("reconnect", M1, counter=21)["state"] == "executed"
        before = [list(m.traffic) for m in rig.meters]
        bad = bytearray(rig.hes.sign("disconnect", M1, counter=30))
        bad[-5] ^= 0x40
        refused = [
            rig.inbox.receive(rig.hes.seal(bytes(bad))),
            rig.run("disconnect", M1, concentrator="DC-ELSEWHERE", counter=31)["outcome"],
            rig.run("disconnect", M1, counter=21)["outcome"],                  # replayed
            rig.inbox.receive(rig.hes.seal(other.sign("disconnect", M1, counter=32))),
        ]
        assert refused == ["refused:bad_signature", "refused:foreign", "refused:replayed",
                           "refused:unknown_key"]
        doc = rig.run("disconnect", M1, counter=40, issued=int(T0) - 7200, ttl=60)
        assert doc["state"] == "failed" and doc["reason"] == "expired"
        doc = rig.run("disconnect", M2, counter=41)             # the second in the hour
        assert doc["state"] == "failed" and doc["reason"] == "rate_limited"
        rig.inbox.settings = CommandsConfig(verify_keys=(rig.hes.public,),
                                            revoked_keys=(rig.hes.public,))
        assert rig.run("disconnect", M1, counter=42)["outcome"] == "refused:revoked_key"
        assert [list(m.traffic) for m in rig.meters] == before      # not one byte asked
        assert rig.models[0].relay_connected and rig.models[1].relay_connected
        st = rig.log.status(rig.clock.now())
        assert st["refused"] == {"bad_signature": 1, "foreign": 1, "replayed": 1,
                                 "unknown_key": 1, "revoked_key": 1}
        assert st["failed"] == 2 and st["executed"] == 2
    finally:
        rig.close()


def test_simulated_objects_answer_any_request_with_a_result_code():
    """Hypothesis: SET/ACTION/GET of any attribute or method with any Data on
    classes 70, 20, 71 gives a value or a data-access-result, never raises;
    output_state is true exactly when control_state is connected."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from drivers.dlms.axdr import decode, encode
    from hil.dlms_objects import CommandObjects

    clock = ScaledClock(T0, 1.0)
    model = MeterModel(9, seed=1)
    objs = CommandObjects(model, clock.now, model.clock, control_mode=4)
    sample = [v for _, v in cosem.passive_calendar(check_args("tariff", TARIFF))]
    targets = [(70, cosem.DISCONNECTOR), (20, cosem.CALENDAR), (71, cosem.LIMITER_OBIS)]

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(targets), st.integers(0, 12), st.integers(0, 6),
           st.one_of(st.sampled_from(sample), st.binary(max_size=40)))
    def check(target, attr, mode, value):
        objs.control_mode = mode
        if isinstance(value, bytes):            # arbitrary bytes as A-XDR, when they decode
            try:
                value = decode(b"\x09" + bytes((len(value),)) + value)
            except DriverError:
                value = (9, value)
        cls, obis = target
        assert isinstance(objs.set(cls, obis, attr, value), int)
        assert isinstance(objs.action(cls, obis, attr), int)
        got = objs.get(cls, obis, attr)
        assert isinstance(got, int) or encode(got)
        out, state = objs.get(70, cosem.DISCONNECTOR, 2), objs.get(70, cosem.DISCONNECTOR, 3)
        assert out[1] == (state[1] == 1) == model.relay_connected

    check()
