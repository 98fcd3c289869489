"""``wum dissect`` flags every bad check and shows what a field engineer
needs to read (issue 9, failure 4). Each test here failed on the code before
the fix: a wrong FCS/HCS, BCC or CRC was accepted with exit 0 and nothing
flagged, and visible strings, date-times, range descriptors and a ciphered
AARQ's system title and dedicated key were shown as hex or not at all.

Captures are published ones (``tests/vectors/captures/``) with one byte of a
check flipped, or frames we build ourselves where a test says so.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

from agent import cli, field
from drivers.dlms import hdlc, security, xdlms
from drivers.dlms.cosem import obis_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNRM = "7ea00a00020023219318717e"                  # Kmethy's SNRM example
AARQ_FRAME = ("7ea02e0002002321107ecbe6e600601da109060760857405080101be10040e01000000065f1f"
              "040000301dffffd4c57e")               # Kmethy's AARQ example
GREEN_BOOK_AARQ = (                                 # Green Book glo-ciphered AARQ
    "6066a109060760857405080103a60a04084d4d4d0000bc614e8a0207808b0760857405080201ac0a8008"
    "3132333435363738be34043221303001234567801302ff8a7874133d414ced25b42534d28db004772060"
    "6b175bd52211be6841db204d39ee6fdb8e356855")
EK, AK = "000102030405060708090a0b0c0d0e0f", "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
TITLE = "4d4d4d0000bc614e"
DEDICATED = "00112233445566778899aabbccddeeff"
ISKRA_GET_LIST = "c403c10200091049534b3130333037373737363433363600090c07e50603040e091700ffc400"
RANGE_GET = ("c001c100070100630100ff0201010204020412000809060000010000ff0f02120000090c07e10a01"
             "0700000000ffc480090c07e10a010701000000ffc4800100")
SDM320Y_RESPONSE = "010404436633341b38"        # EASTRON SDM320Y manual: 230.2 V
CHECK_FAILED = 3                               # the exit status ``wum dissect --help`` documents


def dissect(*args):
    """(exit status, document) of ``wum dissect --json ARGS`` run in-process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["dissect", "--json", *args])
    return rc, json.loads(out.getvalue())


def flip(hexstr, index, mask=0x01):
    raw = bytearray(bytes.fromhex(hexstr))
    raw[index] ^= mask
    return raw.hex()


def checks_of(layer):
    return {c["name"]: c for c in layer["checks"]}


def test_hdlc_wrong_fcs_is_decoded_and_flagged():
    rc, doc = dissect(flip(SNRM, -2))
    assert rc == CHECK_FAILED
    (frame,) = doc["frames"]
    assert frame["hdlc"]["kind"] == "SNRM" and frame["hdlc"]["dest_address"] == [1, 17]
    fcs = checks_of(frame["hdlc"])["fcs"]
    assert (fcs["ok"], fcs["expected"], fcs["found"]) == (False, "1871", "1870")
    assert doc["summary"]["failed"] == 1
    assert doc["summary"]["failures"][0]["where"] == "frames[0].hdlc"
    assert doc["errors"][0]["reason"] == "HDLC FCS mismatch"
    assert dissect(SNRM)[0] == 0


def test_hdlc_wrong_hcs_still_shows_the_apdu():
    rc, doc = dissect(flip(AARQ_FRAME, 10))         # the HCS's second byte
    assert rc == CHECK_FAILED
    (frame,) = doc["frames"]
    got = checks_of(frame["hdlc"])
    assert not got["hcs"]["ok"] and got["hcs"]["expected"] == "7ecb"
    assert not got["fcs"]["ok"]                     # the FCS covers the HCS too
    assert frame["apdu"]["type"] == "AARQ"
    assert frame["apdu"]["initiate"]["conformance"] == 12317


def test_hdlc_wrong_length_falls_back_to_the_next_flag():
    bad = flip(SNRM, 2, 0x02)                       # length 0x0a -> 0x08
    rc, doc = dissect(bad + SNRM)
    assert rc == CHECK_FAILED
    first, second = doc["frames"]
    length = checks_of(first["hdlc"])["length"]
    assert (length["ok"], length["expected"], length["found"]) == (False, "10", "8")
    assert checks_of(second["hdlc"])["fcs"]["ok"] and second["hdlc"]["kind"] == "SNRM"


