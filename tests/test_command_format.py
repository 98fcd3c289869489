"""The signed command format on CPython: every RFC 8032 vector on both
Ed25519 paths, the pure code against OpenSSL (via ``cryptography``) under
Hypothesis, and the parser's promise that any bytes give a ``Command`` or a
``CommandError``, never another exception."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent import command as C
from agent import ed25519

VECTORS = Path(__file__).parent / "vectors"


def _rfc_vectors() -> list[tuple[bytes, bytes, bytes, bytes]]:
    out = []
    for line in (VECTORS / "crypto" / "ed25519_rfc8032.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(tuple(b"" if f == "-" else bytes.fromhex(f) for f in line.split()))
    return out  # type: ignore[return-value]


def test_all_rfc8032_vectors_sign_and_verify_on_both_paths() -> None:
    vs = _rfc_vectors()
    assert len(vs) == 4
    for secret, public, msg, sig in vs:
        assert ed25519.public_key_python(secret) == public == ed25519.public_key(secret)
        assert ed25519.sign_python(secret, msg) == sig == ed25519.sign(secret, msg)
        assert ed25519.verify_python(public, msg, sig) and ed25519.verify(public, msg, sig)


def test_examples_are_reproducible_from_their_key() -> None:
    for line in (VECTORS / "command" / "examples.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        _name, secret, public, data = line.split()
        cmd, body, sig = C.parse_signed(bytes.fromhex(data))
        assert secret == hashlib.sha256(b"wum example command key").hexdigest()
        assert ed25519.public_key(bytes.fromhex(secret)).hex() == public
        assert C.sign(body, bytes.fromhex(secret)) == sig
        assert ed25519.sign_python(bytes.fromhex(secret), C.DOMAIN + body) == sig


def test_the_signature_covers_the_domain_prefix() -> None:
    secret = bytes(range(32))
    body = _command(key_id=C.key_id(ed25519.public_key(secret))).to_body()
    plain = ed25519.sign(secret, body)          # same key, no domain prefix
    data = C.signed(body, plain)
    try:
        C.verify(data, [ed25519.public_key(secret)])
    except C.CommandError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("a signature without the domain prefix verified")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_any_bytes_give_a_command_or_a_command_error(data: bytes) -> None:
    try:
        cmd, body, _sig = C.parse_signed(data)
    except C.CommandError as e:
        assert e.reason in C.REASONS
    else:
        assert cmd.to_body() == body


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 2))
def test_mutated_bodies_give_a_command_or_a_command_error(tail: bytes, cut: int) -> None:
    base = _command(args={"registers": ["1.0.1.8.0.255"], "n": 3}).to_body()
    data = base[:len(base) - cut * 7] + tail
    try:
        cmd = C.Command.from_body(data)
    except C.CommandError as e:
        assert e.reason in C.REASONS
    else:
        assert cmd.to_body() == data


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63) + 1, (1 << 63) - 1)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                max_size=4),
    max_leaves=12)


def _command(**kw: object) -> C.Command:
    base: dict[str, object] = dict(op="disconnect", id="c-1", concentrator="DC-0001",
                                   meter="MTR-17", counter=7, issued=1_767_225_600,
                                   expires=1_767_229_200, key_id=bytes(8), args={})
    base.update(kw)
    return C.Command(**base)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(op=st.sampled_from(sorted(C.OPS)), counter=st.integers(0, C.MAX_U64),
       issued=st.integers(0, C.MAX_U32), span=st.integers(0, 10**6),
       ident=st.text(min_size=1, max_size=20), meter=st.text(max_size=20),
       args=st.dictionaries(st.text(max_size=8), JSONISH, max_size=5))
def test_commands_round_trip(op: str, counter: int, issued: int, span: int, ident: str,
                             meter: str, args: dict[str, object]) -> None:
    cmd = _command(op=op, counter=counter, issued=issued,
                   expires=min(issued + span, C.MAX_U32), id=ident, meter=meter, args=args)
    try:
        body = cmd.to_body()
    except C.CommandError as e:     # lone surrogates, nesting > 8: refused when built
        assert e.reason == "malformed"
        return
    back = C.Command.from_body(body)
    assert back == cmd and back.args == args and back.to_body() == body


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=200),
       flip=st.integers(0, 64 * 8 + 32 * 8 + 8), garbage=st.binary(min_size=64, max_size=64))
def test_pure_and_openssl_verify_agree(secret: bytes, msg: bytes, flip: int,
                                       garbage: bytes) -> None:
    public = ed25519.public_key(secret)
    sig = ed25519.sign(secret, msg)
    assert ed25519.sign_python(secret, msg) == sig
    cases = [(public, msg, sig), (public, msg, garbage), (garbage[:32], msg, sig)]
    sig_b, pub_b = bytearray(sig), bytearray(public)
    if flip < 512:
        sig_b[flip // 8] ^= 1 << (flip % 8)
        cases.append((public, msg, bytes(sig_b)))
    elif flip < 768:
        pub_b[(flip - 512) // 8] ^= 1 << (flip % 8)
        cases.append((bytes(pub_b), msg, sig))
    else:
        cases.append((public, msg + b"\x00", sig))
    for pub, m, s in cases:
        assert ed25519.verify_python(pub, m, s) == ed25519.verify(pub, m, s), (pub.hex(), s.hex())
    assert ed25519.verify_python(public, msg, sig)


def test_sha512_pure_agrees_with_hashlib_on_a_long_message() -> None:
    data = bytes(range(256)) * 40
    assert ed25519.sha512_python(data) == hashlib.sha512(data).digest()


def test_verify_accepts_a_fresh_signature_and_says_which_check_failed() -> None:
    secret, other = bytes(range(32)), bytes(range(1, 33))
    pub = ed25519.public_key(secret)
    cmd = _command(key_id=C.key_id(pub), concentrator="DC-9")
    data = C.signed(cmd.to_body(), C.sign(cmd.to_body(), secret))
    assert C.verify(data, [ed25519.public_key(other), pub], device="DC-9") == cmd
    forged = C.signed(cmd.to_body(), C.sign(cmd.to_body(), other))
    for keys, kw, reason in (([pub], {"device": "DC-9"}, None),
                             ([pub], {"device": "DC-1"}, "foreign"),
                             ([ed25519.public_key(other)], {}, "unknown_key"),
                             ([pub], {"revoked": [C.key_id(pub)]}, "revoked_key")):
        try:
            C.verify(data, keys, **kw)  # type: ignore[arg-type]
        except C.CommandError as e:
            assert e.reason == reason
        else:
            assert reason is None
    try:
        C.verify(forged, [pub])
    except C.CommandError as e:
        assert e.reason == "bad_signature" and e.counter == 7
    else:
        raise AssertionError("forged command verified")
