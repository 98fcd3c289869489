"""The agent's [commands] settings and the remote `config` overlay: validated
like the rest of the TOML (errors name the key), persisted in the archive
and applied again after a restart; and what the transports make of the
command parts of the HES's answers."""

from __future__ import annotations

import textwrap

import pytest

from agent.clock import ScaledClock
from agent.config import ConfigError, load, merge_overlay
from agent.daemon import Daemon
from agent.transport import TransportError, parse_ack, parse_polled, parse_result_ack

PUB = "9e963efb5a4dab8c255a641b11cae69c7b35a3299e8fa0a0f60ab39806dfdb01"
BASE = """
[concentrator]
id = "DC-1"
archive = "a.db"
[uplink]
transport = "none"
[[bus]]
name = "bus1"
port = "/dev/null"
[[bus.meter]]
address = "1"
[[bus]]
name = "bus2"
port = "/dev/null"
protocol = "dlms"
[[bus.meter]]
address = "7"
"""


def _cfg(tmp_path, extra: str = ""):
    p = tmp_path / "agent.toml"
    p.write_text(textwrap.dedent(BASE) + textwrap.dedent(extra))
    return load(p)


def _key_error(tmp_path, extra: str) -> str:
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, extra)
    return e.value.key  # type: ignore[attr-defined,no-any-return]


def test_commands_section_parsed_and_defaulted(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.commands.verify_keys == () and cfg.commands.max_disconnects_per_hour == 10
    (tmp_path / "cmd.pub").write_text("# the HES's key\n%s\n" % PUB)
    cfg = _cfg(tmp_path, """
        [commands]
        verify_key = ["%s"]
        verify_key_file = "cmd.pub"
        revoked_keys = ["d668bb020d94051f"]
        max_disconnects_per_hour = 3
        poll_interval = 5
        """ % PUB)
    c = cfg.commands
    assert c.verify_keys == (bytes.fromhex(PUB),) * 2
    assert c.revoked_keys == (bytes.fromhex("d668bb020d94051f"),)
    assert (c.max_disconnects_per_hour, c.poll_interval) == (3, 5.0)


def test_commands_errors_name_the_key(tmp_path):
    assert _key_error(tmp_path, '[commands]\nverify_key = "abcd"') == "commands.verify_key"
    assert _key_error(tmp_path, '[commands]\nrevoked_keys = ["zz"]') == "commands.revoked_keys"
    assert _key_error(tmp_path, "[commands]\nmax_disconnects_per_hour = -1") == \
        "commands.max_disconnects_per_hour"
    assert _key_error(tmp_path, "[commands]\nverify = 1") == "commands.verify"
    assert _key_error(tmp_path, '[commands]\nverify_key_file = "nope"') == \
        "commands.verify_key_file"


def test_overlay_rules(tmp_path):
    raw = _cfg(tmp_path).raw
    out = merge_overlay(raw, {"schedule": {"period": 900},
                              "bus": {"bus2": {"meter": [{"address": "8"}]}}})
    assert out["schedule"] == {"period": 900} and out["bus"][1]["meter"] == [{"address": "8"}]
    assert raw["bus"][1]["meter"] == [{"address": "7"}]          # the file is not touched
    for bad, key in (({"uplink": {"url": "x"}}, "overlay.uplink"),
                     ({"schedule": {"port": 1}}, "overlay.schedule.port"),
                     ({"bus": {"bus9": {"meter": []}}}, "overlay.bus.bus9")):
        with pytest.raises(ConfigError) as e:
            merge_overlay(raw, bad)
        assert e.value.key == key  # type: ignore[attr-defined]


def test_remote_config_is_validated_persisted_and_survives_a_restart(tmp_path):
    cfg = _cfg(tmp_path)
    d = Daemon(cfg, ScaledClock(1795910400, 1.0)).open()
    try:
        assert d.apply_config({"schedule": {"period": 900}}) == {"schedule": {"period": 900}}
        assert d.apply_config({"retention": {"days": 31}}) == {
            "schedule": {"period": 900}, "retention": {"days": 31}}
        assert (d.cfg.period, d.cfg.retention_days) == (900, 31)
        with pytest.raises(ConfigError) as e:
            d.apply_config({"retention": {"days": 90}})
        assert e.value.key == "retention.days"  # type: ignore[attr-defined]
        assert d.cfg.retention_days == 31                    # a refused overlay changes nothing
        d.apply_config({"bus": {"bus2": {"meter": [{"address": "7"}, {"address": "9"}]}}})
        assert [m.address for m in d.cfg.buses[1].meters] == ["7", "9"]
    finally:
        d.close()
    d = Daemon(_cfg(tmp_path), ScaledClock(1795910400, 1.0)).open()     # restart
    try:
        assert (d.cfg.period, d.cfg.retention_days) == (900, 31)
        assert [m.address for m in d.cfg.buses[1].meters] == ["7", "9"]
        assert d.file_cfg.period == 3600
    finally:
        d.close()


def test_answers_carry_commands_and_bad_entries_are_dropped():
    ack = parse_ack({"device": "D", "seq": 3, "status": "accepted", "server_time": 1.5,
                     "commands": ["0102", "zz", 7, "ff"]}, "D", 3, "u")
    assert ack.commands == (b"\x01\x02", b"\xff")
    assert parse_ack({"device": "D", "seq": 3, "status": "duplicate", "server_time": 1},
                     "D", 3, "u").commands == ()
    polled = parse_polled({"device": "D", "commands": ["aa"], "server_time": 2}, "D", "u")
    assert polled.commands == (b"\xaa",)
    with pytest.raises(TransportError) as e:
        parse_polled({"error": "unknown_device"}, "D", "u")
    assert e.value.reason == "rejected" and e.value.hes_reason == "unknown_device"
    assert parse_result_ack({"device": "D", "counter": 9, "status": "duplicate"}, "D", 9,
                            "u").status == "duplicate"
    with pytest.raises(TransportError) as e:
        parse_result_ack({"device": "D", "counter": 8, "status": "accepted"}, "D", 9, "u")
    assert e.value.reason == "protocol"