def test_iec_wrong_bcc_is_decoded_and_flagged():
    block = b"\x02" + b"0.9.2(130103)\x03" + b"8"    # LEM manual: the BCC is '9'
    rc, doc = dissect("--protocol", "iec62056-21", block.hex())
    assert rc == CHECK_FAILED
    (msg,) = doc["messages"]
    assert msg["text"] == "0.9.2(130103)" and msg["datasets"][0]["address"] == "0.9.2"
    assert msg["checks"] == [{"name": "bcc", "ok": False, "expected": "39", "found": "38"}]
    assert doc["errors"][0]["message"] == 0
    rc, doc = dissect("--protocol", "iec62056-21", (block[:-1] + b"9").hex())
    assert rc == 0 and doc["messages"][0]["checks"][0]["ok"]


def test_modbus_wrong_crc_is_decoded_and_flagged():
    rc, doc = dissect(flip(SDM320Y_RESPONSE, -1))   # guessed as Modbus, not IEC (SOH)
    assert rc == CHECK_FAILED
    (frame,) = doc["frames"]
    assert frame["registers"] == [0x4366, 0x3334] and frame["crc"] == "bad"
    assert frame["checks"] == [{"name": "crc", "ok": False, "expected": "1b38",
                                "found": "1b39"}]
    assert doc["error"] == "bad CRC" and doc["unparsed"] == 0


def test_get_with_list_shows_visible_strings_and_date_times():
    rc, doc = dissect(ISKRA_GET_LIST)
    assert rc == 0
    name, clock = doc["apdu"]["results"]
    assert name["text"] == "ISK1030777764366"
    dt = clock["cosem-date-time"]
    assert (dt["year"], dt["month"], dt["day"], dt["weekday"]) == (2021, 6, 3, 4)
    assert (dt["hour"], dt["minute"], dt["second"], dt["hundredths"]) == (14, 9, 23, 0)
    assert dt["deviation"] == -60 and dt["clock_status"] == {"value": 0, "flags": []}
    assert dt["utc"] == "2021-06-03T13:09:23Z"
    assert clock["date-time"] == 1622725763         # the key it always had stays


def test_date_time_not_specified_fields_are_null():
    raw = bytes.fromhex("07e30c1001073b28ff8000ff")  # dlms-cosem's UI push: no 1/100, deviation, status
    tagged = xdlms.GetResponse(xdlms.NORMAL, [(9, raw)]).to_bytes()
    dt = dissect(tagged.hex())[1]["apdu"]["results"][0]["cosem-date-time"]
    assert (dt["hundredths"], dt["deviation"], dt["clock_status"]) == (None, None, None)
    assert dt["text"] == "2019-12-16 07:59:40.??"


def test_range_descriptor_is_shown_field_by_field():
    rc, doc = dissect(RANGE_GET)
    (desc,) = doc["apdu"]["descriptors"]
    rng = desc["range_descriptor"]
    assert rng["restricting_object"] == {"class_id": 8, "obis": "0.0.1.0.0.255",
                                         "attribute": 2, "data_index": 0}
    assert rng["from"]["cosem-date-time"]["text"] == "2017-10-01 00:00:00.00 UTC+01:00 status 0x80"
    assert rng["to"]["cosem-date-time"]["hour"] == 1
    assert rng["from"]["cosem-date-time"]["clock_status"]["flags"] == ["dst"]
    assert rng["selected_values"] == []


def test_ciphered_aarq_with_keys_shows_title_and_dedicated_key():
    rc, doc = dissect("--ek", EK, "--ak", AK, GREEN_BOOK_AARQ)
    assert rc == 0
    aarq = doc["apdu"]
    assert aarq["calling_ap_title"]["system_title"] == TITLE
    assert aarq["calling_ap_title"]["manufacturer"] == "MMM"
    init = aarq["initiate"]
    assert init["checks"][0]["name"] == "gcm-tag" and init["checks"][0]["ok"]
    assert init["decrypted"]["type"] == "InitiateRequest"
    assert init["decrypted"]["dedicated_key"] == DEDICATED
    assert init["decrypted"]["max_pdu"] == 1200


