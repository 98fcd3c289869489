# Portable tests of the DLMS and IEC 62056-21 dissectors behind `wum dissect`
# (drivers.dlms.dissector, drivers.iec62056_21.dissector): a wrong check is
# decoded and flagged, COSEM values are shown readably. Plain functions and
# asserts so they run under pytest and in MicroPython.

from drivers.dlms.dissector import dissect as dlms_dissect
from drivers.iec62056_21.dissector import dissect as iec_dissect

# Published: Gyozo Kmethy's SNRM example; an Iskraemeco meter's GET-with-list
# answer (dlms-cosem tests, MIT); the LEM EM4T II manual's 0.9.2 answer block.
SNRM = bytes.fromhex("7ea00a00020023219318717e")
GET_LIST = bytes.fromhex("c403c10200091049534b3130333037373737363433363600090c07e5060304"
                         "0e091700ffc400")
BLOCK = b"\x020.9.2(130103)\x039"


def _flip(raw, i):
    b = bytearray(raw)
    b[i] ^= 1
    return bytes(b)


def test_hdlc_fcs_flagged_and_frame_still_decoded():
    doc = dlms_dissect(_flip(SNRM, -2))
    hd = doc["frames"][0]["hdlc"]
    assert hd["kind"] == "SNRM"
    assert hd["checks"] == [{"name": "fcs", "ok": False, "expected": "1871", "found": "1870"}]
    assert dlms_dissect(SNRM)["frames"][0]["hdlc"]["checks"][0]["ok"]


def test_iec_bcc_flagged_and_block_still_decoded():
    doc = iec_dissect(BLOCK[:-1] + b"8")
    msg = doc["messages"][0]
    assert msg["text"] == "0.9.2(130103)"
    assert msg["checks"] == [{"name": "bcc", "ok": False, "expected": "39", "found": "38"}]


def test_visible_string_and_date_time_readable():
    name, clock = dlms_dissect(GET_LIST)["apdu"]["results"]
    assert name["text"] == "ISK1030777764366"
    dt = clock["cosem-date-time"]
    assert dt["text"] == "2021-06-03 14:09:23.00 UTC+01:00 status 0x00"
    assert dt["utc"] == "2021-06-03T13:09:23Z"
