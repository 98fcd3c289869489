"""Config validation: every bad key is named; the shipped example loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load

EXAMPLE = Path(__file__).parent.parent / "agent" / "data" / "agent.toml.example"
KEY = "00" * 32


def write(tmp_path, text):
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


GOOD = """
[concentrator]
id = "DC-1"
archive = "a.db"
[uplink]
url = "http://127.0.0.1:1"
key = "%s"
[[bus]]
port = "/dev/null"
[[bus.meter]]
address = 3
""" % KEY


def test_example_loads(tmp_path):
    (tmp_path / "device.key").write_text(KEY)
    text = EXAMPLE.read_text().replace("/etc/wum/device.key", str(tmp_path / "device.key"))
    cfg = load(write(tmp_path, text))
    assert cfg.concentrator_id == "DC-0001" and len(cfg.buses) == 2
    assert cfg.buses[0].meters[1].auth == "hls"
    assert cfg.buses[1].meters[0].profile == "eastron-sdm630"


def test_relative_archive_and_defaults(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.archive == str(tmp_path / "a.db")
    assert cfg.buses[0].protocol == "modbus" and cfg.buses[0].meters[0].address == "3"
    assert cfg.period == 3600 and cfg.retention_days == 45


@pytest.mark.parametrize("change, key", [
    (("[retention]\n", "[retention]\ndays = 90\n"), "retention.days"),
    (('port = "/dev/null"', 'port = "/dev/null"\nprotocol = "zigbee"'), "bus[0].protocol"),
    (('address = 3', 'address = 3\nfoo = 1'), "bus[0].meter[0].foo"),
    (('key = "%s"' % KEY, 'key = "abc"'), "uplink.key"),
    (('id = "DC-1"', 'id = 7'), "concentrator.id"),
    (('[[bus.meter]]\naddress = 3', 'discover = false'), "bus[0].meter"),
])
def test_bad_keys_are_named(tmp_path, change, key):
    text = GOOD + "[retention]\n" if change[0] == "[retention]\n" else GOOD
    text = text.replace(*change)
    with pytest.raises(ConfigError) as ei:
        load(write(tmp_path, text))
    assert ei.value.key == key, str(ei.value)
    assert key.split(".")[-1].split("[")[0] in str(ei.value)


def test_unreadable_and_invalid(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[concentrator\nid="))
