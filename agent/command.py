"""The signed command: what the HES orders a concentrator to do, in bytes.

Portable (CPython and MicroPython). Owns the body layout, the canonical
encoding of the arguments, the Ed25519 signature over a domain-separated body
and the checks that make a command authentic and addressed to this
concentrator. docs/command-format.md is the byte-level spec:

    off  size  field (integers big-endian)
    0    1     version (1)
    1    1     op code (OPS)
    2    8     counter, strictly increasing per concentrator (u64)
    10   4     issued, epoch s (u32)
    14   4     expires, epoch s (u32), >= issued
    18   8     key id = SHA-256(Ed25519 public key)[:8]
    26   1+a   command id: a (1..64), UTF-8
    ..   1+b   concentrator id: b (1..64), UTF-8
    ..   1+c   meter id: c (0..64), UTF-8 (0: a concentrator-level op)
    ..   2+m   args: m (2..4096), canonical JSON object, UTF-8
    signed = body || Ed25519(secret, DOMAIN || body)   (64 bytes)

Must not know transports, envelopes, archives, clocks (time comes in as an
argument) or what executing an op means. State that outlives one command
(the last counter, results, rate limits) belongs to ``agent.commands``.

API (stable):
    OPS {name: code}, OP_NAMES {code: name}, DOMAIN, SIG_LEN
    Command(op, id, concentrator, meter, counter, issued, expires, key_id, args)
        .to_body() -> bytes, Command.from_body(body) -> Command, .digest() -> bytes
    canonical_args(dict) -> bytes
    key_id(public32) -> 8 bytes
    sign(body, secret32) -> 64 bytes; signed(body, signature) -> bytes
    parse_signed(data) -> (Command, body, signature)
    verify(data, verify_keys, device=None, revoked=()) -> Command
    CommandError(AgentError) with .reason in REASONS
"""

import hashlib
import json

from agent import AgentError, ed25519

VERSION = 1
DOMAIN = b"wum command v1\x00"
SIG_LEN = 64
KEY_ID_LEN = 8
FIXED_LEN = 26
MAX_ID = 64
MAX_ARGS = 4096
MAX_DEPTH = 8
MAX_INT = (1 << 63) - 1
MAX_U32 = 0xFFFFFFFF
MAX_U64 = (1 << 64) - 1

OPS = {"disconnect": 1, "reconnect": 2, "read": 3, "tariff": 4, "limit": 5, "time": 6,
       "config": 7, "update": 8}
OP_NAMES = {v: k for k, v in OPS.items()}
METER_OPS = ("disconnect", "reconnect", "read", "tariff", "limit", "time")

# Refusal reasons: a command refused for any of these gets no result.
REASONS = ("malformed", "unknown_op", "unknown_key", "revoked_key", "bad_signature", "foreign",
           "replayed", "bad_envelope")


class CommandError(AgentError):
    """A command was refused (or could not be built). ``reason`` is one of
    ``REASONS``; structured fields (``field``, ``counter``, ``key_id``, ``target``,
    ``device`` ...) say more. Never carries key material."""

    reason: str

    def __init__(self, reason: str, **fields: object) -> None:
        if reason not in REASONS:
            raise ValueError("unknown command error reason %r" % reason)
        detail = " ".join("%s=%s" % (k, fields[k]) for k in sorted(fields))
        super().__init__("command refused: %s %s" % (reason, detail), reason=reason, **fields)


def _malformed(field: str, why: str) -> CommandError:
    return CommandError("malformed", field=field, why=why)


# --- canonical JSON -----------------------------------------------------------

_ESC = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r",
        0x09: "\\t"}


def _enc_str(s: str, out: "list[str]") -> None:
    out.append('"')
    for ch in s:
        o = ord(ch)
        e = _ESC.get(o)
        if e is not None:
            out.append(e)
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')


