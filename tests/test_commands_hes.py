"""Commands at the HES, through the real app and store, with the agent's side
played by the real formats (tests/command_agent.py): the life cycle over
HTTP (batch ack, idle poll, results), counters, fresh seals per delivery,
argument checks, expiry, refusals — each counted or audited."""

import json

import pytest

from agent import command, envelope
from hes_lite import auth
from hes_lite.api import create_app
from hes_lite.audit import Auditor
from hes_lite.commands import EXPIRY_GRACE, CommandService
from hes_lite.ingest import Ingestor
from hes_lite.signing import CommandSigner
from hes_lite.store import open_store
from tests.command_agent import DISCONNECTED, TARIFF, TARIFF_SIGNED, AgentSide
from tests.hes_client import AppClient

KEY_A = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0" * 2)
KEY_B = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
OBJECT_KEYS = {"id", "meter", "concentrator", "op", "args", "state", "reason", "result",
               "created", "updated"}


class Clock:
    def __init__(self, t=1_790_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def hes(db_url):
    clock = Clock()
    store = open_store(db_url)
    store.add_key("DC-A", 0, KEY_A, 0.0)
    store.add_key("DC-B", 0, KEY_B, 0.0)
    auditor = Auditor(store, clock=clock)
    commands = CommandService(store, CommandSigner(store, auditor, clock=clock), auditor, clock)
    client = AppClient(create_app(store, Ingestor(store, clock), clock, auditor, commands))
    ops = auth.create(store, "ops", "operator", 0.0)
    agents = {}
    for dev, key in (("DC-A", KEY_A), ("DC-B", KEY_B)):
        a = agents[dev] = AgentSide(dev, key)
        seq, env = a.batch()          # the HES learns the meters DC-x-m1
        assert client.put(f"/v1/batches/{dev}/{seq}", content=env).status_code == 200
    for a in agents.values():
        a.verify_key = commands.signer.public
    yield client, store, commands, agents, ops, clock
    client.close()
    store.close()


def queue(client, ops, meter="DC-A-m1", op="disconnect", args=None, **extra):
    r = client.post("/v1/commands", ops, json={"meter": meter, "op": op, "args": args or {},
                                               **extra})
    assert r.status_code == 202, r.text
    return r.json()


def ack_commands(client, agent):
    seq, env = agent.batch()
    r = client.put(f"/v1/batches/{agent.device}/{seq}", content=env)
    assert r.status_code == 200, r.text
    return r.json()["commands"]


def test_disconnect_life_cycle_over_http(hes):
    client, store, commands, agents, ops, clock = hes
    a = agents["DC-A"]
    obj = queue(client, ops)
    assert set(obj) == OBJECT_KEYS
    assert (obj["meter"], obj["concentrator"], obj["op"], obj["args"], obj["state"],
            obj["reason"], obj["result"]) == ("DC-A-m1", "DC-A", "disconnect", {}, "queued",
                                              None, None)
    assert obj["created"] == obj["updated"] == "2026-09-21T14:13:20Z"
    clock.t += 5
    sealed = ack_commands(client, a)
    assert len(sealed) == 1
    cmd = a.open(sealed[0])                 # opens under the downlink key, verifies
    assert (cmd.id, cmd.op, cmd.concentrator, cmd.meter, cmd.counter) == (
        obj["id"], "disconnect", "DC-A", "DC-A-m1", 1)
    assert cmd.expires - cmd.issued == 3600 and cmd.key_id == commands.signer.key_id
    got = client.get("/v1/commands/" + obj["id"], ops).json()
    assert got["state"] == "delivered" and got["updated"] == "2026-09-21T14:13:25Z"
    clock.t += 5
    r = client.put(f"/v1/results/DC-A/{cmd.counter}", content=a.result(cmd, result=DISCONNECTED))
    assert r.status_code == 200 and r.json() == {"device": "DC-A", "counter": 1,
                                                 "status": "accepted"}
    done = client.get("/v1/commands/" + obj["id"], ops).json()
    assert (done["state"], done["reason"], done["result"]) == ("executed", None, DISCONNECTED)
    # the same result again (a retransmission, or resealed): acknowledged, nothing changes
    clock.t += 5
    for env in (a.result(cmd, result=DISCONNECTED),
                a.result(cmd, state="failed", reason="meter_error: x")):
        r = client.put(f"/v1/results/DC-A/{cmd.counter}", content=env)
        assert r.json()["status"] == "duplicate"
    assert client.get("/v1/commands/" + obj["id"], ops).json() == done
    assert ack_commands(client, a) == []      # answered: no longer delivered
    assert [c["id"] for c in client.get("/v1/commands?meter=DC-A-m1", ops).json()] == [obj["id"]]
    log = [(e.actor, e.action, e.outcome) for e in store.audit_log()
           if e.action.startswith("command.")]
    assert log == [("token:ops", "command.queue", "queued"),
                   ("device:DC-A", "command.result", "executed"),
                   ("device:DC-A", "command.result", "duplicate"),
                   ("device:DC-A", "command.result", "duplicate")]


def test_poll_gives_oldest_first_sixteen_at_most(hes):
    client, store, commands, agents, ops, clock = hes
    a = agents["DC-A"]
    ids = [queue(client, ops, op="limit", args={"threshold_normal": 1000 + i})["id"]
           for i in range(18)]
    r = client.post("/v1/poll/DC-A", content=a.poll(b'{"ts": 1790000000}'))
    assert r.status_code == 200 and set(r.json()) == {"device", "commands", "server_time"}
    cmds = [a.open(h) for h in r.json()["commands"]]
    assert [c.id for c in cmds] == ids[:16] and [c.counter for c in cmds] == list(range(1, 17))
    assert [c.args["threshold_normal"] for c in cmds] == list(range(1000, 1016))
    for c in cmds:
        assert client.put(f"/v1/results/DC-A/{c.counter}", content=a.result(c)).status_code == 200
    rest = [a.open(h) for h in client.post("/v1/poll/DC-A", content=a.poll()).json()["commands"]]
    assert [c.id for c in rest] == ids[16:]
    # DC-B has nothing; its poll is answered empty
    b = agents["DC-B"]
    assert client.post("/v1/poll/DC-B", content=b.poll()).json()["commands"] == []


def test_every_delivery_is_a_fresh_envelope(hes, tmp_path):
    client, store, commands, agents, ops, _ = hes
    a = agents["DC-A"]
    obj = queue(client, ops, op="time")
    first = ack_commands(client, a)[0]
    again = client.post("/v1/poll/DC-A", content=a.poll()).json()["commands"][0]
    h1, h2 = envelope.peek(bytes.fromhex(first)), envelope.peek(bytes.fromhex(again))
    assert first != again and (h1.boot, h1.counter) != (h2.boot, h2.counter)
    c1, c2 = a.open(first), a.open(again)     # one replay window accepts both
    assert c1.to_body() == c2.to_body() and c1.id == obj["id"]
    with pytest.raises(envelope.EnvelopeError) as e:
        a.open(first)                         # the very same envelope twice is a replay
    assert e.value.fields["reason"] == "replay"
    # nonces are reserved durably: a restarted HES never reuses one
    before = store.reserve_nonces("DC-A", 1)
    reopened = open_store(store.url)
    after = reopened.reserve_nonces("DC-A", 3)
    assert after == (before[0], before[1] + 1)
    reopened.close()


def test_counters_per_concentrator_and_meter_resolution(hes):
    client, store, commands, agents, ops, _ = hes
    got = [(queue(client, ops, meter=m)["concentrator"]) for m in
           ("DC-A-m1", "DC-B-m1", "DC-A-m1", "DC-B-m1", "DC-B-m1")]
    assert got == ["DC-A", "DC-B", "DC-A", "DC-B", "DC-B"]
    assert [r.counter for r in reversed(store.commands(device="DC-A"))] == [1, 2]
    assert [r.counter for r in reversed(store.commands(device="DC-B"))] == [1, 2, 3]
    # the meter moves to DC-B's bus: its next command goes to DC-B
    b = agents["DC-B"]
    seq, env = b.batch({"DC-A-m1": [(1790000000, {"1.0.1.8.0.255": 1})]})
    assert client.put(f"/v1/batches/DC-B/{seq}", content=env).status_code == 200
    assert queue(client, ops)["concentrator"] == "DC-B"
    assert [b.open(h).counter for h in ack_commands(client, b)] == [1, 2, 3, 4]


@pytest.mark.parametrize("body, status, reason", [
    ({"meter": "DC-A-m1", "op": "explode", "args": {}}, 422, "unknown_op"),
    ({"meter": "DC-A-m1", "args": {}}, 422, "unknown_op"),
    ({"meter": "nobody", "op": "disconnect"}, 404, "unknown_meter"),
    ({"op": "disconnect"}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "disconnect", "args": {"now": True}}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "limit", "args": {}}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "limit", "args": {"threshold_normal": 1.5}}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "limit", "args": {"threshold_normal": -1}}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "read", "args": {"registers": ["1.0.1.8.0"]}}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "read", "args": {"profile": {"from": 9, "to": 8}}}, 422,
     "bad_args"),
    ({"meter": "DC-A-m1", "op": "tariff", "args": dict(TARIFF, weeks=[
        {"name": "w", "days": [1, 1, 1, 1, 1, 2, 3]}])}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "tariff", "args": dict(TARIFF, name="x" * 17)}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "tariff", "args": dict(TARIFF, days=[
        {"id": 1, "actions": [{"start": "08:00", "tariff": 1}, {"start": "07:00", "tariff": 2}]},
        {"id": 2, "actions": [{"start": "00:00", "tariff": 2}]}])}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "update", "args": {}}, 422, "bad_args"),      # names no package
    ({"concentrator": "DC-A", "op": "update", "args": {"package": "0" * 16}}, 404,
     "unknown_package"),
    ({"op": "config", "concentrator": "DC-A", "args": {"retention": {"days": 90}}}, 422,
     "bad_args"),
    ({"meter": "DC-A-m1", "op": "tariff", "args": dict(TARIFF, seasons=[
        {"name": "s", "start": "13-01", "week": "w"}])}, 422, "bad_args"),
    ({"op": "config", "concentrator": "DC-A", "args": {"schedule": {"period": "1h"}}}, 422,
     "bad_args"),
    ({"op": "config", "concentrator": "DC-Z", "args": {"retention": {"days": 30}}}, 404,
     "unknown_concentrator"),
    ({"meter": "DC-A-m1", "op": "time", "expires_in": 0}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "time", "expires_in": 3601}, 422, "bad_args"),
    ({"meter": "DC-A-m1", "op": "time", "priority": 1}, 422, "bad_args"),
    ("not json", 400, "bad_json"),
])
def test_bad_requests_refused_and_audited(hes, body, status, reason):
    client, store, _, _, ops, _ = hes
    kw = {"content": body} if isinstance(body, str) else {"json": body}
    r = client.post("/v1/commands", ops, **kw)
    assert (r.status_code, r.json()["error"]) == (status, reason), r.text
    assert store.commands() == []
    if status != 400 and "priority" not in body:
        (e,) = [e for e in store.audit_log() if e.action == "command.queue"]
        assert (e.actor, e.outcome, e.detail["reason"]) == ("token:ops", "refused", reason)


