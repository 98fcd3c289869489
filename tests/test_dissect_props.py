"""Hypothesis properties of the three dissectors behind ``wum dissect``: any
bytes (and any keys) give a JSON-able document, never an exception; every
check is consistent (ok exactly when expected == found); and no single-byte
corruption of a published capture passes as clean."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.field import check_summary
from drivers import dlms, iec62056_21, modbus
from drivers.dlms import hdlc

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
noise = st.binary(max_size=400)
key = st.binary(min_size=16, max_size=16)
CIPHERED_TAGS = st.sampled_from([0x21, 0x28, 0xC8, 0xCC, 0xD0, 0xD4, 0xDB, 0xDC])

SNRM = bytes.fromhex("7ea00a00020023219318717e")                     # Kmethy
AARQ = bytes.fromhex("7ea02e0002002321107ecbe6e600601da109060760857405080101be10040e01000000"
                     "065f1f040000301dffffd4c57e")                  # Kmethy
W2 = bytes.fromhex("01573202433030332839313033323430393232333929031b")  # Elster LIS-200
BLOCK = b"\x020.9.2(130103)\x039"                                    # LEM manual
SDM = bytes.fromhex("010404436633341b38")                            # EASTRON manual


def consistent(doc):
    json.dumps(doc)
    summary = check_summary(doc)
    for failure in summary["failures"]:
        assert failure["expected"] != failure["found"]
    return summary


def clean(doc):
    """Nothing flagged, nothing left over: what an untouched capture gives."""
    return (consistent(doc)["failed"] == 0 and not doc.get("errors") and not doc.get("trailing")
            and not doc.get("unparsed") and not doc.get("skipped_bytes")
            and not doc.get("unframed_tail") and "error" not in doc
            and "error" not in doc.get("apdu", {}))


@FAST
@given(noise)
def test_every_dissector_takes_any_bytes(data):
    for run in (dlms.dissect, iec62056_21.dissect, modbus.dissect):
        assert isinstance(run(data), dict)
        consistent(run(data))
    consistent(dlms.dissect(b"\x7e\xa0" + data))


@FAST
@given(CIPHERED_TAGS, noise, key, key, st.binary(min_size=8, max_size=8))
def test_dlms_dissector_takes_any_ciphered_bytes_and_keys(tag, body, ek, ak, title):
    raw = bytes((tag, len(body) & 0x7F)) + body
    consistent(dlms.dissect(raw, ek=ek, ak=ak, system_title=title))
    consistent(dlms.dissect(raw, ek=ek, ak=ak))


@FAST
@given(st.binary(min_size=1, max_size=200), st.sampled_from([hdlc.I, hdlc.UI]), st.booleans())
def test_dlms_dissector_takes_any_apdu_in_good_frames(info, kind, segmented):
    frame = hdlc.Frame(hdlc.server_address(1, 17), hdlc.client_address(16),
                       hdlc.control(kind), info, segmented).to_bytes()
    doc = dlms.dissect(frame * 2, ek=bytes(16), ak=bytes(16))
    assert consistent(doc)["failed"] == 0 and len(doc["frames"]) == 2


def _corruptions(capture):
    return st.tuples(st.integers(0, len(capture) - 1), st.integers(1, 255))


def _corrupt(capture, where):
    raw = bytearray(capture)
    raw[where[0]] ^= where[1]
    return bytes(raw)


def test_untouched_captures_are_clean():
    assert clean(dlms.dissect(SNRM)) and clean(dlms.dissect(AARQ + SNRM))
    assert clean(iec62056_21.dissect(W2 + BLOCK)) and clean(modbus.dissect(SDM))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_single_byte_corruption_of_an_hdlc_capture_passes_as_clean(data):
    capture = data.draw(st.sampled_from([SNRM, AARQ, AARQ + SNRM]))
    assert not clean(dlms.dissect(_corrupt(capture, data.draw(_corruptions(capture)))))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_single_byte_corruption_of_an_iec_block_passes_as_clean(data):
    capture = data.draw(st.sampled_from([W2, BLOCK, W2 + BLOCK]))
    assert not clean(iec62056_21.dissect(_corrupt(capture, data.draw(_corruptions(capture)))))


def test_no_single_byte_corruption_of_a_modbus_frame_passes_as_clean():
    for i in range(len(SDM)):                       # all of them: 9 bytes x 255 values
        for mask in range(1, 256):
            assert not clean(modbus.dissect(_corrupt(SDM, (i, mask)))), (i, mask)
