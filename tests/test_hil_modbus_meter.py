"""The simulated Modbus meter at the feed() level: own address only, noise,
exceptions, writes (relay, clock, load-profile cursor), fault hooks."""

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus import rtu
from drivers.modbus.profile import load
from hil.modbus_meter import ModbusMeter
from hil.model import HOUR, ORIGIN, MeterModel

T = ORIGIN + 20 * 86400


def meter(address=3, profile="generic"):
    return ModbusMeter(MeterModel(address, 1), address, lambda: T, profile)


def ask(m, frame):
    replies = m.feed(frame.to_bytes(), T)
    assert len(replies) == 1
    return rtu.Frame.from_bytes(replies[0][0], rtu.RESPONSE)


def test_reads_the_model_through_the_profile():
    m = meter()
    prof = load("generic")
    block = prof.plan(prof.registers + [prof.identity])[0]
    f = ask(m, rtu.read_request(3, rtu.READ_INPUT, block.start, block.count))
    vals = block.decode(f.registers())
    model = MeterModel(3, 1).registers(T)
    assert {k: v for k, v in vals.items() if k in model} == model
    assert vals["0.0.96.1.0.255"] == int(MeterModel(3, 1).serial)


def test_other_addresses_and_noise_are_ignored():
    m = meter()
    assert m.feed(rtu.read_request(4, 4, 0, 2).to_bytes(), T) == []
    assert m.feed(b"\x00\xff\x13garbage", T) == []
    m.reset()
    req = rtu.read_request(3, 4, 0, 2).to_bytes()
    replies = []
    for b in req:                        # byte by byte, as a slow line delivers
        replies += m.feed(bytes([b]), T)
    assert len(replies) == 1


def test_exceptions():
    m = meter()
    assert ask(m, rtu.read_request(3, 4, 1000, 2)).exception_code == 2
    assert ask(m, rtu.read_request(3, 4, 0, 126)).exception_code == 3
    assert ask(m, rtu.read_request(3, 1, 0, 1)).exception_code == 1
    assert ask(m, rtu.write_single_request(3, 100, 1)).exception_code == 2
    assert ask(m, rtu.write_single_request(3, 512, 7)).exception_code == 3
    sdm = meter(profile="eastron-sdm630")
    assert ask(sdm, rtu.read_request(3, 4, 0x50, 2)).exception_code == 2
    assert ask(sdm, rtu.read_request(3, 4, 0x40, 17)).exception_code == 2   # crosses 0x4F


def test_relay_and_clock_writes():
    m = meter()
    f = ask(m, rtu.write_single_request(3, 512, 0))
    assert (f.function, f.data) == (6, bytes([2, 0, 0, 0]))
    assert m.model.relay_connected is False
    assert ask(m, rtu.read_request(3, 3, 512, 1)).registers() == [0]
    ask(m, rtu.write_single_request(3, 512, 1))
    assert m.model.relay_connected is True
    target = T + 1234
    ask(m, rtu.write_multiple_request(3, 528, [target >> 16, target & 0xFFFF]))
    w = ask(m, rtu.read_request(3, 3, 528, 2)).registers()
    assert (w[0] << 16 | w[1]) == target


def test_load_profile_cursor():
    m = meter()
    ts = T - 5 * HOUR
    ask(m, rtu.write_multiple_request(3, 544, [ts >> 16, ts & 0xFFFF]))
    w = ask(m, rtu.read_request(3, 4, 768, 18)).registers()
    assert (w[0] << 16 | w[1]) == ts
    row = MeterModel(3, 1).profile_row(ts)
    assert (w[2] << 48 | w[3] << 32 | w[4] << 16 | w[5]) == row["1.0.1.8.0.255"]
    assert ask(m, rtu.write_multiple_request(3, 544, [0, 5])).exception_code == 3


def test_corrupt_address():
    m = meter()
    reply = m.feed(rtu.read_request(3, 4, 0, 2).to_bytes(), T)[0][0]
    bad = m.corrupt_address(reply)
    f = rtu.Frame.from_bytes(bad)
    assert f.address != 3 and f.data == rtu.Frame.from_bytes(reply).data


@given(st.lists(st.binary(max_size=64), max_size=8))
@settings(max_examples=150, deadline=None)
def test_any_bytes_never_raise(chunks):
    m = meter()
    for c in chunks:
        for reply, baud in m.feed(c, T):
            assert baud is None
            rtu.Frame.from_bytes(reply, rtu.RESPONSE)


def test_load_profile_window_and_rows_not_yet_captured():
    m = meter()
    ts = T - 2 * HOUR
    ask(m, rtu.write_multiple_request(3, 544, [ts >> 16, ts & 0xFFFF]))
    w = ask(m, rtu.read_request(3, 4, 768, 6 * 18)).registers()
    stamps = [w[i * 18] << 16 | w[i * 18 + 1] for i in range(6)]
    have = T if m.model.clock(T) >= T else T - HOUR
    assert stamps == [t if t <= have else 0 for t in range(ts, ts + 6 * HOUR, HOUR)]
    assert all(x == 0 for x in w[5 * 18:])
