"""Update packages at the HES: ``hes-lite firmware publish`` (signed only,
or verified against release keys), listing, the ranged download for token
holders, the envelope-authenticated fetch for devices (any body: a typed
refusal, never a 5xx), the ``update`` command announcing a package's facts;
and the device's resumable download over real HTTP, killed -9 halfway."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import command, envelope
from agent.transport import TransportError
from agent.update_fetch import HttpFetcher, RelayFetcher, download, post_fetch
from agent.update_package import UpdateRefused, file_sha256
from hes_lite import auth
from hes_lite.api import create_app
from hes_lite.firmware import fetch_request, publish
from hes_lite.ingest import Ingestor
from hes_lite.store import open_store
from tests import update_rig as rig
from tests.command_agent import AgentSide
from tests.hes_client import AppClient
from tests.test_update_package import small_bundle

KEY = bytes(range(32))
DEVICE = "DC-FW"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          module_db_url: str) -> Iterator[dict]:  # type: ignore[type-arg]
    d = tmp_path_factory.mktemp("fw")
    key = d / "release.key"
    public = rig.release_key(key)
    big = small_bundle(d / "b")
    (big / "firmware" / "blob.mpy").write_bytes(os.urandom(150_000))
    from firmware.build import write_manifest
    (big / "manifest.json").unlink()
    write_manifest(big, {"target": "micropython", "board": "sim", "version": "2.0.0"})
    signed = rig.package(big, d / "p.wup", key)
    store = open_store(module_db_url)
    store.add_key(DEVICE, 0, KEY, 0.0)
    client = AppClient(create_app(store, Ingestor(store)))
    agent = AgentSide(DEVICE, KEY)
    seq, env = agent.batch()
    assert client.put("/v1/batches/%s/%d" % (DEVICE, seq), content=env).status_code == 200
    tokens = {r: auth.create(store, r, r, 0.0) for r in auth.ROLES}
    rec, new = publish(store, signed.read_bytes(), "test", release_keys=[public])
    assert new
    yield {"dir": d, "key": key, "public": public, "signed": signed, "store": store,
           "client": client, "tokens": tokens, "id": rec.id, "db": module_db_url}
    client.close()
    store.close()


def test_publish_refuses_unsigned_malformed_and_unverified(world: dict) -> None:  # type: ignore[type-arg]
    d = world["dir"]
    unsigned = rig.package(small_bundle(d / "u", "3.0.0"), d / "u.wup", None)
    foreign = rig.foreign_sign(world["signed"], d / "f.wup")
    (d / "junk.wup").write_bytes(b"WUMUPD1\n\x00\x00\x00\x05{}")
    for path, extra, want in (
            (unsigned, (), "unsigned: package 3.0.0 carries no release signature"),
            (d / "junk.wup", (), "not an update package"),
            (foreign, ("--release-key", world["public"].hex()), "foreign_key")):
        r = rig.run(rig.BIN / "hes-lite", "firmware", "publish", path, "--db", world["db"],
                    *extra)
        assert r.returncode == 1 and "refused" in r.stderr and want in r.stderr, r.stderr
    r = rig.run(rig.BIN / "hes-lite", "firmware", "publish", unsigned, "--db", world["db"],
                "--allow-unsigned")
    assert r.returncode == 0 and json.loads(r.stdout)["key_id"] is None
    r = rig.run(rig.BIN / "hes-lite", "firmware", "publish", world["signed"], "--db",
                world["db"])
    assert r.returncode == 0 and json.loads(r.stdout)["new"] is False      # idempotent
    audit = [(e.outcome, e.detail.get("reason")) for e in world["store"].audit_log()
             if e.action == "firmware.publish"]
    assert ("refused", "unsigned") in audit and ("refused", "malformed") in audit
    r = rig.run(rig.BIN / "hes-lite", "firmware", "list", "--db", world["db"])
    assert world["id"] in r.stdout and "unsigned" in r.stdout


def test_ranged_download_for_token_holders(world: dict) -> None:  # type: ignore[type-arg]
    c, t, pid = world["client"], world["tokens"], world["id"]
    data = world["signed"].read_bytes()
    listed = {r["id"]: r for r in c.get("/v1/firmware", t["viewer"]).json()}
    assert listed[pid]["size"] == len(data) and listed[pid]["version"] == "2.0.0"
    full = c.get("/v1/firmware/" + pid, t["viewer"])
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    part = c.get("/v1/firmware/" + pid, t["viewer"], headers={"range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == data[100:1124]
    assert part.headers["content-range"] == "bytes 100-1123/%d" % len(data)
    tail = c.get("/v1/firmware/" + pid, t["viewer"], headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    past = c.get("/v1/firmware/" + pid, t["viewer"], headers={"range": "bytes=%d-" % len(data)})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */%d" % len(data)
    assert c.get("/v1/firmware/" + pid).status_code == 401
    assert c.get("/v1/firmware/0000000000000000", t["viewer"]).status_code == 404


def test_device_fetch_is_envelope_authenticated(world: dict) -> None:  # type: ignore[type-arg]
    c, pid, store = world["client"], world["id"], world["store"]
    data = world["signed"].read_bytes()
    r = c.post("/v1/firmware/%s/fetch" % pid, content=fetch_request(DEVICE, KEY, pid, 5000, 4096))
    assert r.status_code == 200 and r.content == data[5000:9096]
    assert r.headers["x-wum-package-size"] == str(len(data))
    end = c.post("/v1/firmware/%s/fetch" % pid, content=fetch_request(
        DEVICE, KEY, pid, len(data) - 3, 4096))
    assert end.content == data[-3:]
    refusals = {
        "bad_tag": fetch_request(DEVICE, bytes(32), pid, 0, 10),        # not the device's key
        "unknown_key": fetch_request("DC-NOBODY", KEY, pid, 0, 10),
        "bad_request": fetch_request(DEVICE, KEY, "0" * 16, 0, 10),     # names another package
        "bad_kind": AgentSide(DEVICE, KEY).poll(),                      # a poll, not a fetch
        "range": fetch_request(DEVICE, KEY, pid, len(data), 10),
    }
    for reason, body in refusals.items():
        r = c.post("/v1/firmware/%s/fetch" % pid, content=body)
        assert r.status_code in (400, 403, 416) and r.json()["error"] == reason, (reason, r.text)
    too_big = c.post("/v1/firmware/%s/fetch" % pid,
                     content=fetch_request(DEVICE, KEY, pid, 0, 65537))
    assert too_big.json()["error"] == "bad_request"
    assert store.rejects().get("fetch_bad_tag", 0) >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_any_fetch_body_gets_a_typed_refusal(world: dict, body: bytes) -> None:  # type: ignore[type-arg]
    r = world["client"].post("/v1/firmware/%s/fetch" % world["id"], content=body)
    assert r.status_code in (400, 403, 413) and isinstance(r.json()["error"], str)


def test_the_update_command_announces_the_package(world: dict) -> None:  # type: ignore[type-arg]
    c, t, pid, store = world["client"], world["tokens"], world["id"], world["store"]
    r = c.post("/v1/commands", t["operator"], json={"op": "update", "concentrator": DEVICE,
                                                    "args": {"package": pid}})
    assert r.status_code == 202, r.text
    rec = store.command(r.json()["id"])
    digest, size = file_sha256(str(world["signed"]))
    want = {"package": pid, "version": "2.0.0", "sha256": digest, "size": size,
            "target": "micropython", "board": "sim"}
    assert rec.args == want
    cmd, _, _ = command.parse_signed(rec.signed)
    assert cmd.op == "update" and cmd.meter == "" and cmd.args == want
    for args, status, reason in (({"package": pid, "version": "9.9.9"}, 422, "bad_args"),
                                 ({"package": "f" * 16}, 404, "unknown_package"),
                                 ({}, 422, "bad_args")):
        r = c.post("/v1/commands", t["operator"], json={"op": "update", "concentrator": DEVICE,
                                                        "args": args})
        assert r.status_code == status and r.json()["error"] == reason, r.text
    assert c.post("/v1/commands", t["viewer"], json={"op": "update", "concentrator": DEVICE,
                                                     "args": {"package": pid}}).status_code == 403


def test_download_resumes_after_kill_9_and_refuses_what_is_not_announced(
        world: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    hes = rig.Hes(tmp_path)
    try:
        s = hes.store()
        s.add_key(DEVICE, 0, KEY, 0.0)
        rec, _ = publish(s, world["signed"].read_bytes(), "test")
        s.close()
        digest, size = rec.sha256, rec.size
        folder = str(tmp_path / "dl")
        pid = os.fork()
        if pid == 0:                        # a device that gets killed halfway
            try:
                download(HttpFetcher(hes.url, DEVICE, KEY, folder + "-boot"), rec.id, size,
                         digest, folder, 1024)
            finally:
                os._exit(0)
        part = os.path.join(folder, digest + ".part")
        deadline = time.monotonic() + 60
        while not os.path.exists(part) or os.path.getsize(part) < size // 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        have = os.path.getsize(part)
        assert 0 < have < size

        class Recording(HttpFetcher):
            offsets: list[int] = []

            def fetch(self, package_id: str, offset: int, length: int) -> bytes:
                self.offsets.append(offset)
                if len(self.offsets) in (3, 4):      # the link drops twice: retried in place
                    raise TransportError("link down", "unreachable")
                return super().fetch(package_id, offset, length)

        f = Recording(hes.url, DEVICE, KEY, folder + "-boot")
        path = download(f, rec.id, size, digest, folder, 16384)
        assert f.offsets[0] == have and f.offsets[3] == f.offsets[2]      # resumed, retried
        assert file_sha256(path) == (digest, size) and not os.path.exists(part)
        # what arrives must be what was announced
        with pytest.raises(UpdateRefused, match="corrupt_download"):
            download(HttpFetcher(hes.url, DEVICE, KEY, folder + "-boot"), rec.id, size,
                     "0" * 64, folder, 65536)
        with pytest.raises(TransportError) as e:     # a device the HES does not know
            download(HttpFetcher(hes.url, "DC-STRANGER", KEY, folder + "-boot2"), rec.id,
                     size, digest, str(tmp_path / "dl2"), 65536)
        assert e.value.reason == "rejected"
    finally:
        hes.stop()


def test_a_node_without_uplink_fetches_through_a_relay_that_holds_no_key(
        world: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """The mesh's part reduced to what it is: opaque bytes up to a gateway,
    the gateway's own HTTP call, opaque bytes down. The relay below is given
    the HES's URL and nothing else; a dropped reply is retried; a relay that
    alters the bytes is caught by the digest."""
    hes = rig.Hes(tmp_path)
    try:
        s = hes.store()
        s.add_key(DEVICE, 0, KEY, 0.0)
        rec, _ = publish(s, world["signed"].read_bytes(), "test")
        s.close()
        seen: list[tuple[str, int]] = []

        def gateway(package_id: str, sealed: bytes, length: int) -> bytes:
            seen.append((package_id, len(sealed)))
            if len(seen) == 2:
                raise TransportError("reply lost on the way down", "unreachable")
            return post_fetch(hes.url, package_id, sealed, length)

        node = RelayFetcher(DEVICE, KEY, str(tmp_path / "fetch_boot"), gateway)
        path = download(node, rec.id, rec.size, rec.sha256, str(tmp_path / "dl"), 8192)
        assert file_sha256(path) == (rec.sha256, rec.size)
        assert len(seen) == -(-rec.size // 8192) + 1 and all(p == rec.id for p, _ in seen)

        def tampering(package_id: str, sealed: bytes, length: int) -> bytes:
            data = bytearray(post_fetch(hes.url, package_id, sealed, length))
            data[0] ^= 1
            return bytes(data)
        with pytest.raises(UpdateRefused, match="corrupt_download"):
            download(RelayFetcher(DEVICE, KEY, str(tmp_path / "fetch_boot"), tampering),
                     rec.id, rec.size, rec.sha256, str(tmp_path / "dl2"), 65536)
    finally:
        hes.stop()


def test_fetch_requests_never_touch_the_batch_replay_window() -> None:
    """Fetches use their own key purpose and nonces: a device fetching
    hundreds of chunks between two batches cannot push a batch out of the
    HES's replay window."""
    s = envelope.Sealer(DEVICE, KEY, envelope.MemoryBootStore(), purpose=envelope.PURPOSE_FETCH)
    sealed = fetch_request(DEVICE, KEY, "ab" * 8, 0, 10, s)
    batch_ring = envelope.Keyring()
    batch_ring.add(DEVICE, KEY)
    with pytest.raises(envelope.EnvelopeError) as e:
        envelope.open_envelope(sealed, batch_ring)
    assert e.value.fields["reason"] == "bad_tag"
