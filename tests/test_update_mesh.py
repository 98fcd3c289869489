"""An update package fetched by a node without its own uplink, chunked over
the mesh through a gateway: the agents' real mesh (``MeshAgent``s over UDP
on loopback with 10 % datagram loss, as tests/test_agent_mesh.py) and a real
``hes-lite serve`` behind the gateway. The node's sealed fetch requests go
up as FETCH messages, the gateway forwards them to the HES (holding none of
the node's keys) and sends CHUNKs down; the node resumes, checks the digest;
a package the HES does not have is refused through the same path."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import mesh_wire as w
from agent.config import parse
from agent.transport import TransportError
from agent.update import fetcher_for
from agent.update_fetch import RelayFetcher, download
from agent.update_package import file_sha256
from hes_lite.firmware import publish
from hes_lite.store import open_store
from tests import update_rig as rig
from tests.test_agent_mesh import IDS, KEYS, Net, hes, routed  # noqa: F401 (fixture)
from tests.test_update_package import small_bundle


@pytest.fixture
def chain(tmp_path: Path, hes) -> Iterator[Net]:  # type: ignore[no-untyped-def]  # noqa: F811
    net = Net(tmp_path, hes.url)
    net.start("DC-G", "gateway", ["DC-B"], url=hes.url)
    net.start("DC-B", "node", ["DC-A", "DC-G"])
    net.start("DC-A", "node", ["DC-B"])
    assert routed(net.agents["DC-A"], "DC-G"), net.agents["DC-A"].snapshot()
    yield net
    net.stop()


def test_a_node_fetches_a_package_two_hops_through_a_gateway(
        chain: Net, hes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    b = small_bundle(tmp_path / "b", "3.0.0")
    (b / "firmware" / "loop.mpy").write_bytes(os.urandom(20000))
    from firmware.build import write_manifest
    (b / "manifest.json").unlink()
    write_manifest(b, {"target": "micropython", "board": "sim", "version": "3.0.0"})
    pkg = rig.package(b, tmp_path / "p.wup", rig_key(tmp_path))
    store = open_store(hes.db)
    rec, _ = publish(store, pkg.read_bytes(), "test")
    store.close()
    node = chain.agents["DC-A"]
    lost = []

    def relay(package_id: str, sealed: bytes, n: int) -> bytes:
        if len(lost) < 1:               # the first answer never comes: retried
            lost.append(1)
            raise TransportError("no answer", "timeout")
        return node.transport.fetch(package_id, sealed, n, 30)

    fetcher = RelayFetcher("DC-A", KEYS["DC-A"], str(tmp_path / "fetch_boot"), relay)
    path = download(fetcher, rec.id, rec.size, rec.sha256, str(tmp_path / "dl"), 4096)
    assert file_sha256(path) == (rec.sha256, rec.size)
    gw = chain.agents["DC-G"].gateway.stats()
    assert gw["fetches"] == -(-rec.size // 4096) and node.transport.stats()["fetches"] == \
        gw["fetches"]
    # a package the HES does not have: refused, through the mesh
    with pytest.raises(TransportError) as e:
        node.transport.fetch("0" * 16, fetcher.request("0" * 16, 0, 10), 10, 30)
    assert e.value.reason == "rejected" and e.value.hes_reason == "unknown_package"


def rig_key(tmp_path: Path) -> Path:
    key = tmp_path / "release.key"
    rig.release_key(key)
    return key


def test_the_agent_fetches_through_its_uplink_when_it_has_no_update_url(
        tmp_path: Path) -> None:
    base = {"concentrator": {"id": "DC-A", "archive": str(tmp_path / "a.db")},
            "bus": [{"port": "/dev/null", "meter": [{"address": "1"}]}]}
    node = parse(dict(base, uplink={"transport": "mesh", "key": "ab" * 32},
                      mesh={"role": "node", "network_key": "5a" * 32, "link": [
                          {"kind": "udp", "listen": "127.0.0.1:0"}]}))
    assert node.update is not None and node.update.url == ""
    assert isinstance(fetcher_for(node, object()), RelayFetcher)
    http = parse(dict(base, uplink={"transport": "http", "url": "http://hes:8080",
                                    "key": "ab" * 32}))
    assert fetcher_for(http).__class__.__name__ == "HttpFetcher"


@given(pid=st.binary(min_size=8, max_size=8), sealed=st.binary(min_size=1, max_size=64),
       n=st.integers(0, 2 ** 32 - 1), data=st.binary(min_size=1, max_size=64))
def test_fetch_and_chunk_messages_round_trip(pid: bytes, sealed: bytes, n: int,
                                             data: bytes) -> None:
    up = w.parse(w.request(w.FETCH, n, w.fetch_body(pid.hex(), sealed)))
    assert up.kind == w.FETCH and up.seq == n and w.split_fetch(up.body) == (pid.hex(), sealed)
    down = w.parse(w.chunk(n, data))
    assert down.kind == w.CHUNK and down.key == (w.FETCH, n) and down.body == data
    refused = w.parse(w.refused(w.FETCH, n, "unknown_package"))
    assert refused.key == (w.FETCH, n) and refused.reason == "unknown_package"
    assert json.dumps(w.NAMES[w.FETCH]) == '"fetch"'
