"""Signed commands on the agent, in-process, against simulated meters on a
pseudo-terminal: the inbox (real archive, real envelope and command
formats), the executor on the meters' drivers, the durable counter.

Commands are made by ``tests/command_hes.py``, a STAND-IN for the HES's
signing and sealing (the real formats; not hes-lite's queue)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from agent.archive import Archive
from agent.clock import ScaledClock
from agent.commands import CommandLog, Inbox
from agent.commands_exec import Executor, capabilities
from agent.config import BusConfig, CommandsConfig, Config, MeterConfig
from hil.bus import Bus
from hil.iec_meter import IecMeter
from hil.modbus_meter import ModbusMeter
from hil.model import MeterModel
from hil.ports import open_port
from tests.command_hes import StandInHes

T0 = 1795910400 + 600
ROOT = bytes(range(32))
DEV = "DC-CMD"


class Rig:
    """Two buses (2 Modbus meters; 1 IEC meter) and the agent's command side."""

    def __init__(self, tmp_path, max_disconnects: int = 10) -> None:
        self.clock = ScaledClock(T0, 1.0)
        self.models = [MeterModel(i, seed=11) for i in (1, 2, 3)]
        self.ports = [open_port("pty"), open_port("pty")]
        self.buses = [
            Bus(self.ports[0], [ModbusMeter(self.models[0], 1, self.clock.now),
                                ModbusMeter(self.models[1], 2, self.clock.now)],
                baud=115200, pace=False).start(),
            Bus(self.ports[1], [IecMeter(self.models[2], "3", self.clock.now,
                                         manufacturer="WUm")], baud=115200, pace=False).start()]
        self.hes = StandInHes(DEV, ROOT, self.clock.now)
        modbus = tuple(MeterConfig(address=str(a), protocol="modbus", profile="generic")
                       for a in (1, 2))
        iec = (MeterConfig(address="3", protocol="iec62056-21", password="00000000"),)
        self.cfg = Config(
            concentrator_id=DEV, archive=str(tmp_path / "a.db"), transport="none", retries=1,
            buses=(BusConfig("bus1", self.ports[0].agent_path, 115200, "modbus", False, 0.5,
                             modbus),
                   BusConfig("bus2", self.ports[1].agent_path, 115200, "iec62056-21", False,
                             0.5, iec)),
            commands=CommandsConfig(verify_keys=(self.hes.public,),
                                    max_disconnects_per_hour=max_disconnects))
        self.path = tmp_path / "a.db"
        self.open()

    def open(self) -> None:
        self.lock = threading.Lock()
        self.archive = Archive(str(self.path)).open()
        self.log = CommandLog(self.archive, self.lock)
        self.bus_locks: dict[str, threading.Lock] = {}
        self.executor = Executor(lambda: self.cfg, self.archive, self.lock, self.clock, self.log,
                                 self.bus_locks)
        self.queued: list = []
        self.inbox = Inbox(DEV, ROOT, self.cfg.commands, self.log, self.clock, self.queued.append)

    def reopen(self) -> None:
        self.archive.close()
        self.open()

    def deliver(self, signed: bytes) -> tuple[str, dict | None]:
        """Seal, receive, execute what was accepted; (outcome, result doc)."""
        outcome = self.inbox.receive(self.hes.seal(signed))
        doc = None
        while self.queued:
            doc = self.executor.run(self.queued.pop(0))
        if doc is None:
            results = self.log.pending_results(100)
            doc = results[-1] if results and outcome == "failed" else None
        return outcome, doc

    def close(self) -> None:
        self.archive.close()
        for b in self.buses:
            b.stop()
        for p in self.ports:
            p.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_modbus_disconnect_and_reconnect_through_the_profile_relay(rig):
    assert rig.models[0].relay_connected
    outcome, doc = rig.deliver(rig.hes.sign("disconnect", "bus1:modbus:1"))
    assert outcome == "accepted"
    assert doc["state"] == "executed", doc
    assert doc["result"] == {"output_state": False, "control_state": "disconnected"}
    assert not rig.models[0].relay_connected and rig.models[1].relay_connected
    outcome, doc = rig.deliver(rig.hes.sign("reconnect", "bus1:modbus:1"))
    assert doc["state"] == "executed" and doc["result"]["output_state"] is True
    assert rig.models[0].relay_connected
    assert {"id", "counter", "op", "state", "reason", "result", "ts"} == set(doc)


def test_iec_meter_answers_unsupported_for_what_it_cannot_do_and_sets_its_clock(rig):
    events = list(rig.models[2].relay_events)
    for op, args in (("disconnect", {}), ("limit", {"threshold_normal": 1000})):
        _, doc = rig.deliver(rig.hes.sign(op, "bus2:iec62056-21:3", args))
        assert doc["state"] == "failed" and doc["reason"].startswith("unsupported"), doc
    assert rig.models[2].relay_connected and rig.models[2].relay_events == events
    rig.models[2].clock_offset += 95.0                    # a drifted meter clock
    _, doc = rig.deliver(rig.hes.sign("time", "bus2:iec62056-21:3"))
    assert doc["state"] == "executed", doc
    assert abs(doc["result"]["offset_before"]) > 60
    assert abs(doc["result"]["offset_after"]) <= 1.0


