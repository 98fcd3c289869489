"""agent.mesh_wire under Hypothesis: any bytes give a message or the typed
error, never another exception; every message written is read back equal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent import mesh_wire as w

seqs = st.integers(0, 0xFFFFFFFF)


@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_or_the_typed_error(data):
    try:
        m = w.parse(data)
    except w.MeshMessageError as e:
        assert e.reason in ("empty", "kind", "truncated", "status", "reason")
    else:
        assert m.kind in w.KINDS


@given(seqs, st.binary(min_size=1, max_size=300))
def test_batch(seq, body):
    assert w.parse(w.batch(seq, body)) == w.Message(w.BATCH, seq, body)


@given(seqs, st.sampled_from(w.STATUSES), st.integers(0, (1 << 48) - 1), st.booleans())
def test_ack(seq, status, ms, keyframe):
    m = w.parse(w.ack(seq, status, ms / 1000, keyframe))
    assert (m.seq, m.status, m.need_keyframe) == (seq, status, keyframe)
    assert round(m.server_time * 1000) == ms


@given(seqs, st.sampled_from([w.refused, w.retry]), st.text(min_size=1, max_size=100))
def test_reasons(seq, fn, reason):
    m = w.parse(fn(seq, reason))
    assert m.seq == seq and reason.encode().startswith(m.reason.encode())
    assert 1 <= len(m.reason.encode()) <= w.MAX_REASON


@given(st.binary(max_size=300))
def test_reply(body):
    assert w.parse(w.reply(body)).body == body