def test_every_op_accepted_with_good_args(hes):
    client, store, _, agents, ops, _ = hes
    good = [("disconnect", {}), ("reconnect", {}), ("time", {}), ("read", {}),
            ("read", {"registers": ["1.0.1.8.0.255"], "profile": {"from": 1, "to": 2}}),
            ("tariff", TARIFF), ("limit", {"threshold_normal": 5000,
                                           "min_over_threshold_duration": 60})]
    for op, args in good:
        queue(client, ops, op=op, args=args)
    r = client.post("/v1/commands", ops, json={"op": "config", "concentrator": "DC-A",
                                               "args": {"schedule": {"period": 1800},
                                                        "retention": {"days": 35}}})
    assert r.status_code == 202 and r.json()["meter"] is None
    a = agents["DC-A"]
    got = [a.open(h) for h in ack_commands(client, a)]
    signed = [(op, TARIFF_SIGNED if op == "tariff" else args) for op, args in good]
    assert [(c.op, c.args) for c in got] == signed + [
        ("config", {"retention": {"days": 35}, "schedule": {"period": 1800}})]
    assert got[-1].meter == ""


def test_expiry_and_a_late_result(hes):
    client, store, commands, agents, ops, clock = hes
    a = agents["DC-A"]
    obj = queue(client, ops, expires_in=60)
    cmd = a.open(ack_commands(client, a)[0])
    assert cmd.expires == cmd.issued + 60
    clock.t += 61
    assert ack_commands(client, a) == []         # past its expiry: no longer sent
    assert commands.expire() == []               # but a result may still be on its way
    clock.t += EXPIRY_GRACE
    (gone,) = commands.expire()
    assert gone.id == obj["id"]
    got = client.get("/v1/commands/" + obj["id"], ops).json()
    assert (got["state"], got["reason"]) == ("expired", "expired")
    assert [(e.actor, e.outcome) for e in store.audit_log() if e.action == "command.expire"] \
        == [("hes", "expired")]
    # the agent did execute it before its expiry: what the meter did wins
    r = client.put(f"/v1/results/DC-A/{cmd.counter}", content=a.result(cmd, result=DISCONNECTED))
    assert r.json()["status"] == "accepted"
    assert client.get("/v1/commands/" + obj["id"], ops).json()["state"] == "executed"