def test_capabilities_follow_protocol_and_profile():
    assert capabilities(MeterConfig("1", "dlms")) >= {"disconnect", "tariff", "limit", "time"}
    assert capabilities(MeterConfig("1", "modbus", profile="generic")) == {
        "read", "disconnect", "reconnect", "time"}
    assert capabilities(MeterConfig("1", "iec62056-21")) == {"read", "time"}


def test_read_now_archives_and_summarises(rig):
    _, doc = rig.deliver(rig.hes.sign("read", "bus1:modbus:2", {
        "registers": ["1.0.1.8.0.255"], "profile": {"from": T0 - 4 * 3600, "to": T0}}))
    assert doc["state"] == "executed", doc
    r = doc["result"]
    assert set(r["registers"]) == {"1.0.1.8.0.255"} and r["profile_rows"] >= 3
    assert r["archived"] >= 1
    assert r["registers"]["1.0.1.8.0.255"] > 0


def test_rejections_are_refused_counted_and_never_reach_a_meter(rig):
    other = StandInHes(DEV, ROOT, rig.clock.now, secret=bytes(32))
    events = list(rig.models[0].relay_events)
    good = rig.hes.sign("disconnect", "bus1:modbus:1", counter=50)
    bad_sig = bytearray(good)
    bad_sig[-1] ^= 1
    cases = [
        (bytes(bad_sig), "refused:bad_signature"),
        (rig.hes.sign("disconnect", "bus1:modbus:1", concentrator="DC-OTHER", counter=51),
         "refused:foreign"),
        (other.sign("disconnect", "bus1:modbus:1", counter=52), "refused:unknown_key"),
        (good[:40] + good[-64:], "refused:malformed"),
    ]
    for signed, want in cases:
        assert rig.inbox.receive(rig.hes.seal(signed)) == want
    assert rig.inbox.receive(b"\x01\x02garbage") == "refused:bad_envelope"
    # revoked key, replayed, expired: need a config / a newer counter / a clock
    rig.inbox.settings = replace(rig.cfg.commands, revoked_keys=(rig.hes.public,))
    assert rig.inbox.receive(rig.hes.seal(good)) == "refused:revoked_key"
    rig.inbox.settings = rig.cfg.commands
    assert rig.deliver(rig.hes.sign("time", "bus1:modbus:2", counter=60))[0] == "accepted"
    assert rig.inbox.receive(rig.hes.seal(good)) == "refused:replayed"        # 50 < 60
    outcome, doc = rig.deliver(rig.hes.sign("disconnect", "bus1:modbus:1", counter=61,
                                            issued=int(T0) - 7200, ttl=3600))
    assert outcome == "failed" and doc["reason"] == "expired"
    assert rig.models[0].relay_connected and rig.models[0].relay_events == events
    st = rig.log.status(rig.clock.now())
    assert st["refused"] == {"bad_signature": 1, "foreign": 1, "unknown_key": 1, "malformed": 1,
                             "bad_envelope": 1, "revoked_key": 1, "replayed": 1}
    assert st["refused_total"] == 7 and st["failed"] == 1 and st["executed"] == 1
    assert [r["reason"] for r in st["last_refusals"]][0] == "replayed"
    assert st["last_results"][0]["reason"] == "expired"


def test_disconnect_rate_limit_is_a_sliding_hour_and_survives_a_restart(tmp_path):
    rig = Rig(tmp_path, max_disconnects=2)
    try:
        for _ in range(2):
            assert rig.deliver(rig.hes.sign("disconnect", "bus1:modbus:2"))[1]["state"] == \
                "executed"
        rig.reopen()
        events = list(rig.models[1].relay_events)
        outcome, doc = rig.deliver(rig.hes.sign("disconnect", "bus1:modbus:2"))
        assert outcome == "failed" and doc["reason"] == "rate_limited"
        assert rig.models[1].relay_events == events          # nothing reached the meter
        assert rig.deliver(rig.hes.sign("reconnect", "bus1:modbus:2"))[1]["state"] == \
            "executed"                                        # only disconnects are limited
        rig.clock.t0 += 3601                                  # the hour slides
        assert rig.deliver(rig.hes.sign("disconnect", "bus1:modbus:2"))[1]["state"] == \
            "executed"
        assert rig.log.status(rig.clock.now())["disconnects_last_hour"] == 1
    finally:
        rig.close()


