"""IEC 62056-21 portable core: frames, framer, data sets, profile, state machine.

Plain ``def test_*`` with ``assert`` only: runs under pytest and MicroPython.
Vectors from pwitab/iec62056-21 tests (BSD-3-Clause) and IEC 62056-21:2002 §6.3.
"""

from drivers.iec62056_21.core import (
    AWAIT_DATA,
    AWAIT_ID,
    AWAIT_P0,
    AWAIT_REPLY,
    DONE,
    IDENTIFIED,
    IDLE,
    NEED_DATA,
    PROGRAMMING,
    BaudChange,
    Connection,
)
from drivers.iec62056_21.dataset import Readout, decimal, obis_of, parse_line, quantity, registers
from drivers.iec62056_21.errors import BccError, IecProtocolError, IecUsageError
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import (
    Ack,
    Block,
    Break,
    Command,
    Identification,
    Nak,
    OptionSelect,
    Request,
    bcc,
)
from drivers.iec62056_21.profile import (
    ProfileSection,
    clock_texts,
    clock_value,
    days_from_civil,
    epoch,
    format_logbook,
    format_profile,
    parse_logbook,
    parse_profile,
    parse_request,
    parse_stamp,
    request_text,
    stamp,
)
from drivers.iec62056_21.quirks import Quirk, QuirkRegistry

VECTORS = [
    b"/?45678903!\r\n",
    b"/?!\r\n",
    b"/Els6\\2EK280\r\n",
    b"\x01P0\x02(1234567)\x03P",
    b"\x01R1\x021.8.0(1)\x03k",
    b"\x01B0\x03q",
    b"\x023:171.0(0)\x03\x12",
    b'\x023:14(314*kWh)4:15(415*kWh)\r\n!\r\n\x03"',
    bytes([1, 0x57, 0x32, 2]) + b"C003(910324092239)" + bytes([3, 0x1B]),
]


def _frames(chunks, role="meter"):
    f = Framer(role)
    f.ack_may_be_option = False
    out = []
    for c in chunks:
        f.feed(c)
        while True:
            m = f.next_frame()
            if m is None:
                break
            out.append(m)
    return out


def test_bcc_of_published_frames():
    assert bcc(b"P0\x02(1234567)\x03") == ord("P")
    assert bcc(b"R1\x021.8.0(1)\x03") == ord("k")
    assert bcc(b"B0\x03") == ord("q")


