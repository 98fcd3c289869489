"""The ``[mesh]`` configuration (issue 10's contract): what parses, and every
bad key named in the error, like the rest of the agent's configuration."""

from __future__ import annotations

import subprocess

import pytest

from agent.config import ConfigError, load
from mesh.duty import DutyCycleBudget
from mesh.links import LinkSpec
from tests.agent_rig import ROOT, WUM

NET = "ab" * 32
DEV = "cd" * 32

NODE = """
[concentrator]
id = "DC-0003"
archive = "a.db"
[uplink]
transport = "mesh"
key = "%s"
[mesh]
role = "node"
network_key = "%s"
[[mesh.link]]
kind = "udp"
listen = "0.0.0.0:47800"
peers = ["192.0.2.12:47800"]
[[bus]]
port = "/dev/null"
[[bus.meter]]
address = 3
""" % (DEV, NET)

LORA = """
[[mesh.link]]
kind = "lora"
chip = "sx1262"
spi = "/dev/spidev0.0"
busy = "gpiochip0:23"
dio1 = "gpiochip0:24"
reset = "gpiochip0:25"
region = "EU868"
frequency_mhz = 869.525
sf = 9
bandwidth_khz = 125
coding_rate = "4/5"
"""


def write(tmp_path, text):
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_node_over_udp_parses(tmp_path):
    cfg = load(write(tmp_path, NODE))
    m = cfg.mesh
    assert cfg.transport == "mesh" and m is not None
    assert m.role == "node" and m.network_key == bytes.fromhex(NET)
    assert NET not in repr(cfg) and NET not in repr(m)          # the key never in a repr
    (link,) = m.links
    assert link.kind == "udp" and link.table["listen"] == "0.0.0.0:47800"
    assert link.table["peers"] == ["192.0.2.12:47800"] and link.table["loss"] == 0.0


def test_lora_link_normalised_to_what_mesh_and_driver_read(tmp_path):
    text = NODE.replace('[[bus]]', LORA + '[[bus]]')
    cfg = load(write(tmp_path, text))
    lora = cfg.mesh.links[1].table
    assert lora["channel"] == 869525000 and lora["bandwidth"] == 125000
    assert "frequency_mhz" not in lora and lora["sf"] == 9 and lora["coding_rate"] == "4/5"
    # the node charges the band the radio sends on: g3, 10 %
    spec = LinkSpec.from_dict(lora)
    assert DutyCycleBudget().band(spec.channel)[0] == "g3"


def test_lora_bandwidth_in_khz_or_hz(tmp_path):
    for written in ("bandwidth = 250", "bandwidth = 250000", "bandwidth_khz = 250"):
        text = NODE.replace('[[bus]]', LORA.replace("bandwidth_khz = 125", written) + '[[bus]]')
        assert load(write(tmp_path, text)).mesh.links[1].table["bandwidth"] == 250000


def test_gateway_and_key_file(tmp_path):
    (tmp_path / "mesh.key").write_text(NET + "\n")
    text = (NODE.replace('transport = "mesh"', 'transport = "http"\nurl = "http://hes:8080"')
            .replace('role = "node"', 'role = "gateway"')
            .replace('network_key = "%s"' % NET, 'network_key_file = "mesh.key"')
            .replace('[mesh]', '[mesh]\nmembers = ["DC-0001", "DC-0003"]\nmtu = 115'))
    cfg = load(write(tmp_path, text))
    assert cfg.mesh.role == "gateway" and cfg.mesh.network_key == bytes.fromhex(NET)
    assert cfg.mesh.members == ("DC-0001", "DC-0003") and cfg.mesh.mtu == 115


def test_example_carries_a_valid_mesh_section(tmp_path):
    """The commented [mesh] of agent.toml.example, uncommented, loads."""
    example = (ROOT / "agent" / "data" / "agent.toml.example").read_text()
    (tmp_path / "mesh.key").write_text(NET)
    mesh = example[example.index("# [mesh]"):].replace("/etc/wum/mesh.key",
                                                        str(tmp_path / "mesh.key"))
    text = (NODE[:NODE.index("[mesh]")].replace('id = "DC-0003"', 'id = "DC-0002"')
            + "\n".join(line[2:] for line in mesh.splitlines())
            + '\n[[bus]]\nport = "/dev/null"\n[[bus.meter]]\naddress = 3\n')
    cfg = load(write(tmp_path, text))
    assert [lc.kind for lc in cfg.mesh.links] == ["udp", "lora"]