def _enc(v: object, out: "list[str]", depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _malformed("args", "nested deeper than %d" % MAX_DEPTH)
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        if not -MAX_INT <= v <= MAX_INT:
            raise _malformed("args", "integer out of range")
        out.append("%d" % v)
    elif isinstance(v, str):
        _enc_str(v, out)
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _enc(x, out, depth + 1)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        keys = list(v.keys())
        for k in keys:
            if not isinstance(k, str):
                raise _malformed("args", "object keys must be strings")
        keys.sort()
        for i, k in enumerate(keys):
            if i:
                out.append(",")
            _enc_str(k, out)
            out.append(":")
            _enc(v[k], out, depth + 1)
        out.append("}")
    else:       # floats included: their decimal text is not the same everywhere
        raise _malformed("args", "unsupported value type %s" % type(v).__name__)


def canonical_args(args: "dict[str, object]") -> bytes:
    """The one encoding of ``args``: JSON, keys sorted by code point, no spaces,
    integers only (no floats), minimal string escapes, UTF-8."""
    if not isinstance(args, dict):
        raise _malformed("args", "must be a JSON object")
    out: "list[str]" = []
    _enc(args, out, 1)
    try:
        b = "".join(out).encode()
    except UnicodeError:
        raise _malformed("args", "not encodable as UTF-8") from None
    if len(b) > MAX_ARGS:
        raise _malformed("args", "longer than %d bytes" % MAX_ARGS)
    return b


def _parse_args(raw: bytes) -> "dict[str, object]":
    try:
        obj = json.loads(raw.decode())
    except (ValueError, UnicodeError, RuntimeError, MemoryError):    # RuntimeError: recursion
        raise _malformed("args", "not JSON") from None
    if not isinstance(obj, dict):
        raise _malformed("args", "must be a JSON object")
    if canonical_args(obj) != raw:
        raise _malformed("args", "not in canonical form")
    return obj


# --- the body -----------------------------------------------------------------

def key_id(public: bytes) -> bytes:
    """The id of a verify key: the first 8 bytes of SHA-256 of its 32 bytes."""
    if len(public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return bytes(hashlib.sha256(bytes(public)).digest())[:KEY_ID_LEN]


def _text(s: str, field: str, lo: int) -> bytes:
    if not isinstance(s, str):
        raise _malformed(field, "must be a string")
    try:
        b = s.encode()
    except UnicodeError:
        raise _malformed(field, "not encodable as UTF-8") from None
    if not lo <= len(b) <= MAX_ID:
        raise _malformed(field, "must be %d..%d bytes" % (lo, MAX_ID))
    return b


def _int(v: object, field: str, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise _malformed(field, "must be an integer 0..%d" % hi)
    return v


class Command:
    """One command, as the HES signed it. ``op`` is the op's name (``OPS``),
    ``args`` a dict of JSON values (no floats), ``meter`` "" for concentrator-level
    ops. Immutable by convention; equality is equality of the body bytes."""

    __slots__ = ("version", "op", "id", "concentrator", "meter", "counter", "issued",
                 "expires", "key_id", "args")

    def __init__(self, op: str, id: str, concentrator: str, meter: str, counter: int,
                 issued: int, expires: int, key_id: bytes,
                 args: "dict[str, object] | None" = None, version: int = VERSION) -> None:
        self.version = version
        self.op = op
        self.id = id
        self.concentrator = concentrator
        self.meter = meter
        self.counter = counter
        self.issued = issued
        self.expires = expires
        self.key_id = bytes(key_id)
        self.args = {} if args is None else args

    def __repr__(self) -> str:
        return "Command(op=%r, id=%r, concentrator=%r, meter=%r, counter=%d, expires=%d)" % (
            self.op, self.id, self.concentrator, self.meter, self.counter, self.expires)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Command) and other.to_body() == self.to_body()

    def __hash__(self) -> int:
        return hash(self.to_body())

    def to_body(self) -> bytes:
        """The bytes that are signed; raises ``CommandError("malformed")`` on a bad field."""
        if self.version != VERSION:
            raise _malformed("version", "must be %d" % VERSION)
        code = OPS.get(self.op)
        if code is None:
            raise CommandError("unknown_op", op=self.op)
        _int(self.counter, "counter", MAX_U64)
        _int(self.issued, "issued", MAX_U32)
        _int(self.expires, "expires", MAX_U32)
        if self.expires < self.issued:
            raise _malformed("expires", "before issued")
        if len(self.key_id) != KEY_ID_LEN:
            raise _malformed("key_id", "must be %d bytes" % KEY_ID_LEN)
        cid = _text(self.id, "id", 1)
        conc = _text(self.concentrator, "concentrator", 1)
        meter = _text(self.meter, "meter", 0)
        args = canonical_args(self.args)
        return (bytes((self.version, code)) + self.counter.to_bytes(8, "big")
                + self.issued.to_bytes(4, "big") + self.expires.to_bytes(4, "big")
                + self.key_id + bytes((len(cid),)) + cid + bytes((len(conc),)) + conc
                + bytes((len(meter),)) + meter + len(args).to_bytes(2, "big") + args)

    @classmethod
    def from_body(cls, body: bytes) -> "Command":
        """Parse a body; any malformation raises ``CommandError`` (``malformed`` or
        ``unknown_op``), never another exception. ``from_body(b).to_body() == b``."""
        body = bytes(body)
        if len(body) < FIXED_LEN:
            raise _malformed("body", "shorter than %d bytes" % FIXED_LEN)
        if body[0] != VERSION:
            raise _malformed("version", "unsupported version %d" % body[0])
        op = OP_NAMES.get(body[1])
        if op is None:
            raise CommandError("unknown_op", code=body[1])
        pos = FIXED_LEN
        texts = []
        for field, lo in (("id", 1), ("concentrator", 1), ("meter", 0)):
            if pos >= len(body):
                raise _malformed(field, "truncated")
            n = body[pos]
            if not lo <= n <= MAX_ID or pos + 1 + n > len(body):
                raise _malformed(field, "bad length %d" % n)
            try:
                texts.append(body[pos + 1:pos + 1 + n].decode())
            except UnicodeError:
                raise _malformed(field, "not UTF-8") from None
            pos += 1 + n
        if pos + 2 > len(body):
            raise _malformed("args", "truncated")
        m = int.from_bytes(body[pos:pos + 2], "big")
        if not 2 <= m <= MAX_ARGS or pos + 2 + m != len(body):
            raise _malformed("args", "bad length %d" % m)
        args = _parse_args(body[pos + 2:])
        issued = int.from_bytes(body[10:14], "big")
        expires = int.from_bytes(body[14:18], "big")
        if expires < issued:
            raise _malformed("expires", "before issued")
        return cls(op, texts[0], texts[1], texts[2], int.from_bytes(body[2:10], "big"),
                   issued, expires, body[18:26], args)

    def digest(self) -> bytes:
        """SHA-256 of the body: what tells a redelivery from a replay."""
        return bytes(hashlib.sha256(self.to_body()).digest())

    def to_dict(self) -> "dict[str, object]":
        return {"id": self.id, "op": self.op, "concentrator": self.concentrator,
                "meter": self.meter, "counter": self.counter, "issued": self.issued,
                "expires": self.expires, "key_id": self.key_id.hex(), "args": self.args}


# --- signatures ---------------------------------------------------------------

def sign(body: bytes, secret: bytes) -> bytes:
    """The HES's signature over ``DOMAIN || body`` (Ed25519, RFC 8032, pure)."""
    return ed25519.sign(secret, DOMAIN + bytes(body))


def signed(body: bytes, signature: bytes) -> bytes:
    if len(signature) != SIG_LEN:
        raise _malformed("signature", "must be %d bytes" % SIG_LEN)
    return bytes(body) + bytes(signature)


def parse_signed(data: bytes) -> "tuple[Command, bytes, bytes]":
    """Split and parse a signed command (nothing is verified here)."""
    data = bytes(data)
    if len(data) < FIXED_LEN + SIG_LEN:
        raise _malformed("signed", "too short")
    body, sig = data[:-SIG_LEN], data[-SIG_LEN:]
    return Command.from_body(body), body, sig


def _key_ids(keys: "object") -> "dict[bytes, bytes]":
    out: "dict[bytes, bytes]" = {}
    for k in keys:  # type: ignore[attr-defined]
        out[key_id(k)] = bytes(k)
    return out


def verify(data: bytes, verify_keys: "object", device: "str | None" = None,
           revoked: "object" = ()) -> Command:
    """Parse ``data`` and check that it is authentic and for ``device``.

    ``verify_keys``: the trusted 32-byte Ed25519 public keys (any iterable);
    ``revoked``: key ids (8 bytes) or public keys (32 bytes) no longer trusted.
    Raises ``CommandError`` with reason ``malformed``, ``unknown_op``,
    ``revoked_key``, ``unknown_key``, ``bad_signature`` or ``foreign`` (checked in
    that order: ``foreign`` is said only of an authentic command). Expiry and
    the counter need state and a clock: ``agent.commands`` checks them."""
    cmd, body, sig = parse_signed(data)
    dead = set()
    for r in revoked:  # type: ignore[attr-defined]
        dead.add(bytes(r) if len(r) == KEY_ID_LEN else key_id(r))
    kid = cmd.key_id
    if kid in dead:
        raise CommandError("revoked_key", key_id=kid.hex(), counter=cmd.counter)
    public = _key_ids(verify_keys).get(kid)
    if public is None:
        raise CommandError("unknown_key", key_id=kid.hex(), counter=cmd.counter)
    if not ed25519.verify(public, DOMAIN + body, sig):
        raise CommandError("bad_signature", key_id=kid.hex(), counter=cmd.counter)
    if device is not None and cmd.concentrator != device:
        raise CommandError("foreign", target=cmd.concentrator, device=device,
                           counter=cmd.counter)
    return cmd
