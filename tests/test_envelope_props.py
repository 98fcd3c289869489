"""Envelope on CPython: the pure-Python AES/CCM agree with OpenSSL for random
keys, nonces and messages (Hypothesis); any bytes into open_envelope give an
Opened or an EnvelopeError; the boot epoch survives real process restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.envelope import (
    REASONS,
    EnvelopeError,
    FileBootStore,
    Keyring,
    ReplayWindow,
    Sealer,
    open_envelope,
    peek,
)
from drivers.crypto import block_cipher, ccm_open, ccm_seal

ROOT = bytes(range(32))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.binary(min_size=16, max_size=16))
def test_pure_aes_matches_openssl(key: bytes, block: bytes) -> None:
    assert block_cipher(key, "python").encrypt_block(block) == \
        block_cipher(key, "openssl").encrypt_block(block)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.integers(7, 13).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)), st.binary(max_size=40),
    st.binary(max_size=100), st.sampled_from([4, 8, 16]))
def test_pure_ccm_matches_openssl(key: bytes, nonce: bytes, aad: bytes, msg: bytes,
                                  tag: int) -> None:
    a = ccm_seal(key, nonce, aad, msg, tag, backend="python")
    b = ccm_seal(key, nonce, aad, msg, tag)        # OpenSSL AESCCM
    assert a == b
    assert ccm_open(key, nonce, aad, b, tag, backend="python") == msg


def _ring() -> Keyring:
    ks = Keyring()
    ks.add("dc-1", ROOT)
    return ks


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_open_or_typed_error(data: bytes) -> None:
    try:
        open_envelope(data, _ring(), ReplayWindow())
    except EnvelopeError as e:
        assert e.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_mutated_envelopes_rejected(payload: bytes, data: st.DataObject) -> None:
    from agent.envelope import MemoryBootStore
    sealed = bytearray(Sealer("dc-1", ROOT, MemoryBootStore()).seal(payload))
    i = data.draw(st.integers(0, len(sealed) - 1))
    sealed[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        open_envelope(bytes(sealed), _ring())
    except EnvelopeError as e:
        assert e.reason in REASONS
    else:
        raise AssertionError("a flipped bit was accepted")


SEAL_ONCE = """
import sys
from agent.envelope import FileBootStore, Sealer
s = Sealer("dc-1", bytes(range(32)), FileBootStore(sys.argv[1]))
sys.stdout.write(s.seal(b"hello").hex())
"""


def test_boot_epoch_persists_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "boot")
    outs = [bytes.fromhex(subprocess.run([sys.executable, "-c", SEAL_ONCE, path], check=True,
                                         capture_output=True, text=True).stdout)
            for _ in range(3)]
    heads = [peek(o) for o in outs]
    assert [h.boot for h in heads] == [1, 2, 3]
    assert [h.counter for h in heads] == [0, 0, 0]
    assert len(set(outs)) == 3
    ks, w = _ring(), ReplayWindow()
    for o in outs:
        assert open_envelope(o, ks, w).payload == b"hello"
    assert FileBootStore(path).load() == 3
    assert not Path(path + ".tmp").exists()


def test_counter_wrap_moves_to_next_boot_epoch() -> None:
    from agent.envelope import MAX_COUNTER, MemoryBootStore
    store = MemoryBootStore()
    s = Sealer("dc-1", ROOT, store)
    s.counter = MAX_COUNTER
    a, b = peek(s.seal(b"a")), peek(s.seal(b"b"))
    assert (a.boot, a.counter) == (1, MAX_COUNTER)
    assert (b.boot, b.counter) == (2, 0)
    assert store.load() == 2
