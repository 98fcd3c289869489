"""The daemon's control channel and what the field CLI shows through it:
`wum mesh neighbours|routes|ping|stats [--json]` and `wum status --json`
against live mesh agents (in this process, their control sockets real Unix
sockets), and the snapshot `wum status` falls back to once the daemon is gone.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading

import pytest

from agent.mesh_control import ControlError, ControlServer, request, socket_path
from tests.agent_rig import ROOT, WUM
from tests.test_agent_mesh import Net, routed


def wum(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WUM, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def toml(cfg_path, ident: str, role: str, port: int, peers: list[int], tmp) -> None:
    """The same configuration as tests.test_agent_mesh.config, as a file for the CLI."""
    from tests.test_agent_mesh import KEYS, NET

    lines = ['[concentrator]', 'id = "%s"' % ident, 'archive = "%s"' % (tmp / (ident + ".db")),
             '[uplink]', 'key = "%s"' % KEYS[ident].hex()]
    lines += ['transport = "mesh"'] if role == "node" else [
        'transport = "http"', 'url = "http://127.0.0.1:1"']
    lines += ['[mesh]', 'role = "%s"' % role, 'network_key = "%s"' % NET,
              '[[mesh.link]]', 'kind = "udp"', 'listen = "127.0.0.1:%d"' % port,
              'peers = [%s]' % ", ".join('"127.0.0.1:%d"' % p for p in peers),
              '[[bus]]', 'port = "/dev/null"', '[[bus.meter]]', 'address = 1']
    cfg_path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctl")
    net = Net(tmp, "http://127.0.0.1:1")
    net.start("DC-G", "gateway", ["DC-A"], url="http://127.0.0.1:1", control=True)
    net.start("DC-A", "node", ["DC-G"], control=True)
    assert routed(net.agents["DC-A"], "DC-G")
    cfg = tmp / "a.toml"
    toml(cfg, "DC-A", "node", net.ports["DC-A"], [net.ports["DC-G"]], tmp)
    yield net, cfg, tmp
    net.stop()


def test_socket_is_owner_only_next_to_the_archive(live):
    net, cfg, tmp = live
    path = socket_path(str(tmp / "DC-A.db"))
    assert path == str(tmp / "DC-A.db.sock")
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_wum_mesh_json_shapes(live):
    net, cfg, tmp = live
    out = wum("mesh", "neighbours", "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    (n,) = json.loads(out.stdout)
    assert n["id"] == "DC-G" and n["kind"] == "udp" and n["link"] == 0
    assert 0 < n["quality"] <= 1 and n["last_heard_s"] >= 0 and n["dead"] is False
    out = wum("mesh", "routes", "--config", str(cfg), "--json")
    r = json.loads(out.stdout)
    assert (r["gateway"], r["parent"]) == ("DC-G", "DC-G") and r["cost"] > 0
    assert r["routes"][0]["gateway"] == "DC-G" and r["routes"][0]["hops"] == 1
    out = wum("mesh", "stats", "--config", str(cfg), "--json")
    st = json.loads(out.stdout)
    assert st["identity"] == "DC-A" and st["role"] == "node" and "counters" in st
    assert st["links"][0]["kind"] == "udp" and st["uplink"]["in_flight"] == 0
    out = wum("mesh", "ping", "DC-G", "--config", str(cfg), "--json")
    p = json.loads(out.stdout)
    assert out.returncode == 0 and p["ok"] and p["node"] == "DC-G" and p["rtt_ms"] >= 0


def test_wum_mesh_text_and_a_failed_ping(live):
    net, cfg, tmp = live
    out = wum("mesh", "neighbours", "--config", str(cfg))
    assert out.returncode == 0 and "DC-G" in out.stdout and "udp#0" in out.stdout
    out = wum("mesh", "routes", "--config", str(cfg))
    assert "gateway DC-G via parent DC-G" in out.stdout
    out = wum("mesh", "stats", "--config", str(cfg))
    assert out.stdout.startswith("DC-A (address") and "counters:" in out.stdout
    out = wum("mesh", "ping", "DC-NOWHERE", "--config", str(cfg), "--timeout", "1")
    assert out.returncode == 1 and "no route" in out.stdout


def test_wum_status_json_fills_neighbours_and_mesh(live):
    net, cfg, tmp = live
    out = wum("status", "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    (n,) = st["neighbours"]
    assert n["id"] == "DC-G" and n["link"] == "udp" and n["quality"] > 0
    assert n["last_heard"].endswith("Z")
    m = st["mesh"]
    assert m["running"] and m["role"] == "node" and m["parent"] == "DC-G"
    assert m["gateway"] == "DC-G" and m["cost"] > 0 and "frames" in m["queue"]
    assert m["duty"] == []                                  # no LoRa link: no budget


def test_status_without_the_daemon_shows_its_last_snapshot(tmp_path):
    net = Net(tmp_path, "http://127.0.0.1:1")
    cfg = tmp_path / "a.toml"
    try:
        net.start("DC-G", "gateway", ["DC-A"], url="http://127.0.0.1:1")
        net.start("DC-A", "node", ["DC-G"], control=True)
        toml(cfg, "DC-A", "node", net.ports["DC-A"], [net.ports["DC-G"]], tmp_path)
        assert routed(net.agents["DC-A"], "DC-G")
    finally:
        net.stop()                                          # persists the snapshot
    assert not os.path.exists(socket_path(str(tmp_path / "DC-A.db")))
    st = json.loads(wum("status", "--config", str(cfg), "--json").stdout)
    assert st["mesh"]["running"] is False and st["mesh"]["as_of"].endswith("Z")
    assert [n["id"] for n in st["neighbours"]] == ["DC-G"]
    text = wum("status", "--config", str(cfg)).stdout
    assert "mesh: node, gateway DC-G via DC-G" in text and "daemon not running" in text
    out = wum("mesh", "neighbours", "--config", str(cfg))
    assert out.returncode == 1 and "no wum daemon answers" in out.stderr


def test_stale_socket_replaced_live_one_refused_long_path_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "archive.db.sock")
    assert len(path) > 108                                   # beyond sun_path
    stale = socket.socket(socket.AF_UNIX)                    # a killed daemon's socket
    os.chdir(deep)
    try:
        stale.bind("archive.db.sock")
    finally:
        os.chdir(ROOT)
    stale.close()
    srv = ControlServer(path, lambda req: {"ok": True, "echo": req}).start()
    try:
        assert request(path, {"op": "x", "n": 1}) == {"ok": True, "echo": {"op": "x", "n": 1}}
        with pytest.raises(ControlError):
            ControlServer(path, lambda req: {}).start()      # a live daemon holds it
        s = socket.socket(socket.AF_UNIX)
        with _dirfd(deep) as fd:
            s.connect("/proc/self/fd/%d/archive.db.sock" % fd)
        s.sendall(b"not json\n")
        assert json.loads(s.recv(1000)) == {"ok": False, "error": "not a JSON object"}
        s.close()
    finally:
        srv.stop()
    assert not os.path.exists(path)
    with pytest.raises(ControlError):
        request(path, {"op": "stats"}, timeout=1)


class _dirfd:
    def __init__(self, path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def test_unknown_op_and_bad_ping(live):
    net, cfg, tmp = live
    path = socket_path(str(tmp / "DC-A.db"))
    assert request(path, {"op": "reboot"})["ok"] is False
    assert request(path, {"op": "ping", "node": 5})["ok"] is False


def test_control_for_many_clients_at_once(live):
    net, cfg, tmp = live
    path = socket_path(str(tmp / "DC-A.db"))
    got: list[bool] = []
    threads = [threading.Thread(target=lambda: got.append(request(path, {"op": "stats"})["ok"]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [True] * 8