def test_redelivery_resends_the_result_and_executes_nothing(rig):
    signed = rig.hes.sign("disconnect", "bus1:modbus:1")
    sealed = rig.hes.seal(signed)
    assert rig.inbox.receive(sealed) == "accepted"
    doc = rig.executor.run(rig.queued.pop())
    rig.log.ack_result(doc["counter"], rig.clock.now())
    events = list(rig.models[0].relay_events)
    assert rig.inbox.receive(sealed) == "duplicate"                   # the same bytes
    assert rig.inbox.receive(rig.hes.seal(signed)) == "duplicate"     # re-sealed
    assert not rig.queued and rig.models[0].relay_events == events
    assert [d["counter"] for d in rig.log.pending_results()] == [doc["counter"]]
    forged = rig.hes.sign("reconnect", "bus1:modbus:1", counter=doc["counter"])
    assert rig.inbox.receive(rig.hes.seal(forged)) == "refused:replayed"


def test_counter_is_durable_and_a_crash_mid_command_is_never_rerun(rig):
    a = rig.hes.sign("disconnect", "bus1:modbus:1")
    b = rig.hes.sign("disconnect", "bus1:modbus:2")
    assert rig.inbox.receive(rig.hes.seal(a)) == "accepted"
    assert rig.inbox.receive(rig.hes.seal(b)) == "accepted"
    first, second = rig.queued
    rig.log.mark_running(first.counter, rig.clock.now())   # a crashes after this point
    rig.reopen()                                            # ... the agent restarts
    assert rig.log.last_counter() == second.counter
    resumed = rig.inbox.resume()
    assert [c.counter for c in resumed] == [second.counter]  # b never started: run once now
    assert rig.log.pending_results()[0]["reason"] == "interrupted"
    assert rig.models[0].relay_connected                     # a was not run again
    doc = rig.executor.run(rig.queued.pop())
    assert doc["state"] == "executed" and not rig.models[1].relay_connected
    assert rig.inbox.receive(rig.hes.seal(a)) == "duplicate"
    assert rig.inbox.receive(rig.hes.seal(rig.hes.sign("time", "bus1:modbus:1",
                                                       counter=1))) == "refused:replayed"


def test_config_overlay_is_validated_and_unknown_meters_fail(rig):
    applied = []
    rig.executor.apply_config = lambda o: applied.append(o) or o
    _, doc = rig.deliver(rig.hes.sign("config", "", {"schedule": {"period": 900}}))
    assert doc["state"] == "executed" and applied == [{"schedule": {"period": 900}}]
    _, doc = rig.deliver(rig.hes.sign("time", "bus9:modbus:1"))
    assert doc["state"] == "failed" and doc["reason"].startswith("unknown_meter")
    _, doc = rig.deliver(rig.hes.sign("tariff", "bus1:modbus:1", {"name": "x"}))
    assert doc["state"] == "failed" and doc["reason"].startswith("bad_args"), doc


def test_a_command_waits_for_the_bus_between_meter_reads(rig):
    lock = rig.bus_locks.setdefault("bus1", threading.Lock())
    lock.acquire()                        # a cycle is reading a meter of bus1
    assert rig.inbox.receive(rig.hes.seal(rig.hes.sign("disconnect", "bus1:modbus:1"))) == \
        "accepted"
    t = threading.Thread(target=rig.executor.run, args=(rig.queued.pop(),))
    t.start()
    time.sleep(0.3)
    assert rig.models[0].relay_connected and t.is_alive()
    lock.release()
    t.join(10)
    assert not rig.models[0].relay_connected


def test_any_bytes_are_refused_or_taken_never_raised(tmp_path):
    """Hypothesis: whatever arrives on the command path — random bytes, or a
    valid sealed command with bytes flipped, cut or appended — the inbox
    answers with an outcome and never raises; nothing is dispatched that did
    not verify."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    clock = ScaledClock(T0, 1.0)
    hes = StandInHes(DEV, ROOT, clock.now)
    lock = threading.Lock()
    arc = Archive(str(tmp_path / "p.db")).open()
    log_ = CommandLog(arc, lock)
    queued: list = []
    inbox = Inbox(DEV, ROOT, CommandsConfig(verify_keys=(hes.public,)), log_, clock,
                  queued.append)
    good = hes.seal(hes.sign("disconnect", "bus1:modbus:1", counter=1 << 40))

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(st.binary(max_size=300),
                     st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)).map(
                         lambda f: good[:f[0]] + bytes((good[f[0]] ^ f[1],)) + good[f[0] + 1:]),
                     st.integers(0, len(good) - 1).map(lambda n: good[:n]),
                     st.binary(min_size=1, max_size=20).map(lambda b: good + b)))
    def check(data: bytes) -> None:
        outcome = inbox.receive(data)
        assert outcome.startswith("refused:") or outcome in ("accepted", "duplicate")
        assert not queued, "a tampered command was dispatched"

    try:
        check()
        assert inbox.receive(good) == "accepted" and len(queued) == 1
    finally:
        arc.close()