def test_refused_results_and_polls_are_counted(hes):
    client, store, commands, agents, ops, _ = hes
    a, b = agents["DC-A"], agents["DC-B"]
    queue(client, ops)
    cmd = a.open(ack_commands(client, a)[0])
    tampered = bytearray(a.result(cmd))
    tampered[-3] ^= 1
    cases = [
        ("/v1/results/DC-A/1", bytes(tampered), 400, "bad_tag"),
        ("/v1/results/DC-A/2", a.result(cmd), 400, "bad_result"),          # URL counter differs
        ("/v1/results/DC-A/1", a.result(cmd, id="c-other"), 400, "bad_result"),
        ("/v1/results/DC-A/1", a.result(cmd, op="reconnect"), 400, "bad_result"),
        ("/v1/results/DC-A/1", a.result(cmd, state="done"), 400, "bad_result"),
        ("/v1/results/DC-A/7", a.result(cmd, counter=7), 404, "unknown_command"),
        ("/v1/results/DC-A/1", a.poll(), 400, "bad_kind"),
        ("/v1/results/DC-A/1", b.result(cmd), 400, "device_mismatch"),
        ("/v1/results/DC-A/1", a.sealer.seal(b"[1,2]", envelope.KIND_RESULT), 400, "bad_result"),
        ("/v1/results/DC-A/1", b"\x01\x03", 400, "truncated"),
        ("/v1/poll/DC-A", a.result(cmd), 400, "bad_kind"),
        ("/v1/poll/DC-A", a.batch()[1], 400, "bad_kind"),
        ("/v1/batches/DC-A/99", a.poll(), 400, "bad_version"),
    ]
    for path, body, status, reason in cases:
        r = client.request("PUT" if "/poll/" not in path else "POST", path, content=body)
        assert (r.status_code, r.json()) == (status, {"error": reason}), (path, reason)
    stranger = AgentSide("DC-X", KEY_A)
    r = client.post("/v1/poll/DC-X", content=stranger.poll())
    assert (r.status_code, r.json()) == (403, {"error": "unknown_key"})
    rejects = store.rejects()
    for _, _, _, reason in cases:
        assert rejects.get(reason, 0) >= 1, reason
    assert client.get("/v1/commands?meter=DC-A-m1", ops).json()[0]["state"] == "delivered"