def test_ciphered_aarq_without_keys_shows_the_system_title_in_clear():
    rc, doc = dissect(GREEN_BOOK_AARQ)
    aarq = doc["apdu"]
    assert aarq["calling_ap_title"] == {"system_title": TITLE, "manufacturer": "MMM",
                                        "device": "0000bc614e"}
    assert aarq["initiate"]["security"] == {"suite": 0, "authenticated": True,
                                            "encrypted": True, "broadcast_key": False,
                                            "compressed": False}
    assert "decrypted" not in aarq["initiate"]


def test_wrong_gcm_tag_is_flagged_and_the_text_still_shown():
    rc, doc = dissect("--ek", EK, "--ak", AK, flip(GREEN_BOOK_AARQ, -1))
    assert rc == CHECK_FAILED
    init = doc["apdu"]["initiate"]
    assert init["checks"][0] == {"name": "gcm-tag", "ok": False,
                                 "expected": "41db204d39ee6fdb8e356855",
                                 "found": "41db204d39ee6fdb8e356854"}
    assert init["decrypted"]["dedicated_key"] == DEDICATED


def _i_frame(apdu, client_to_server=True):
    """An I frame we build ourselves around an APDU (not a published capture)."""
    server, client = hdlc.server_address(1, 17), hdlc.client_address(16)
    dest, src = (server, client) if client_to_server else (client, server)
    llc = hdlc.LLC_REQUEST if client_to_server else hdlc.LLC_RESPONSE
    return hdlc.Frame(dest, src, hdlc.control(hdlc.I), llc + apdu).to_bytes()


def test_ded_ciphered_apdus_after_the_aarq_use_its_dedicated_key():
    # built by us: the Green Book AARQ, then a GET the client ciphers with the
    # dedicated key that AARQ carries, under the same system title
    ctx = security.SecurityContext(bytes.fromhex(EK), bytes.fromhex(AK), bytes.fromhex(TITLE),
                                   invocation_counter=0x01234568,
                                   dedicated_key=bytes.fromhex(DEDICATED))
    get = xdlms.GetRequest(xdlms.NORMAL, [xdlms.Descriptor(3, obis_bytes("1.0.1.8.0.255"), 2)])
    capture = _i_frame(bytes.fromhex(GREEN_BOOK_AARQ)) + _i_frame(ctx.encrypt(get.to_bytes()))
    rc, doc = dissect("--ek", EK, "--ak", AK, capture.hex())
    assert rc == 0
    ded = doc["frames"][1]["apdu"]
    assert ded["hex"][:2] == "d0" and ded["checks"][0]["ok"]
    assert ded["decrypted"]["descriptors"][0]["obis"] == "1.0.1.8.0.255"


def test_text_output_lists_failed_checks():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["dissect", flip(SNRM, -2)])
    assert rc == CHECK_FAILED
    assert "FAILED fcs at frames[0].hdlc: expected 1871, found 1870" in out.getvalue()
    assert "checks: 0 passed, 1 failed" in out.getvalue()


def test_exit_status_of_the_real_command_and_its_help():
    def wum(*args):
        return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    bad = wum("dissect", "--json", flip(SNRM, -2))
    assert bad.returncode == 3 and json.loads(bad.stdout)["summary"]["failed"] == 1
    assert wum("dissect", "--json", SNRM).returncode == 0
    helptext = wum("dissect", "--help").stdout
    assert "exit status" in helptext and "3  decoded, but at least one check failed" in helptext


def test_guess_layer_tells_a_bad_modbus_frame_from_iec():
    assert field.guess_layer(bytes.fromhex(flip(SDM320Y_RESPONSE, -1))) == "modbus-rtu"
    assert field.guess_layer(b"\x01B0\x03q") == "iec62056-21"
    assert field.guess_layer(b"\x020.9.2(130103)\x039") == "iec62056-21"
    assert field.guess_layer(b"\x06050\r\n") == "iec62056-21"


def test_check_summary_walks_every_layer():
    doc = {"frames": [{"hdlc": {"checks": [{"name": "fcs", "ok": True}]},
                       "apdu": {"initiate": {"checks": [{"name": "gcm-tag", "ok": False,
                                                         "expected": "aa", "found": "bb"}]}}}]}
    s = field.check_summary(doc)
    assert (s["checks"], s["failed"]) == (2, 1)
    assert s["failures"][0]["where"] == "frames[0].apdu.initiate"
