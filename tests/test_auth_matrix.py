"""Every /v1 route called without a token, with each role and with a revoked
token: only what the role allows answers 2xx, every refusal is audited, the
OpenAPI document says the same, and no response anywhere carries key
material (root keys, derived keys, the command private key) or a token."""

import base64

import pytest

from agent import envelope
from hes_lite import auth
from hes_lite.api import create_app
from hes_lite.api_schema import ENVELOPE, OPEN, OPENAPI, ROUTES
from hes_lite.ingest import Ingestor
from hes_lite.store import open_store
from tests.command_agent import AgentSide
from tests.hes_client import AppClient

KEY = bytes.fromhex("7a6b5c4d3e2f10011223344556677889" * 2)
CALLERS = ("none", "revoked") + auth.ROLES


@pytest.fixture(scope="module")
def world(module_db_url, tmp_path_factory):
    store = open_store(module_db_url)
    store.add_key("DC-M", 0, KEY, 0.0)
    app = create_app(store, Ingestor(store))
    client = AppClient(app)
    agent = AgentSide("DC-M", KEY)
    seq, env = agent.batch()
    assert client.put(f"/v1/batches/DC-M/{seq}", content=env).status_code == 200
    tokens = {role: auth.create(store, role, role, 0.0) for role in auth.ROLES}
    tokens["revoked"] = auth.create(store, "gone", "admin", 0.0)
    store.revoke_token("gone", 1.0)
    r = client.post("/v1/commands", tokens["operator"],
                    json={"meter": "DC-M-m1", "op": "disconnect", "args": {}})
    assert r.status_code == 202
    world.package = tiny_package(tmp_path_factory.mktemp("pkg"), store)
    yield client, store, tokens, agent, r.json()["id"]
    client.close()
    store.close()


def tiny_package(folder, store):
    """A published (unsigned) package, so the firmware routes have one to serve."""
    from firmware.build import write_manifest
    from firmware.package_tools import pack
    from hes_lite.firmware import publish
    (folder / "b").mkdir()
    (folder / "b" / "main.py").write_text("print('hello')\n")
    write_manifest(folder / "b", {"target": "micropython", "board": "sim", "version": "9.0.0"})
    pack(folder / "b", folder / "p.wup")
    rec, _ = publish(store, (folder / "p.wup").read_bytes(), "test", allow_unsigned=True)
    return rec.id


def call(client, store, method, path, token, command_id):
    kw = {}
    if path == "/v1/devices":
        kw["json"] = {"device": "DEV-%d" % len(store.keys()), "root_key": "ab" * 32}
    path = path.replace("{package_id}", getattr(world, "package", "-"))
    if "{name}" in path:
        victim = "victim-%d" % len(store.tokens())
        auth.create(store, victim, "viewer", 0.0)
        path = path.replace("{name}", victim)
    path = path.replace("{meter_id}", "DC-M-m1").replace("{command_id}", command_id)
    if method == "POST" and path == "/v1/commands":
        kw["json"] = {"meter": "DC-M-m1", "op": "time", "args": {}}
    return client.request(method, path, token, **kw)


