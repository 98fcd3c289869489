"""Published captures (``tests/vectors/captures/``, provenance in its README)
through ``wum dissect --json``: each decodes to what its source states, with
every check passing; the same capture with one byte of its last check flipped
is still decoded, flagged at that check, and exits 3.

An oracle nobody here wrote: dlms-cosem's MIT-era test captures, the DLMS UA
examples, meter makers' manuals (LEM/EMH, EASTRON, KBR, DKS) and an Elster
LIS-200 capture.
"""

import json
import struct
from pathlib import Path

import pytest

from drivers.dlms import hdlc
from tests.test_dissect_checks import CHECK_FAILED, dissect

CAPTURE_DIR = Path(__file__).parent / "vectors" / "captures"
CAPTURES = [(f.stem, c) for f in sorted(CAPTURE_DIR.glob("*.json"))
            for c in json.loads(f.read_text())["captures"]]
IDS = ["%s/%s" % (stem, c["name"]) for stem, c in CAPTURES]
CHECK_OF = {"hdlc": "fcs", "iec62056-21": "bcc", "modbus-rtu": "crc"}


def at(doc, path):
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def args(capture, hexstr=None, protocol=None):
    out = ["--protocol", protocol or capture["protocol"]]
    for name, value in capture.get("keys", {}).items():
        out += ["--" + name, value]
    return out + [hexstr or capture["hex"]]


def test_every_capture_names_its_source_and_licence():
    for f in CAPTURE_DIR.glob("*.json"):
        doc = json.loads(f.read_text())
        assert doc["source"] and doc["licence"], f.name
        for c in doc["captures"]:
            assert c["where"] and c["stated"], c["name"]
    readme = (CAPTURE_DIR / "README.md").read_text()
    assert all(f.name in readme for f in CAPTURE_DIR.glob("*.json"))


@pytest.mark.parametrize("stem,capture", CAPTURES, ids=IDS)
def test_capture_decodes_as_its_source_states(stem, capture):
    rc, doc = dissect(*args(capture))
    assert rc == 0 and doc["summary"]["failed"] == 0, doc["summary"]
    if capture["protocol"] != "apdu" or capture.get("keys"):
        assert doc["summary"]["checks"] >= 1
    assert not doc.get("errors") and not doc.get("unparsed") and not doc.get("trailing")
    assert "error" not in doc.get("apdu", {})
    for path, value in {**capture["stated"], **capture.get("derived", {})}.items():
        assert at(doc, path) == value, path
    if "float32" in capture:
        regs = doc["frames"][0]["registers"]
        floats = struct.unpack(">%df" % (len(regs) // 2), struct.pack(">%dH" % len(regs), *regs))
        stated = capture["float32"] if isinstance(capture["float32"], list) else [
            capture["float32"]]
        assert floats == pytest.approx(stated, abs=0.005)   # the manuals round to 2-3 decimals


def _variants(capture):
    """(good hex, hex with one check byte flipped, protocol, name of that check)."""
    raw, protocol = bytearray.fromhex(capture["hex"]), capture["protocol"]
    if protocol == "apdu" and not capture.get("keys"):
        # no check of its own: an I frame we build around the published APDU
        raw = bytearray(hdlc.Frame(hdlc.server_address(1, 17), hdlc.client_address(16),
                                   hdlc.control(hdlc.I), hdlc.LLC_REQUEST + raw).to_bytes())
        protocol = "hdlc"
    good = raw.hex()
    if protocol == "apdu":
        raw[-1] ^= 0x01                             # the last byte of the GCM tag
    elif protocol == "hdlc":
        raw[-2] ^= 0x01                             # FCS of the last frame, before the flag
    else:
        assert protocol == "modbus-rtu" or raw[-2] in (0x03, 0x04)
        raw[-1] ^= 0x01                             # BCC after ETX/EOT, or the CRC's high byte
    return good, raw.hex(), protocol, CHECK_OF.get(protocol, "gcm-tag")


@pytest.mark.parametrize("stem,capture", CAPTURES, ids=IDS)
def test_bad_check_variant_is_decoded_and_flagged(stem, capture):
    good_hex, bad_hex, protocol, check = _variants(capture)
    assert dissect(*args(capture, good_hex, protocol))[0] == 0
    _, good = dissect(*args(capture, good_hex, protocol))
    rc, doc = dissect(*args(capture, bad_hex, protocol))
    assert rc == CHECK_FAILED
    failed = doc["summary"]["failures"]
    assert [f["name"] for f in failed] == [check], failed
    assert failed[0]["expected"] != failed[0]["found"]
    for key in ("frames", "messages"):              # nothing dropped: every unit still decoded
        if key in good:
            assert len(doc[key]) == len(good[key])
