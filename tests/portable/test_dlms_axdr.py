# Portable tests of A-XDR data and the COSEM date-time (drivers.dlms.axdr).

from drivers import LocalProtocolError, RemoteProtocolError
from drivers.dlms import axdr
from drivers.dlms.axdr import DateTime

# (value, encoding) pairs; encodings as in Blue Book 4.1.5 / dlms-cosem 21.3.2 output
CASES = [
    ((axdr.NULL, None), "00"),
    ((axdr.BOOLEAN, True), "03ff"),
    ((axdr.BOOLEAN, False), "0300"),
    ((axdr.BIT_STRING, (10, b"\xa5\xc0")), "040aa5c0"),
    ((axdr.DOUBLE_LONG, -2), "05fffffffe"),
    ((axdr.DOUBLE_LONG_UNSIGNED, 4000000000), "06ee6b2800"),
    ((axdr.OCTET_STRING, b"WUM12345"), "090857554d3132333435"),
    ((axdr.VISIBLE_STRING, "ABC"), "0a03414243"),
    ((axdr.UTF8_STRING, "Zähler"), "0c075ac3a4686c6572"),
    ((axdr.BCD, 0x42), "0d42"),
    ((axdr.INTEGER, -3), "0ffd"),
    ((axdr.LONG, -300), "10fed4"),
    ((axdr.UNSIGNED, 255), "11ff"),
    ((axdr.LONG_UNSIGNED, 65535), "12ffff"),
    ((axdr.LONG64, -2 ** 40), "14ffffff0000000000"),
    ((axdr.LONG64_UNSIGNED, 2 ** 63), "158000000000000000"),
    ((axdr.ENUM, 30), "161e"),
    ((axdr.FLOAT32, 1.5), "173fc00000"),
    ((axdr.FLOAT64, -0.25), "18bfd0000000000000"),
    ((axdr.DATE_TIME, bytes.fromhex("07ea060101000000ff800000")), "1907ea060101000000ff800000"),
    ((axdr.DATE, bytes.fromhex("07ea0601ff")), "1a07ea0601ff"),
    ((axdr.TIME, bytes.fromhex("0c1e00ff")), "1b0c1e00ff"),
    ((axdr.DONT_CARE, None), "ff"),
    ((axdr.STRUCTURE, [(axdr.INTEGER, -3), (axdr.ENUM, 33)]), "02020ffd1621"),
    ((axdr.ARRAY, [(axdr.LONG_UNSIGNED, 1), (axdr.LONG_UNSIGNED, 65535)]), "010212000112ffff"),
    ((axdr.COMPACT_ARRAY, ((axdr.STRUCTURE, [(axdr.LONG_UNSIGNED, None), (axdr.INTEGER, None)]),
                           [(axdr.STRUCTURE, [(axdr.LONG_UNSIGNED, 7), (axdr.INTEGER, -1)]),
                            (axdr.STRUCTURE, [(axdr.LONG_UNSIGNED, 8), (axdr.INTEGER, 2)])])),
     "13020212 0f06 0007ff 000802".replace(" ", "")),
]


def test_every_type_encodes_and_decodes():
    for value, hexed in CASES:
        raw = bytes.fromhex(hexed)
        assert axdr.encode(value) == raw, (value, axdr.encode(value).hex())
        assert axdr.decode(raw) == value, hexed


def test_long_lengths():
    big = (axdr.OCTET_STRING, bytes(300))
    raw = axdr.encode(big)
    assert raw[:4] == b"\x09\x82\x01\x2c"
    assert axdr.decode(raw) == big
    assert axdr.encode_length(127) == b"\x7f" and axdr.encode_length(128) == b"\x81\x80"


def test_plain_strips_tags():
    v = (axdr.STRUCTURE, [(axdr.INTEGER, -1), (axdr.ARRAY, [(axdr.ENUM, 1)])])
    assert axdr.plain(v) == [-1, [1]]


def test_truncated_or_bad_data_is_a_remote_error():
    for hexed in ("", "06000102", "0902aa", "0203ff", "fe", "02820101", "0181", "0c02c328",
                  "13010005", "010000"):
        try:
            axdr.decode(bytes.fromhex(hexed))
        except RemoteProtocolError:
            continue
        raise AssertionError("accepted %s" % hexed)


def test_values_that_do_not_fit_are_a_local_error():
    for value in ((axdr.UNSIGNED, 256), (axdr.DATE_TIME, b"\x00"), ("x", 1), (99, 1)):
        try:
            axdr.encode(value)
        except LocalProtocolError:
            continue
        raise AssertionError("encoded %r" % (value,))


def test_date_time_epoch_with_deviation():
    # 2026-06-01 00:00 UTC, shown in CET (UTC+1: deviation -60 in the DLMS sign)
    dt = DateTime.from_epoch(1780272000, deviation=-60)
    assert (dt.year, dt.month, dt.day, dt.hour, dt.minute) == (2026, 6, 1, 1, 0)
    assert dt.dow == 1                      # a Monday
    assert dt.to_bytes().hex() == "07ea06010101000000ffc400"
    assert DateTime.from_bytes(dt.to_bytes()) == dt
    assert dt.to_epoch() == 1780272000
    assert DateTime.from_bytes(bytes.fromhex("07ea060101010000008000" + "00")).to_epoch() == \
        1780272000 + 3600                   # deviation not specified: taken as UTC


def test_date_time_across_years_and_leap_days():
    for ts in (0, 951782400, 1709164800, 4102444799, 1780272000 + 86399):
        assert DateTime.from_epoch(ts).to_epoch() == ts
        assert DateTime.from_epoch(ts, 120).to_epoch() == ts


def test_unspecified_date_time_is_not_a_point_in_time():
    raw = bytes.fromhex("ffffffffffffffffff800000")
    try:
        DateTime.from_bytes(raw).to_epoch()
    except RemoteProtocolError:
        return
    raise AssertionError("unspecified date-time gave a time")
