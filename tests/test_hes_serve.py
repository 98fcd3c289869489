"""``hes-lite serve`` over real HTTP: uvicorn in a subprocess on a free port,
spoken to with httpx — uplink acks, duplicates, rejections, the read API,
streamed exports and the OpenAPI document (the API with a viewer token)."""

import csv
import io
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile

import httpx
import pytest

from hes_lite import auth, wire
from hes_lite.store import open_store
from tests.mqtt_broker import free_port

KEY = bytes.fromhex("5b2e9d0c4a7f1e3b6d8c0f2a4e6b8d1c" * 2)
T0 = 1780272000


def batch(seq, device="conc-a", key=KEY, counter=None):
    rows = {f"{device}-m{i}": [(T0 + 3600 * seq, {"1.0.1.8.0.255": 100 * seq + i,
                                                  "1.0.14.7.0.255": 49.98})]
            for i in range(4)}
    events = {f"{device}-m1": [(T0 + 3600 * seq + 60, 1, "power_down")]}
    return wire.seal_batch(key, device, 1, seq if counter is None else counter, seq, rows,
                           events, {"1.0.1.8.0.255": "Wh", "1.0.14.7.0.255": "Hz"})


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_db_url):
    db = tmp_path_factory.mktemp("serve") / "hes.db"
    s = open_store(module_db_url)
    s.add_key("conc-a", 1, KEY, 0.0)
    token = auth.create(s, "reader", "viewer", 0.0)
    s.close()
    port = free_port()
    log = open(db.with_suffix(".log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db",
                             module_db_url, "--http", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(base + "/v1/health", timeout=1)
            break
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("server did not start: " + log.read()) from None
            time.sleep(0.1)
    with httpx.Client(base_url=base, timeout=10,
                      headers={"authorization": "Bearer " + token}) as client:
        yield client, db, log
    proc.terminate()
    proc.wait(10)
    log.close()


def put(client, env, seq, device="conc-a"):
    return client.put(f"/v1/batches/{device}/{seq}", content=env,
                      headers={"content-type": "application/octet-stream"})


def test_uplink_ack_and_duplicate(server):
    client, db, _ = server
    for seq in (1, 2, 3):
        r = put(client, batch(seq), seq)
        assert r.status_code == 200, r.text
        body = r.json()
        assert {k: body[k] for k in ("device", "seq", "status")} == {
            "device": "conc-a", "seq": seq, "status": "accepted"}
        assert abs(body["server_time"] - time.time()) < 60
    r = put(client, batch(2), 2)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    conc = client.get("/v1/concentrators").json()
    assert conc[0]["device"] == "conc-a" and conc[0]["batches"] == 3
    assert conc[0]["backlog"] == 0 and conc[0]["meters"] == 4


def test_uplink_rejections(server):
    client, _, log = server
    env = bytearray(batch(10))
    env[len(env) // 2] ^= 1
    cases = [(bytes(env), 10, "conc-a", 400, "bad_tag"),
             (batch(10)[:20], 10, "conc-a", 400, "truncated"),
             (batch(10), 11, "conc-a", 400, "seq_mismatch"),
             (batch(10), 10, "conc-b", 400, "device_mismatch"),
             (batch(10, device="conc-x"), 10, "conc-x", 403, "unknown_key"),
             (b"\x00" * (5 << 20), 10, "conc-a", 413, "bad_length"),
             (batch(12, counter=1), 12, "conc-a", 409, "replay")]
    for env_, seq, dev, status, reason in cases:
        r = put(client, env_, seq, dev)
        assert (r.status_code, r.json()) == (status, {"error": reason}), reason
    health = client.get("/v1/health").json()
    for _, _, _, _, reason in cases:
        assert health["rejects"].get(reason, 0) >= 1, reason
    log.flush()
    log.seek(0)
    assert KEY.hex() not in log.read()


def test_read_api(server):
    client, _, _ = server
    for seq in (1, 2, 3):  # accepted here, or duplicates of what earlier tests sent
        assert put(client, batch(seq), seq).status_code == 200
    meters = client.get("/v1/meters").json()
    assert [m["meter"] for m in meters] == [f"conc-a-m{i}" for i in range(4)]
    page = client.get("/v1/meters", params={"limit": 2, "after": "conc-a-m0"}).json()
    assert [m["meter"] for m in page] == ["conc-a-m1", "conc-a-m2"]
    assert page[0]["concentrator"] == "conc-a" and page[0]["last_reading"] == T0 + 3 * 3600
    r = client.get("/v1/meters/conc-a-m1/readings",
                   params={"from": "2026-06-01T01:00:00Z", "to": str(T0 + 2 * 3600)})
    got = r.json()["readings"]
    assert {(x["obis"], x["ts"], x["value"], x["unit"]) for x in got} == {
        ("1.0.1.8.0.255", T0 + 3600, 101, "Wh"), ("1.0.14.7.0.255", T0 + 3600, 49.98, "Hz"),
        ("1.0.1.8.0.255", T0 + 7200, 201, "Wh"), ("1.0.14.7.0.255", T0 + 7200, 49.98, "Hz")}
    assert client.get("/v1/meters/conc-a-m1/readings", params={"from": "soon"}).status_code == 400
    ev = client.get("/v1/events", params={"meter": "conc-a-m1"}).json()
    assert ev[0] == {"meter": "conc-a-m1", "ts": T0 + 3660, "code": 1, "name": "power_down"}
    h = client.get("/v1/health").json()
    assert h["status"] == "ok" and h["backlog"] == 0
    assert h["readings"] == 3 * 4 * 2 and h["readings_rows"] == 3 * 4 and h["events"] == 3
    assert h["concentrators"][0]["device"] == "conc-a"
    assert h["concentrators"][0]["last_seq"] >= 3
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/batches/{device_id}/{seq}" in spec["paths"]


def test_exports_streamed(server):
    client, _, _ = server
    with client.stream("GET", "/v1/export", params={"format": "jsonl",
                                                    "meter": "conc-a-m0"}) as r:
        assert r.status_code == 200
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert lines[0] == {"meter": "conc-a-m0", "ts": "2026-06-01T01:00:00Z",
                        "values": {"1.0.1.8.0.255": 100, "1.0.14.7.0.255": 49.98}}
    assert len(lines) == 3
    n = len(list(csv.reader(io.StringIO(client.get("/v1/export?format=csv").text))))
    assert n == 1 + 4 * 3
    root = ET.fromstring(client.get("/v1/export?format=xml").content)
    assert len(root.findall("reading")) == 12
    doc = client.get("/v1/export?format=json&from=2026-06-01T03:00:00Z").json()
    assert len(doc["readings"]) == 4 and doc["units"]["1.0.14.7.0.255"] == "Hz"
    txt = client.get("/v1/export?format=txt").text.splitlines()
    assert txt[0].split("\t")[:2] == ["meter", "ts"] and len(txt) == 13
    x = client.get("/v1/export?format=xlsx")
    assert x.status_code == 200 and zipfile.ZipFile(io.BytesIO(x.content)).testzip() is None
    assert client.get("/v1/export?format=pdf").status_code == 400
