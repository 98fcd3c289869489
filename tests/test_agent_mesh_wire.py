"""agent.mesh_wire under Hypothesis: any bytes give a message or the typed
error, never another exception; every message written is read back equal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent import mesh_wire as w

ids = st.integers(0, 0xFFFFFFFF)
commands = st.lists(st.binary(min_size=1, max_size=120), max_size=5).map(tuple)
times = st.integers(0, (1 << 48) - 1)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_or_the_typed_error(data):
    try:
        m = w.parse(data)
    except w.MeshMessageError as e:
        assert e.reason in ("empty", "kind", "truncated", "status", "reason", "commands")
    else:
        assert m.kind in w.KINDS


@given(st.sampled_from(w.UP), ids, st.binary(min_size=1, max_size=300))
def test_requests(kind, n, body):
    assert w.parse(w.request(kind, n, body)) == w.Message(kind, n, body)


@given(ids, st.sampled_from(w.STATUSES), times, st.booleans(), commands)
def test_ack(seq, status, ms, keyframe, cmds):
    m = w.parse(w.ack(seq, status, ms / 1000, keyframe, cmds))
    assert (m.seq, m.status, m.need_keyframe, m.commands) == (seq, status, keyframe, cmds)
    assert round(m.server_time * 1000) == ms


@given(ids, times, commands)
def test_polled(n, ms, cmds):
    m = w.parse(w.polled(n, ms / 1000, cmds))
    assert m.key == (w.POLL, n) and m.commands == cmds and round(m.server_time * 1000) == ms


@given(ids, st.sampled_from(w.STATUSES))
def test_rack(n, status):
    assert w.parse(w.rack(n, status)) == w.Message(w.RACK, n, status=status)


@given(st.sampled_from(w.UP), ids, st.sampled_from([w.refused, w.retry]),
       st.text(min_size=1, max_size=100))
def test_reasons(ref, n, fn, reason):
    m = w.parse(fn(ref, n, reason))
    assert m.key == (ref, n) and reason.encode().startswith(m.reason.encode())
    assert 1 <= len(m.reason.encode()) <= w.MAX_REASON


@given(st.binary(max_size=300))
def test_reply(body):
    assert w.parse(w.reply(body)).body == body
