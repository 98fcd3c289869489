"""The signed command format (agent/command.py): the documented examples parse
to what docs/command-format.md says, bodies round-trip byte for byte, every
refusal reason is reached, and one signature verifies on the pure-Python
Ed25519 path. Portable: pytest and MicroPython."""

from agent.command import (
    OPS,
    REASONS,
    Command,
    CommandError,
    canonical_args,
    key_id,
    parse_signed,
    signed,
    verify,
)


def _examples():
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    out = {}
    with open(here + "/../vectors/command/examples.txt") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, secret, public, data = line.split()
                out[name] = (bytes.fromhex(secret), bytes.fromhex(public), bytes.fromhex(data))
    return out


def _reason(fn):
    try:
        fn()
    except CommandError as e:
        assert e.reason in REASONS
        return e.reason
    raise AssertionError("no CommandError")


KID = bytes(range(8))


def _cmd(**kw):
    base = dict(op="disconnect", id="c-1", concentrator="DC-0001", meter="MTR-17", counter=7,
                issued=1767225600, expires=1767229200, key_id=KID, args={})
    base.update(kw)
    return Command(**base)


def test_worked_example_fields():
    _secret, public, data = _examples()["disconnect"]
    cmd, body, sig = parse_signed(data)
    assert (cmd.op, cmd.id, cmd.concentrator, cmd.meter) == ("disconnect", "c-000042", "DC-0001",
                                                             "MTR-17")
    assert (cmd.counter, cmd.issued, cmd.expires) == (42, 1767225600, 1767229200)
    assert cmd.key_id == key_id(public) and cmd.args == {}
    assert len(body) == 54 and len(sig) == 64 and body + sig == data
    assert body[:2] == b"\x01\x01" and body[-4:] == b"\x00\x02{}"


def test_examples_round_trip_byte_for_byte():
    for name, (_secret, _public, data) in _examples().items():
        cmd, body, sig = parse_signed(data)
        assert cmd.to_body() == body, name
        assert signed(cmd.to_body(), sig) == data
        assert Command.from_body(body) == cmd


def test_limit_example_args_are_canonical_json():
    cmd, body, _ = parse_signed(_examples()["limit"][2])
    assert cmd.args == {"threshold_normal": 5000, "threshold_emergency": 2000,
                        "min_over_threshold_duration": 60, "min_under_threshold_duration": 30}
    assert body.endswith(b'{"min_over_threshold_duration":60,"min_under_threshold_duration":30,'
                         b'"threshold_emergency":2000,"threshold_normal":5000}')


def test_config_example_is_concentrator_level():
    cmd, _, _ = parse_signed(_examples()["config"][2])
    assert cmd.op == "config" and cmd.meter == ""
    assert cmd.args == {"retention": {"days": 40}, "schedule": {"period": 900}}


def test_canonical_args_rules():
    assert canonical_args({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical_args({"s": 'q"\\\n\x01\xe9'}) == '{"s":"q\\"\\\\\\n\\u0001\xe9"}'.encode()
    assert _reason(lambda: canonical_args({"f": 1.5})) == "malformed"
    assert _reason(lambda: canonical_args({"n": 1 << 63})) == "malformed"
    deep = {}
    for _ in range(10):
        deep = {"d": deep}
    assert _reason(lambda: canonical_args(deep)) == "malformed"


def test_non_canonical_args_are_malformed():
    body = _cmd(args={"a": 1}).to_body()
    assert body.endswith(b'\x00\x07{"a":1}')
    for alt in (b'{"a": 1}', b'{"a":1.0}', b'{"a":01}', b'[1,2,3]', b'{"a":1,"a":1}'):
        bad = body[:-9] + len(alt).to_bytes(2, "big") + alt
        assert _reason(lambda b=bad: Command.from_body(b)) == "malformed", alt


def test_every_op_code_round_trips_and_unknown_codes_are_refused():
    for name, code in OPS.items():
        body = _cmd(op=name).to_body()
        assert body[1] == code and Command.from_body(body).op == name
    body = bytearray(_cmd().to_body())
    body[1] = 99
    assert _reason(lambda: Command.from_body(bytes(body))) == "unknown_op"
    assert _reason(lambda: _cmd(op="explode").to_body()) == "unknown_op"


def test_malformed_bodies():
    body = _cmd().to_body()
    assert _reason(lambda: Command.from_body(body[:10])) == "malformed"
    assert _reason(lambda: Command.from_body(body + b"x")) == "malformed"
    assert _reason(lambda: Command.from_body(b"\x02" + body[1:])) == "malformed"
    assert _reason(lambda: Command.from_body(body[:-1])) == "malformed"
    assert _reason(lambda: parse_signed(b"\x01")) == "malformed"
    assert _reason(lambda: _cmd(expires=1).to_body()) == "malformed"
    assert _reason(lambda: _cmd(id="").to_body()) == "malformed"
    assert _reason(lambda: _cmd(concentrator="x" * 65).to_body()) == "malformed"
    assert _reason(lambda: _cmd(counter=-1).to_body()) == "malformed"
    assert _reason(lambda: signed(body, b"short")) == "malformed"


def test_verify_refusals_without_signature_math():
    _secret, public, data = _examples()["disconnect"]
    other = bytes(32 - 1) + b"\x01"
    assert _reason(lambda: verify(data, [other])) == "unknown_key"
    assert _reason(lambda: verify(data, [public], revoked=[key_id(public)])) == "revoked_key"
    assert _reason(lambda: verify(data, [public], revoked=[public])) == "revoked_key"
    assert _reason(lambda: verify(data[:-1], [public])) == "malformed"


def test_verify_pure_path_accepts_then_refuses_tampering_and_foreign():
    # one valid and one tampered verification: each costs ~1 s in MicroPython
    _secret, public, data = _examples()["disconnect"]
    cmd = verify(data, [public], device="DC-0001")
    assert cmd.counter == 42
    bad = bytearray(data)
    bad[9] ^= 1                     # counter 42 -> 43, signature unchanged
    assert _reason(lambda: verify(bytes(bad), [public], device="DC-0001")) == "bad_signature"


def test_foreign_is_checked_after_the_signature():
    _secret, public, data = _examples()["config"]
    e = None
    try:
        verify(data, [public], device="DC-0002")
    except CommandError as err:
        e = err
    assert e is not None and e.reason == "foreign"
    assert e.target == "DC-0001" and e.device == "DC-0002"


def test_command_travels_in_a_downlink_envelope():
    from agent.envelope import (
        KIND_COMMAND,
        EnvelopeError,
        Keyring,
        MemoryBootStore,
        Sealer,
        open_envelope,
    )
    root = bytes(range(32))
    data = _examples()["disconnect"][2]
    sealed = Sealer("DC-0001", root, MemoryBootStore(), purpose="downlink").seal(
        data, kind=KIND_COMMAND)
    down = Keyring(purpose="downlink")
    down.add("DC-0001", root)
    opened = open_envelope(sealed, down)
    assert opened.header.kind == KIND_COMMAND and opened.payload == data
    up = Keyring()                       # the uplink key cannot open a downlink envelope
    up.add("DC-0001", root)
    try:
        open_envelope(sealed, up)
    except EnvelopeError as e:
        assert e.reason == "bad_tag"
    else:
        raise AssertionError("uplink key opened a downlink envelope")