def test_vectors_whole_halves_and_byte_by_byte_reencode():
    for v in VECTORS:
        whole = _frames([v])
        halves = _frames([v[:len(v) // 2], v[len(v) // 2:]])
        single = _frames([v[i:i + 1] for i in range(len(v))])
        assert len(whole) == 1
        assert whole == halves == single
        assert whole[0].to_bytes() == v


def test_stream_of_all_vectors_with_noise_between():
    stream = b""
    for v in VECTORS:
        stream += b"\x00\xff" + v
    f = Framer("meter")
    f.ack_may_be_option = False
    out = []
    f.feed(stream)
    while True:
        try:
            m = f.next_frame()
        except IecProtocolError:
            continue
        if m is None:
            break
        out.append(m.to_bytes())
    assert out == VECTORS
    assert f.discarded == 2 * len(VECTORS)


def test_noise_that_opens_a_line_does_not_swallow_the_request():
    f = Framer("meter")
    f.feed(b"/\x7fA3/?1!\r\n")          # '/' in another protocol's binary frame
    try:
        f.next_frame()
        raise AssertionError("noise line accepted")
    except IecProtocolError:
        pass
    assert f.next_frame() == Request("1")


def test_bad_bcc_is_typed_and_framer_recovers():
    f = Framer("client")
    f.feed(b"\x023:171.0(0)\x03\x11" + b"\x023:171.0(0)\x03\x12")
    try:
        f.next_frame()
        raise AssertionError("no error")
    except BccError as e:
        assert e.raw == "02333a3137312e302830290311"
    assert f.next_frame() == Block("3:171.0(0)")


def test_identification_fields():
    ident = Identification.from_bytes(b"/ISk5MT174-0001\r\n")
    assert (ident.manufacturer, ident.baud_char, ident.model) == ("ISk", "5", "MT174-0001")
    assert ident.mode == "C" and ident.baud == 9600
    assert Identification("ABC", "E", "X").mode == "B"
    assert Identification("ABC", "E", "X").baud == 9600
    assert Identification("ABC", "Z", "X").mode == "A"
    assert Identification.from_bytes(b"/Els6\\2EK280\r\n").enhanced == ["2"]


def test_option_select_and_ack_roles():
    assert OptionSelect("5", "1").to_bytes() == b"\x06051\r\n"
    assert _frames([b"\x06050\r\n"]) == [OptionSelect("5", "0")]
    f = Framer("meter")
    f.feed(b"\x06")
    assert f.next_frame() is None             # may be the start of an option select
    f.ack_may_be_option = False
    assert f.next_frame() == Ack()
    c = Framer("client")
    c.feed(b"\x06\x15")
    assert c.next_frame() == Ack() and c.next_frame() == Nak()


def test_dataset_grammar_and_obis():
    sets = parse_line("1.6.0(02.500*kW)(2306151530)0-0:96.3.10(1)")
    assert [s.address for s in sets] == ["1.6.0", "0-0:96.3.10"]
    assert sets[0].values == [("02.500", "kW"), ("2306151530", None)]
    assert str(obis_of("1.8.0")) == "1.0.1.8.0.255"
    assert str(obis_of("1-0:32.7.0")) == "1.0.32.7.0.255"
    assert str(obis_of("F.F")) == "0.0.97.97.0.255"
    assert str(obis_of("C.1.0")) == "0.0.96.1.0.255"
    assert str(obis_of("1.8.0*12")) == "1.0.1.8.0.12"
    assert obis_of("P.01") is not None and obis_of("vendor(x)") is None
    assert decimal("-0012.50") == (-1250, -2) and decimal("12a") is None
    assert quantity("0012345.678", "kWh") == (12345678, "Wh")
    assert quantity("230.1", "V") == (230.1, "V")
    assert quantity("-0.500", "kW") == (-500, "W")


def test_readout_roundtrip_and_registers():
    text = "0.0.0(12345678)\r\n1.8.0(0001234.567*kWh)\r\n32.7.0(230.1*V)\r\n!\r\n"
    ro = Readout.from_text(text)
    assert ro.complete and ro.to_text() == text
    regs = registers(ro.datasets())
    assert regs == [("1.0.1.8.0.255", 1234567, "Wh"), ("1.0.32.7.0.255", 230.1, "V")]
    assert ro.find("0.0.0").value == "12345678"
    r1 = Readout.from_text("1.8.0(0001234.567*kWh)")
    assert not r1.complete and r1.to_text() == "1.8.0(0001234.567*kWh)"


def test_malformed_data_sets_raise_typed_errors():
    for bad in ("1.8.0(12", "1.8.0)", "1.8.0(1)x", "a!b(1)", "1.8.0(1*k*Wh)"):
        try:
            Readout.from_text(bad)
            raise AssertionError(bad)
        except IecProtocolError:
            pass


def test_dates_and_stamps():
    assert days_from_civil(1970, 1, 1) == 0
    assert epoch(2026, 6, 1) == 1780272000
    assert stamp(1780272000 + 3600) == "2606010100"
    assert parse_stamp("2606010100") == 1780275600
    assert parse_stamp("12606010100") == 1780275600
    assert parse_stamp("0260601010000") == 1780275600
    assert clock_texts(1780275661) == ("26-06-01", "01:01:01")
    assert clock_value("26-06-01", "01:01:01") == 1780275661
    assert clock_value("260601", "010101") == 1780275661


def test_profile_roundtrip():
    sec = ProfileSection("P.01", 1780275600, 0, 60, [("1.8.0", "kWh"), ("3.8.0", "kvarh")],
                         [["0000001.000", "0000000.500"], ["0000002.000", "0000000.750"]])
    text = format_profile([sec])
    assert text.startswith("P.01(0260601010000)(00)(60)(2)(1.8.0)(kWh)(3.8.0)(kvarh)\r\n")
    back = parse_profile(text)
    assert format_profile(back) == text
    rows = back[0].profile_rows()
    assert [r.ts for r in rows] == [1780275600, 1780279200]
    assert rows[1].values == {"1.0.1.8.0.255": 2000, "1.0.3.8.0.255": 750}
    req = request_text(1780275600, 1780279200)
    assert req == "P.01(2606010100;2606010200)"
    assert parse_request(req) == ("P.01", 1780275600, 1780279200)


def _feed(conn, data):
    conn.receive_data(data)
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)


def test_mode_c_readout_session_with_baud_switch():
    conn = Connection(quirks=QuirkRegistry())
    assert conn.send(Request("12345678")) == b"/?12345678!\r\n"
    assert conn.state == AWAIT_ID
    # Our own echo is ignored; the identification moves us on.
    evs = _feed(conn, b"/?12345678!\r\n/WUM5IEC-SIM\r\n")
    assert evs == [Identification("WUM", "5", "IEC-SIM")] and conn.state == IDENTIFIED
    opt = conn.option_select(False)
    assert conn.send(opt) == b"\x06050\r\n"
    assert conn.next_event() == BaudChange(9600) and conn.state == AWAIT_DATA
    blk = Block("1.8.0(1*kWh)\r\n!\r\n").to_bytes()
    evs = _feed(conn, blk[:5])
    assert evs == []
    evs = _feed(conn, blk[5:])
    assert evs == [Block("1.8.0(1*kWh)\r\n!\r\n"), BaudChange(300)]
    assert conn.state == DONE and conn.line_baud == 300


def test_programming_session_transitions():
    conn = Connection(quirks=QuirkRegistry())
    conn.send(Request(""))
    _feed(conn, b"/WUM5IEC-SIM\r\n")
    conn.send(conn.option_select(True))
    evs = _feed(conn, Command("P", "0", "(12345678)").to_bytes())
    assert evs == [BaudChange(9600), Command("P", "0", "(12345678)")]
    assert conn.state == PROGRAMMING
    conn.send(Command("P", "1", "(00000000)"))
    assert conn.state == AWAIT_REPLY
    assert _feed(conn, b"\x06") == [Ack()] and conn.state == PROGRAMMING
    conn.send(Command("R", "1", "1.8.0()"))
    try:
        _feed(conn, b"\x021.8.0(1)\x03\x00")
        raise AssertionError("bad BCC accepted")
    except BccError:
        assert conn.state == AWAIT_REPLY       # unchanged: we may NAK
    conn.send(Nak())
    assert _feed(conn, Block("1.8.0(1)").to_bytes()) == [Block("1.8.0(1)")]
    assert conn.state == PROGRAMMING
    conn.send(Break())
    assert conn.state == IDLE and conn.next_event() == BaudChange(300)


def test_usage_and_remote_errors():
    conn = Connection(quirks=QuirkRegistry())
    try:
        conn.send(Command("R", "1", "1.8.0()"))
        raise AssertionError("sent R1 in IDLE")
    except IecUsageError:
        pass
    conn.send(Request(""))
    try:
        _feed(conn, Block("x(1)").to_bytes())
        raise AssertionError("data before identification accepted")
    except IecProtocolError:
        assert conn.state == AWAIT_ID


def test_mode_b_switches_without_ack_and_quirk_picks_speed():
    conn = Connection(quirks=QuirkRegistry())
    conn.send(Request(""))
    assert _feed(conn, b"/ABCEX1\r\n") == [Identification("ABC", "E", "X1"), BaudChange(9600)]
    assert conn.state == AWAIT_DATA
    reg = QuirkRegistry([Quirk("WUM", "IEC-LEGACY", 300)])
    conn = Connection(quirks=reg)
    conn.send(Request(""))
    _feed(conn, b"/WUM5IEC-LEGACY-2\r\n")
    assert conn.quirk is not None
    opt = conn.option_select(True)
    assert opt.to_bytes() == b"\x06001\r\n"
    conn.send(opt)
    assert conn.next_event() is NEED_DATA and conn.line_baud == 300
    assert conn.state == AWAIT_P0
    capped = Connection(quirks=QuirkRegistry(), max_baud=4800)
    capped.send(Request(""))
    _feed(capped, b"/WUM6X\r\n")
    assert capped.option_select().baud_char == "4"


def test_reaction_time_from_identification():
    conn = Connection(quirks=QuirkRegistry())
    conn.send(Request(""))
    assert conn.reaction_time == 0.2
    _feed(conn, b"/ISk5MT174\r\n")
    assert conn.reaction_time == 0.02
    conn.start_over()
    conn.send(Request(""))
    _feed(conn, b"/WUM5X\r\n")
    assert conn.reaction_time == 0.2


def test_learned_quirk_is_most_specific():
    reg = QuirkRegistry([Quirk("WUM", "", 2400)])
    ident = Identification("WUM", "5", "ODD-7")
    assert reg.lookup(ident).line_baud == 2400
    reg.learn_line_baud(ident, 300)
    assert reg.lookup(ident).line_baud == 300 and reg.lookup(ident).learned
    assert reg.lookup(Identification("XYZ", "5", "ODD-7")) is None


def test_logbook_roundtrip():
    text = format_logbook([(1780275600, 1), (1780275690, 2), (1780279200, 40)])
    assert text.startswith("P.98(0260601010000)(00)()(1)(96.11.0)()(1)\r\n")
    events = parse_logbook(text)
    assert [(e.ts, e.code) for e in events] == [(1780275600, 1), (1780275690, 2), (1780279200, 40)]
    assert parse_logbook("") == []
    assert [e.code for e in parse_logbook("P.98(0260601010000)(0080)()(0)\r\n")] == [0x80]
    try:
        parse_logbook("P.98(0260601010000)(00)()(2)(96.11.0)()(1)\r\n")
        raise AssertionError("width mismatch accepted")
    except IecProtocolError:
        pass