# What the issue asks, written out here and not read from the code under test:
# viewer reads and exports, operator adds commands, admin adds tokens, keys and
# the audit log; the uplink is authenticated by envelopes; health is open.
EXPECTED = {
    ("PUT", "/v1/batches/{device_id}/{seq}"): ENVELOPE,
    ("POST", "/v1/poll/{device_id}"): ENVELOPE,
    ("PUT", "/v1/results/{device_id}/{counter}"): ENVELOPE,
    ("GET", "/v1/health"): OPEN,
    ("GET", "/v1/concentrators"): "viewer",
    ("GET", "/v1/meters"): "viewer",
    ("GET", "/v1/meters/{meter_id}/readings"): "viewer",
    ("GET", "/v1/events"): "viewer",
    ("GET", "/v1/export"): "viewer",
    ("GET", "/v1/commands"): "viewer",
    ("GET", "/v1/commands/{command_id}"): "viewer",
    ("POST", "/v1/commands"): "operator",
    ("GET", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{name}"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("GET", "/v1/audit"): "admin",
    # issue 12: provisioning registers a device's key (admin, audited); the
    # command verify key is public; packages are read by viewers and fetched
    # by devices through envelopes
    ("POST", "/v1/devices"): "admin",
    ("GET", "/v1/command-key"): "viewer",
    ("GET", "/v1/firmware"): "viewer",
    ("GET", "/v1/firmware/{package_id}"): "viewer",
    ("POST", "/v1/firmware/{package_id}/fetch"): ENVELOPE,
}
GUARDED = sorted((m, p, need) for (m, p), need in EXPECTED.items() if need != ENVELOPE)


def test_route_table_is_the_expected_one():
    assert ROUTES == EXPECTED


@pytest.mark.parametrize("method, path, need", GUARDED)
def test_route_role_matrix(world, method, path, need):
    client, store, tokens, _, command_id = world
    for caller in CALLERS:
        before = len([e for e in store.audit_log() if e.action == "auth"])
        r = call(client, store, method, path, tokens.get(caller), command_id)
        if caller == "none":
            want = 200 if need == OPEN else 401
        elif caller == "revoked":
            want = 401
        else:
            want = 200 if need == OPEN or auth.allows(caller, need) else 403
        got = r.status_code
        assert (got // 100 == 2) == (want == 200) and (want == 200 or got == want), (
            method, path, caller, got, r.text)
        if want == 401:
            assert r.headers["www-authenticate"].startswith('Bearer realm="hes-lite"')
        audited = [e for e in store.audit_log() if e.action == "auth"][before:]
        if want != 200:
            assert len(audited) == 1 and audited[0].target.startswith("/v1/"), caller
            assert audited[0].detail["method"] == method and audited[0].remote == "10.9.8.7"
            if caller in ("revoked",) + auth.ROLES:
                assert audited[0].actor == "token:" + ("gone" if caller == "revoked"
                                                       else caller)
        else:
            assert audited == []


def test_openapi_declares_what_is_enforced(world):
    client = world[0]
    spec = client.get("/openapi.json").json()
    assert spec == OPENAPI
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"]}
    declared = {(m.upper(), p): op["x-access"] for p, ops in spec["paths"].items()
                for m, op in ops.items()}
    assert declared == EXPECTED
    for (m, p), access in ROUTES.items():
        op = spec["paths"][p][m.lower()]
        if access == ENVELOPE:
            assert op["security"] == []
        elif access != OPEN:
            assert op["security"] == [{"bearer": []}] and {"401", "403"} <= set(op["responses"])
    served = {(m, r.path.replace(":int", "")) for r in client.client._transport.app.routes
              for m in (r.methods or ()) if m != "HEAD" and r.path != "/openapi.json"}
    assert served == set(EXPECTED)


def test_no_key_material_in_any_response(world):
    client, store, tokens, agent, command_id = world
    bodies = [call(client, store, m, p, tokens[role], command_id).content
              for m, p, _ in GUARDED for role in auth.ROLES]
    # the downlink and uplink routes too: an ack with a command, a poll, a result
    seq, env = agent.batch()
    bodies.append(client.put(f"/v1/batches/DC-M/{seq}", content=env).content)
    bodies.append(client.post("/v1/poll/DC-M", content=agent.poll()).content)
    agent.verify_key = store.command_key().public
    cmd = agent.open(client.post("/v1/poll/DC-M", content=agent.poll()).json()["commands"][0])
    bodies.append(client.put(f"/v1/results/DC-M/{cmd.counter}",
                             content=agent.result(cmd)).content)
    for path in ("/v1/keys", "/v1/tokens", "/v1/audit", "/v1/health", "/v1/commands",
                 "/v1/concentrators", "/v1/meters", "/v1/export?format=json", "/openapi.json"):
        bodies.append(client.get(path, tokens["admin"]).content)
    secrets = [KEY, store.command_key().private,
               envelope.derive_key(KEY, "DC-M", "batch", 0),
               envelope.derive_key(KEY, "DC-M", "downlink", 0)]
    needles = []
    for s in secrets:
        needles += [s, s.hex().encode(), s.hex().upper().encode(), base64.b64encode(s),
                    base64.urlsafe_b64encode(s).rstrip(b"=")]
    needles += [t.encode() for t in tokens.values()]
    assert len(bodies) > 40
    for body in bodies:
        for n in needles:
            assert n not in body