@pytest.mark.parametrize("change, key", [
    (('[mesh]', '[mesh]\nfoo = 1'), "mesh.foo"),
    (('kind = "udp"', 'kind = "udp"\nrate = 5'), "mesh.link[0].rate"),
    (('kind = "udp"', 'kind = "wifi"'), "mesh.link[0].kind"),
    (('listen = "0.0.0.0:47800"', ''), "mesh.link[0].listen"),
    (('listen = "0.0.0.0:47800"', 'listen = "nowhere"'), "mesh.link[0].listen"),
    (('peers = ["192.0.2.12:47800"]', 'peers = ["192.0.2.12"]'), "mesh.link[0].peers"),
    (('peers = ["192.0.2.12:47800"]', 'peers = [47800]'), "mesh.link[0].peers"),
    (('peers = ["192.0.2.12:47800"]', 'loss = 1.5'), "mesh.link[0].loss"),
    (('role = "node"', 'role = "king"'), "mesh.role"),
    (('role = "node"', 'role = "gateway"'), "mesh.role"),
    (('network_key = "%s"' % NET, 'network_key = "abcd"'), "mesh.network_key"),
    (('network_key = "%s"' % NET, ''), "mesh.network_key"),
    (('network_key = "%s"' % NET, 'network_key = "%s"\nnetwork_key_file = "k"' % NET),
     "mesh.network_key"),
    (('network_key = "%s"' % NET, 'network_key_file = "missing.key"'), "mesh.network_key_file"),
    (('[mesh]', '[mesh]\nmembers = ["DC-0001"]'), "mesh.members"),
    (('[mesh]', '[mesh]\nmtu = 10'), "mesh.mtu"),
    (('key = "%s"' % DEV, 'key = "%s"\nurl = "http://hes:8080"' % DEV), "uplink.url"),
    (('key = "%s"' % DEV, ''), "uplink.key"),
    (('transport = "mesh"', 'transport = "pigeon"'), "uplink.transport"),
])
def test_bad_keys_are_named(tmp_path, change, key):
    assert change[0] in NODE
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, NODE.replace(change[0], change[1])))
    assert e.value.key == key, str(e.value)


@pytest.mark.parametrize("change, key", [
    (('sf = 9', 'sf = 13'), "mesh.link[1].sf"),
    (('bandwidth_khz = 125', 'bandwidth_khz = 62.5'), "mesh.link[1].bandwidth"),
    (('coding_rate = "4/5"', 'coding_rate = "4/9"'), "mesh.link[1].coding_rate"),
    (('region = "EU868"', 'region = "US915"'), "mesh.link[1].region"),
    (('chip = "sx1262"', 'chip = "cc1101"'), "mesh.link[1].chip"),
    (('busy = "gpiochip0:23"', ''), "mesh.link[1].busy"),
    (('sf = 9', 'sf = "nine"'), "mesh.link[1].sf"),
    (('sf = 9', 'sf = 9\nspreading = 9'), "mesh.link[1].spreading"),
])
def test_bad_lora_keys_are_named(tmp_path, change, key):
    text = NODE.replace('[[bus]]', LORA + '[[bus]]')
    assert change[0] in text
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text.replace(change[0], change[1])))
    assert e.value.key == key, str(e.value)


def test_mesh_transport_needs_a_mesh_table(tmp_path):
    text = NODE[:NODE.index("[mesh]")] + NODE[NODE.index("[[bus]]"):]
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    assert e.value.key == "mesh"


def test_wum_run_exits_2_naming_the_key(tmp_path):
    cfg = write(tmp_path, NODE.replace('role = "node"', 'role = "relay"'))
    out = subprocess.run([WUM, "run", "--config", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "mesh.role" in out.stderr
