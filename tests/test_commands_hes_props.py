"""Bad input at the HES's new parsers (Hypothesis): any bytes as a result or
poll, any payload inside an authentic result envelope, any JSON as command
arguments or as a POST /v1/commands body, any Authorization header — each
gives its answer or the package's typed refusal, never another exception,
and nothing stored changes on a refusal."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import envelope
from hes_lite import HesError, auth, command_args
from hes_lite.api import create_app
from hes_lite.audit import Auditor
from hes_lite.commands import CommandService
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.signing import CommandSigner
from hes_lite.store import open_store
from tests.command_agent import AgentSide
from tests.hes_client import AppClient

KEY = bytes.fromhex("1234567890abcdef" * 4)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=5),
    max_leaves=25)


@pytest.fixture(scope="module")
def world(module_db_url):
    store = open_store(module_db_url)
    store.add_key("DC-P", 0, KEY, 0.0)
    audit = Auditor(store)
    commands = CommandService(store, CommandSigner(store, audit), audit)
    agent = AgentSide("DC-P", KEY)
    Ingestor(store).submit(agent.batch()[1])
    rec = commands.queue("disconnect", {}, "DC-P-m1", actor="test")
    client = AppClient(create_app(store, Ingestor(store)))
    token = auth.create(store, "fuzz", "operator", 0.0)
    yield store, commands, agent, rec, client, token
    client.close()
    store.close()


def snapshot(store):
    return [(r.id, r.state, r.reason, r.result, r.updated) for r in store.commands()]


@SETTINGS
@given(data=st.binary(max_size=200), kind=st.sampled_from(["result", "poll"]))
def test_any_bytes_as_result_or_poll(world, data, kind):
    store, commands = world[:2]
    before = snapshot(store)
    with pytest.raises(Rejected) as e:
        if kind == "result":
            commands.submit_result(data, "DC-P", 1)
        else:
            commands.open_poll(data, "DC-P")
    assert isinstance(e.value.reason, str) and e.value.reason
    assert snapshot(store) == before


@SETTINGS
@given(payload=st.one_of(st.binary(max_size=300),
                         json_values.map(lambda v: json.dumps(v).encode())))
def test_any_payload_in_an_authentic_result(world, payload):
    store, commands, agent, rec = world[:4]
    before = snapshot(store)
    env = agent.sealer.seal(payload, envelope.KIND_RESULT)
    try:
        answer = commands.submit_result(env, "DC-P", None)
    except Rejected as e:
        assert e.reason in ("bad_result", "unknown_command")
        assert snapshot(store) == before
    else:   # only a well-formed result of the queued command gets this far
        doc = json.loads(payload)
        assert doc["id"] == rec.id and answer["counter"] == rec.counter


@SETTINGS
@given(op=st.sampled_from(command_args.OPS + ("nope",)), args=json_values)
def test_any_json_as_arguments(op, args):
    try:
        out = command_args.check(op, args)
    except command_args.BadArgs as e:
        assert e.detail
    else:
        assert isinstance(out, dict) and command_args.check(op, out) == out   # normal form


@SETTINGS
@given(header=st.text(max_size=80))
def test_any_authorization_header(header):
    try:
        token = auth.bearer(header)
    except auth.AuthError as e:
        assert e.status == 401 and e.reason == "malformed"
    else:
        assert token is None or (token and " " not in token)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=100), json_values.map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({}, optional={
                          "meter": json_values | st.just("DC-P-m1"),
                          "op": json_values | st.sampled_from(command_args.OPS),
                          "args": json_values, "concentrator": json_values,
                          "expires_in": json_values}).map(lambda d: json.dumps(d).encode())))
def test_any_post_commands_body(world, body):
    client, token = world[4:]
    r = client.post("/v1/commands", token, content=body)
    assert r.status_code in (202, 400, 404, 422), r.text
    assert r.status_code == 202 or "error" in r.json()


def test_refusals_are_hes_errors():
    assert issubclass(Rejected, HesError) and issubclass(command_args.BadArgs, HesError)
    assert issubclass(auth.AuthError, HesError)