def test_no_key_pair_until_first_command_then_one_key(hes):
    client, store, commands, _, ops, _ = hes
    assert store.command_key() is not None      # the fixture asked for the public key
    other = CommandSigner(store)                 # another process: the same key
    assert other.public == commands.signer.public and len(other.public) == 32
    assert command.key_id(other.public) == other.key_id
    fresh = open_store(":memory:")
    assert fresh.command_key() is None
    signer = CommandSigner(fresh)
    assert signer.sign(b"x") == CommandSigner(fresh).sign(b"x")   # created once, kept
    assert "private" not in repr(fresh.command_key()) and repr(signer).startswith(
        "CommandSigner(key_id=")


def test_result_json_is_what_the_contract_says(hes):
    """The agent's result document as docs/command-format.md shows it."""
    client, store, _, agents, ops, _ = hes
    a = agents["DC-A"]
    obj = queue(client, ops, op="reconnect")
    cmd = a.open(ack_commands(client, a)[0])
    doc = {"id": cmd.id, "counter": cmd.counter, "op": "reconnect", "state": "failed",
           "reason": "rate_limited", "result": None, "ts": 1767225671}
    env = a.sealer.seal(json.dumps(doc, separators=(",", ":")).encode(), envelope.KIND_RESULT)
    assert client.put(f"/v1/results/DC-A/{cmd.counter}", content=env).json()["status"] == \
        "accepted"
    got = client.get("/v1/commands/" + obj["id"], ops).json()
    assert (got["state"], got["reason"], got["result"]) == ("failed", "rate_limited", None)
