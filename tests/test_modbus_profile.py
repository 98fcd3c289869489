"""Device profiles: loading, exact value conversion at the declared
resolution (both ways), request planning, quirks."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import LocalProtocolError
from drivers.modbus import profile as pf
from hil.model import ORIGIN, REGISTERS, MeterModel


def test_shipped_profiles():
    assert {"generic", "eastron-sdm630", "eastron-sdm120"} <= set(pf.names())
    g = pf.load("generic")
    assert [r.obis for r in g.registers] == [o for o, _ in REGISTERS]   # the full 27
    assert {r.unit for r in g.registers} == {u for _, u in REGISTERS}
    sdm = pf.load("eastron-sdm630")
    assert sdm.register("1.0.32.7.0.255").address == 0x0000
    assert sdm.register("1.0.31.7.0.255").address == 0x0006
    assert sdm.register("1.0.21.7.0.255").address == 0x000C
    assert sdm.register("1.0.14.7.0.255").address == 0x0046
    assert sdm.register("1.0.1.8.0.255").address == 0x0048
    assert sdm.register("1.0.2.8.0.255").address == 0x004A
    assert sdm.register("1.0.15.8.0.255").address == 0x0156
    assert all(r.type == "float32" and r.table == "input" for r in sdm.registers)


def test_quirk_registered_by_model():
    sdm = pf.load("eastron-sdm120")
    assert "eastron-max-40-parameters" in sdm.quirks
    assert sdm.max_registers == 80
    with pytest.raises(pf.ProfileError):
        pf.Profile({"name": "x", "registers": [], "quirks": ["no-such-quirk"]})


def test_unknown_profile_and_register_are_typed():
    with pytest.raises(LocalProtocolError):
        pf.load("acme-nothing")
    with pytest.raises(LocalProtocolError):
        pf.load("generic").register("9.9.9.9.9.9")


def test_generic_plan_is_one_request():
    g = pf.load("generic")
    blocks = g.plan(g.registers + [g.identity])
    assert len(blocks) == 1 and blocks[0].count == 53


def test_eastron_plan_respects_spaces_and_quirk():
    sdm = pf.load("eastron-sdm630")
    blocks = sdm.plan(sdm.registers)
    assert [(b.table, b.start, b.count) for b in blocks] == [("input", 0, 80),
                                                             ("input", 0x156, 2)]
    one = sdm.plan([sdm.register("1.0.14.7.0.255"), sdm.register("1.0.1.8.0.255")])
    assert [(b.start, b.count) for b in one] == [(0x46, 4)]


def test_float_kwh_read_at_declared_resolution():
    reg = pf.load("eastron-sdm630").register("1.0.1.8.0.255")
    assert (reg.raw_unit, reg.unit, reg.decimals, reg.exponent) == ("kWh", "Wh", 2, 1)
    # 12345.67 kWh as the meter's float32: not exact in binary, exact after rounding.
    words = list(struct.unpack(">2H", struct.pack(">f", 12345.67)))
    assert reg.decode(words) == 12345670
    assert isinstance(reg.decode(words), int)
    assert reg.encode(12345678) == words           # the counter holds whole 10 Wh


def test_generic_integer_types():
    g = pf.load("generic")
    v = g.register("1.0.32.7.0.255")
    assert v.decode(v.encode(230.1)) == 230.1
    p = g.register("1.0.21.7.0.255")
    assert p.encode(-5) == [0xFFFF, 0xFFFB] and p.decode([0xFFFF, 0xFFFB]) == -5
    e = g.register("1.0.1.8.0.255")
    assert e.decode(e.encode(2**40 + 7)) == 2**40 + 7
    w = pf.Register("x", "input", 0, "u32", "Wh", word_order="little")
    assert w.encode(0x12345678) == [0x5678, 0x1234] and w.decode([0x5678, 0x1234]) == 0x12345678


def test_nan_register_is_an_error():
    reg = pf.load("eastron-sdm120").register("1.0.32.7.0.255")
    with pytest.raises(ValueError):
        reg.decode([0x7FC0, 0])


@pytest.mark.parametrize("name", ["generic", "eastron-sdm630", "eastron-sdm120"])
@given(index=st.integers(1, 64), hours=st.integers(0, 24 * 60), minute=st.integers(0, 59))
@settings(max_examples=25, deadline=None)
def test_model_values_survive_the_register_map(name, index, hours, minute):
    prof = pf.load(name)
    m = MeterModel(index, 7)
    ts = ORIGIN + hours * 3600 + minute * 60
    vals = m.registers(ts)
    for reg in prof.registers:
        if reg.derived:
            continue
        got = reg.decode(reg.encode(vals[reg.obis]))
        want = vals[reg.obis]
        if reg.exponent > 0:            # float kWh at 0.01 kWh: whole 10 Wh
            want = want // 10 ** reg.exponent * 10 ** reg.exponent
        assert got == want, reg
        assert type(got) is type(want), reg


def test_site_profile_file_gets_the_models_quirks(tmp_path):
    import json

    data = json.load(open(pf.os.path.join(pf.PROFILE_DIR, "eastron-sdm630.json")))
    data["max_registers"] = 125
    f = tmp_path / "my-sdm630.json"
    f.write_text(json.dumps(data))
    prof = pf.load(str(f))
    assert prof.name == "eastron-sdm630" and prof.max_registers == 80
    assert prof.quirks == ["eastron-max-40-parameters"]
