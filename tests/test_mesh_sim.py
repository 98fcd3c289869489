"""``wum-hil mesh-sim`` (hil/mesh_sim*.py, hil/flooding.py): the JSON is the
contract's, deterministic by seed; a small district delivers every batch,
and those batches are real codec batches of the simulated meters; a
gateway's death reroutes its traffic and loses nothing; the flooding
baseline floods; the measurements can fail (a duty-cycle overrun is seen);
bad scenario files are refused with the key named, exit 2."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.batch import CodecState, decode_batch
from agent.envelope import open_envelope
from hil.mesh_sim import run_scenario
from hil.mesh_sim_data import KEYS, BatchSource, _Meter
from hil.mesh_sim_metrics import CONTRACT, DutyMonitor
from hil.mesh_sim_run import decode_ack, encode_ack
from hil.mesh_sim_scenario import ScenarioError, load, validate
from hil.model import HOUR, ORIGIN, MeterModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Six concentrators in a chain with one shortcut, 10 % loss on every link.
CHAIN = {
    "name": "chain", "hours": 2, "deadline_h": 1,
    "radio": {"kind": "lora", "region": "EU868", "bandwidth_khz": 125, "coding_rate": "4/5",
              "tx_power_dbm": 14},
    "path_loss": {"exponent": 3.0, "ref_loss_db": 40, "shadowing_db": 4},
    "frame_loss": 0.10,
    "nodes": [{"id": "DC-%04d" % i, "x": 100 * i, "y": 0, "meters": 4, "gateway": i == 1}
              for i in range(1, 7)],
    "links": [{"a": "DC-%04d" % i, "b": "DC-%04d" % (i + 1), "loss": 0.1} for i in range(1, 6)]
    + [{"a": "DC-0001", "b": "DC-0003", "loss": 0.1}],
}


def _hil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_json_is_the_contract_and_the_same_twice(tmp_path):
    f = tmp_path / "chain.json"
    f.write_text(json.dumps(CHAIN))
    runs = [_hil("mesh-sim", "--scenario", str(f), "--seed", "3", "--json") for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert runs[0].stdout == runs[1].stdout
    out = json.loads(runs[0].stdout)
    assert list(out) == list(CONTRACT) + ["baseline"]
    assert list(out["baseline"]) == list(CONTRACT)
    assert list(out["latency_s"]) == ["p50", "p95", "max"] == list(out["baseline"]["latency_s"])
    other = _hil("mesh-sim", "--scenario", str(f), "--seed", "4", "--json")
    assert other.stdout != runs[0].stdout                 # the seed matters


def _chains(source, node):
    """The codec states the HES holds for ``node`` before the run."""
    states = {}
    for cls, payload in source.warmup(node):
        state = CodecState(node)
        state.advance(decode_batch(payload, None))
        states[cls] = state
    return states


def test_small_district_delivers_real_batches_exactly_once():
    sc = validate(CHAIN)
    source = BatchSource(5)
    out, det = run_scenario(sc, 5, baseline=False, source=source)
    mesh = det["mesh"]
    assert out["delivery_ratio"] == 1.0 and out["read_rate"] == 1.0
    assert out["duty_cycle_violations"] == 0
    created = mesh.metrics.created
    assert set(mesh.hes.first) == set(created)             # every (device, seq), once
    assert mesh.hes.counters["stored"] == len(created) and mesh.hes.counters["rejected"] == 0
    assert mesh.hes.counters["lost_to_window"] == 0
    # the HES side: open each envelope, decode each chain in seq order, and
    # find the registers the simulated meters held at that hour
    for node in [n["id"] for n in sc["nodes"]]:
        states = _chains(source, node)
        mine = sorted((b.seq, b) for (dev, _), (b, _) in created.items() if dev == node)
        assert mine
        meters = {m.serial: m for m in (MeterModel(j, 5) for j in _indices(source, node))}
        for _, b in mine:
            batch = decode_batch(open_envelope(b.sealed, mesh.hes.keyring).payload,
                                 states[b.cls])
            states[b.cls].advance(batch)
            ts = ORIGIN + (b.hour + 1) * HOUR
            if b.cls == "events":
                want = sorted((s, t, c) for s, m in meters.items()
                              for t, c in m.events(ts - HOUR, ts - 1))
                assert want and sorted(batch.events) == want
                continue
            assert len(batch.readings) == 4
            for serial, t, vals in batch.readings:
                want = meters[serial].registers(ts)
                assert t == ts and vals == {k: want[k] for k in KEYS[b.cls]}


def _indices(source, node):
    return [m.index for m in source._nodes[node].models]


def test_meter_event_draws_kept_per_hour_are_the_models():
    for index in (3, 77, 1234):
        fast, model = _Meter(index, 9), MeterModel(index, 9)
        for start in range(ORIGIN, ORIGIN + 400 * HOUR, 7 * HOUR + 911):
            assert fast.events(start, start + 30 * HOUR) == model.events(start, start + 30 * HOUR)
        assert fast.registers(ORIGIN + 50 * HOUR) == model.registers(ORIGIN + 50 * HOUR)


def test_gateway_death_reroutes_within_minutes_and_loses_nothing():
    sc = copy.deepcopy(CHAIN)
    sc.update(name="failover", hours=4, deadline_h=2)
    sc["nodes"][5]["gateway"] = True                       # a second gateway at the far end
    sc["events"] = [{"at_h": 1.5, "node": "DC-0001", "action": "down"},
                    {"at_h": 3.0, "node": "DC-0001", "action": "up"}]
    out, det = run_scenario(validate(sc), 2, baseline=False)
    mesh = det["mesh"]
    (watch,) = mesh.reroute
    assert watch["gateway"] == "DC-0001" and watch["affected"] >= 2
    assert watch["not_rerouted"] == []
    assert max(watch["rerouted_s"].values()) < 1800
    assert out["delivery_ratio"] == 1.0                    # nothing lost
    via = {gw for _, gw in mesh.hes.first.values()}
    assert via == {"DC-0001", "DC-0006"}


def test_baseline_floods_and_measures_alike():
    out, det = run_scenario(validate(CHAIN), 3)
    flood = det["baseline"]
    assert out["baseline"]["delivery_ratio"] > 0
    assert flood.stats["cancelled"] > 0                    # duplicate cancel happened
    # uplink packets were relayed by more than their origin: flooding
    assert flood.metrics.frames > 2 * len(flood.metrics.created)
    assert out["baseline"]["airtime_s_per_node_hour"] > out["airtime_s_per_node_hour"]


def test_duty_monitor_sees_an_overrun():
    d = DutyMonitor()
    second = 1000000
    t = 0
    for _ in range(36):                                    # 36 s of air at 868.1 MHz: 1 %
        assert not d.record("n", 868100000, t, t + second)
        t += 60 * second
    assert d.record("n", 868100000, t, t + 1000)           # one more ms within the hour
    assert d.violations == 1
    assert not d.record("n", None, 0, HOUR * second)       # Wi-Fi: no duty cycle


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1 << 40), max_size=20), st.binary(max_size=40))
def test_ack_codec_round_trip_and_any_bytes(seqs, junk):
    assert decode_ack(encode_ack(seqs)) == seqs
    got = decode_ack(junk)
    assert got is None or all(isinstance(s, int) for s in got)


def test_the_issue_example_file_is_valid_and_builtins_load():
    doc = {"name": "x", "hours": 48, "deadline_h": 1,
           "radio": {"kind": "lora", "region": "EU868", "bandwidth_khz": 125,
                     "coding_rate": "4/5", "tx_power_dbm": 14},
           "path_loss": {"exponent": 3.0, "ref_loss_db": 40, "shadowing_db": 4},
           "frame_loss": 0.10,
           "nodes": [{"id": "DC-0001", "x": 0, "y": 0, "meters": 64, "gateway": True},
                     {"id": "DC-0002", "x": 50, "y": 0, "meters": 64}],
           "links": [{"a": "DC-0001", "b": "DC-0002", "loss": 0.1}],
           "events": [{"at_h": 10, "node": "DC-0001", "action": "down"},
                      {"at_h": 20, "node": "DC-0001", "action": "up"}]}
    sc = validate(doc)
    assert sc["radio"]["frequency_mhz"] == 869.525 and sc["drain_h"] == 1
    for name, nodes, gws in (("wifi-district", 300, 2), ("lora-district", 120, 3),
                             ("gateway-failover", 120, 3)):
        sc = load(name)
        assert len(sc["nodes"]) == nodes and sum(n["gateway"] for n in sc["nodes"]) == gws
    assert [e["action"] for e in load("gateway-failover")["events"]] == ["down", "up"]


BAD = [
    ({"hours": "two"}, "hours must be a number"),
    ({"hours": None}, "hours is missing"),
    ({"hours": 0}, "hours must be at least 1"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"radio": {"kind": "zigbee"}}, "radio.kind must be"),
    ({"radio": {"kind": "lora", "region": "US915"}}, "radio.region"),
    ({"radio": {"kind": "lora", "frequency_mhz": 868.65}}, "no EU868 duty-cycle sub-band"),
    ({"radio": {"kind": "lora", "sf": 9, "min_sf": 7}}, "radio.sf"),
    ({"frame_loss": 1.5}, "frame_loss must be at most"),
    ({"nodes": [{"id": "A", "x": 0, "y": 0}, {"id": "B", "x": 1, "y": 0}]}, "at least one gateway"),
    ({"nodes": [{"id": "A", "x": 0, "y": 0, "gateway": True}, {"id": "A", "x": 1, "y": 0}]},
     "nodes[1].id 'A' appears twice"),
    ({"nodes": [{"id": "A", "x": "0", "y": 0, "gateway": True}, {"id": "B", "x": 1, "y": 0}]},
     "nodes[0].x must be a number"),
    ({"links": [{"a": "DC-0001", "b": "DC-0099"}]}, "links[0].b must name a node"),
    ({"events": [{"at_h": 1, "node": "DC-0002", "action": "explode"}]}, "events[0].action"),
    ({"events": [{"at_h": 1, "node": "DC-0002", "action": "uplink_down"}]}, "only a gateway"),
    ({"read": ["energy", "water"]}, "read must be"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_bad_scenarios_name_the_key(change, message):
    doc = copy.deepcopy(CHAIN)
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(ScenarioError) as e:
        validate(doc)
    assert message in str(e.value)


def test_bad_files_exit_2_with_a_clear_error(tmp_path):
    cases = {"notjson.json": "{nope", "list.json": "[1, 2]",
             "nogw.json": json.dumps({**CHAIN, "nodes": [{"id": "A", "x": 0, "y": 0},
                                                        {"id": "B", "x": 1, "y": 0}]})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        r = _hil("mesh-sim", "--scenario", str(tmp_path / name), "--seed", "1", "--json")
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.startswith("wum-hil: error: scenario:"), r.stderr
    r = _hil("mesh-sim", "--scenario", "no-such-district", "--json")
    assert r.returncode == 2 and "lora-district" in r.stderr


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6)
                     | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=4),
                     max_leaves=12)
_PATHS = [(), ("radio",), ("path_loss",), ("nodes", 0), ("nodes", 2), ("links", 0), ("events",)]


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(_PATHS), st.text(max_size=12), _JSON)
def test_any_document_is_a_scenario_or_a_scenario_error(path, key, value):
    """Any JSON value put anywhere in a valid scenario (or as the whole
    document) validates or raises ScenarioError, never another exception."""
    doc = copy.deepcopy(CHAIN)
    doc["events"] = [{"at_h": 1, "node": "DC-0002", "action": "down"}]
    where: object = doc
    for p in path:
        where = where[p]  # type: ignore[index]
    if isinstance(where, dict):
        where[key] = value
    else:
        where.append(value)  # type: ignore[attr-defined]
    for candidate in (doc, value):
        try:
            validate(candidate)
        except ScenarioError as e:
            assert e.where is not None and e.problem
