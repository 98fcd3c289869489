"""Proof against an independent implementation: dlms-cosem 21.3.2 (MIT, the
last MIT release; a test-only dependency in the ``dev`` extra). It decodes
our frames and APDUs, we decode its, and its AES-GCM / GMAC agree with ours.
Vectors it produced are frozen in tests/vectors/dlms/dlms_cosem_21_3_2.json
and regenerated here to prove they still come from it."""

import json
import pathlib
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

dc = pytest.importorskip("dlms_cosem")

from dlms_cosem import dlms_data as dd  # noqa: E402
from dlms_cosem import enumerations as en  # noqa: E402
from dlms_cosem import security as osec  # noqa: E402
from dlms_cosem import utils as outils  # noqa: E402
from dlms_cosem.cosem import CosemAttribute, CosemMethod, Obis  # noqa: E402
from dlms_cosem.cosem.attribute_with_selection import CosemAttributeWithSelection  # noqa: E402
from dlms_cosem.cosem.capture_object import CaptureObject  # noqa: E402
from dlms_cosem.cosem.selective_access import RangeDescriptor  # noqa: E402
from dlms_cosem.hdlc import address as oaddr  # noqa: E402
from dlms_cosem.hdlc import frames as oframes  # noqa: E402
from dlms_cosem.protocol import acse as oacse  # noqa: E402
from dlms_cosem.protocol import xdlms as oxdlms  # noqa: E402
from dlms_cosem.protocol.xdlms import action as oaction  # noqa: E402
from dlms_cosem.protocol.xdlms import get as oget  # noqa: E402
from dlms_cosem.protocol.xdlms import set as oset  # noqa: E402

from drivers.dlms import acse, apdu, axdr, cosem, hdlc, security, xdlms  # noqa: E402
from drivers.dlms.hdlc_conn import Connection  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))   # for test_dlms_pty helpers
VECTORS = pathlib.Path(__file__).parent / "vectors" / "dlms" / "dlms_cosem_21_3_2.json"
REG = CosemAttribute(interface=en.CosemInterface.REGISTER, instance=Obis(1, 0, 1, 8, 0, 255),
                     attribute=2)
CLK = CosemAttribute(interface=en.CosemInterface.CLOCK, instance=Obis(0, 0, 1, 0, 0, 255),
                     attribute=2)
LP = CosemAttribute(interface=en.CosemInterface.PROFILE_GENERIC,
                    instance=Obis(1, 0, 99, 1, 0, 255), attribute=2)


def oracle_vectors():
    """What dlms-cosem 21.3.2 encodes (only the encoders it implements)."""
    tz = timezone(timedelta(hours=1))
    rd = RangeDescriptor(restricting_object=CaptureObject(cosem_attribute=CLK),
                         from_value=datetime(2026, 6, 1, 0, 0, tzinfo=tz),
                         to_value=datetime(2026, 6, 1, 6, 0, tzinfo=tz))
    dcm = CosemMethod(interface=en.CosemInterface.DISCONNECT_CONTROL,
                      instance=Obis(0, 0, 96, 3, 10, 255), method=1)
    conf = oxdlms.Conformance(get=True, selective_access=True, multiple_references=True,
                              block_transfer_with_get_or_read=True, set=True, action=True)
    srv, cl = oaddr.HdlcAddress(1, 17, "server"), oaddr.HdlcAddress(16, None, "client")
    apdus = [
        ("get-request-normal", oget.GetRequestNormal(REG)),
        ("get-request-range", oget.GetRequestNormal(LP, access_selection=rd)),
        ("get-request-next", oget.GetRequestNext(block_number=3)),
        ("get-request-with-list", oget.GetRequestWithList(cosem_attributes_with_selection=[
            CosemAttributeWithSelection(attribute=REG, access_selection=None),
            CosemAttributeWithSelection(attribute=CLK, access_selection=None)])),
        ("get-response-error",
         oget.GetResponseNormalWithError(error=en.DataAccessResult.OBJECT_UNDEFINED)),
        ("get-response-block",
         oget.GetResponseWithBlock(data=bytes.fromhex("0102020409"), block_number=1)),
        ("get-response-last-block", oget.GetResponseLastBlock(
            data=bytes.fromhex("0c07ea06010100000000ff8000"), block_number=2)),
        ("get-response-with-list", oget.GetResponseWithList(response_data=[
            dd.DoubleLongUnsignedData(42), en.DataAccessResult.READ_WRITE_DENIED,
            dd.DataStructure([dd.IntegerData(-1), dd.EnumData(30)])])),
        ("set-request-clock", oset.SetRequestNormal(cosem_attribute=CLK, data=dd.OctetStringData(
            bytes.fromhex("07ea060101000000ff8000ff")).to_bytes())),
        ("set-response", oset.SetResponseNormal(result=en.DataAccessResult.SUCCESS)),
        ("action-request-disconnect",
         oaction.ActionRequestNormal(cosem_method=dcm, data=dd.IntegerData(0).to_bytes())),
        ("action-response", oaction.ActionResponseNormal(status=en.ActionResultStatus.SUCCESS)),
        ("aarq-none", oacse.ApplicationAssociationRequest(user_information=oacse.UserInformation(
            content=oxdlms.InitiateRequest(proposed_conformance=conf,
                                           client_max_receive_pdu_size=0xFFFF)))),
        ("aarq-lls", oacse.ApplicationAssociationRequest(
            authentication=en.AuthenticationMechanism.LLS, authentication_value=b"12345678",
            user_information=oacse.UserInformation(content=oxdlms.InitiateRequest(
                proposed_conformance=oxdlms.Conformance(get=True, set=True, action=True))))),
        ("rlrq", oacse.ReleaseRequest(reason=en.ReleaseRequestReason.NORMAL)),
    ]
    out = [{"name": n, "layer": "apdu", "hex": a.to_bytes().hex()} for n, a in apdus]
    get = b"\xe6\xe6\x00" + oget.GetRequestNormal(REG).to_bytes()
    out += [{"name": n, "layer": "hdlc", "hex": f.to_bytes().hex()} for n, f in [
        ("snrm", oframes.SetNormalResponseModeFrame(srv, cl)),
        ("i-frame-get", oframes.InformationFrame(srv, cl, get, send_sequence_number=2,
                                                 receive_sequence_number=3)),
        ("rr", oframes.ReceiveReadyFrame(srv, cl, receive_sequence_number=5)),
        ("disc", oframes.DisconnectFrame(srv, cl))]]
    data = [("double-long-unsigned", dd.DoubleLongUnsignedData(4000000000)),
            ("long", dd.LongData(-300)), ("octet-string", dd.OctetStringData(b"WUM12345")),
            ("enum", dd.EnumData(30)), ("long64", dd.Long64Data(-2 ** 40)),
            ("structure", dd.DataStructure([dd.IntegerData(-3), dd.EnumData(33)]))]
    out += [{"name": "data-" + n, "layer": "axdr", "hex": d.to_bytes().hex()} for n, d in data]
    return out


def test_frozen_vectors_still_come_from_the_oracle():
    frozen = json.loads(VECTORS.read_text())["vectors"]
    assert sorted(oracle_vectors(), key=lambda v: v["name"]) == \
        sorted(frozen, key=lambda v: v["name"])


# -- the oracle decodes ours ----------------------------------------------------------------
def _desc(cls, obis, attr=2, access=None):
    return xdlms.Descriptor(cls, cosem.obis_bytes(obis), attr, access)


def test_oracle_decodes_our_get_requests():
    req = xdlms.GetRequest(xdlms.NORMAL, [_desc(3, "1.0.1.8.0.255")]).to_bytes()
    o = oget.GetRequestFactory.from_bytes(req)
    assert o.cosem_attribute == REG
    ranged = xdlms.GetRequest(xdlms.NORMAL, [_desc(
        7, "1.0.99.1.0.255", 2, cosem.range_access(1780272000, 1780293600, -60))]).to_bytes()
    o = oget.GetRequestFactory.from_bytes(ranged)
    assert o.access_selection.from_value == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    assert o.access_selection.to_value == datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    listed = xdlms.GetRequest(xdlms.WITH_LIST, [_desc(3, "1.0.1.8.0.255"),
                                                _desc(8, "0.0.1.0.0.255")]).to_bytes()
    o = oget.GetRequestFactory.from_bytes(listed)
    assert [x.attribute for x in o.cosem_attributes_with_selection] == [REG, CLK]
    assert oget.GetRequestFactory.from_bytes(
        xdlms.GetRequest(xdlms.NEXT, block=7).to_bytes()).block_number == 7


def test_oracle_decodes_our_responses_and_data():
    structure = (axdr.STRUCTURE, [(axdr.INTEGER, -1), (axdr.ENUM, 30)])
    resp = xdlms.GetResponse(xdlms.NORMAL, [structure]).to_bytes()
    o = oget.GetResponseFactory.from_bytes(resp)
    assert outils.parse_as_dlms_data(o.data) == [-1, 30]
    block = xdlms.GetResponse(xdlms.DATABLOCK, last=False, block=1, raw=b"\x01\x02\x03")
    o = oget.GetResponseFactory.from_bytes(block.to_bytes())
    assert (o.block_number, o.data) == (1, b"\x01\x02\x03")
    lst = xdlms.GetResponse(xdlms.WITH_LIST, [(axdr.DOUBLE_LONG_UNSIGNED, 42), 4]).to_bytes()
    o = oget.GetResponseFactory.from_bytes(lst)
    assert o.response_data[1] == en.DataAccessResult.OBJECT_UNDEFINED
    # (its 21.3.2 decoder has no visible-string or float)
    for value in [(axdr.LONG64, -5), (axdr.BOOLEAN, True),
                  (axdr.ARRAY, [(axdr.LONG_UNSIGNED, 1), (axdr.LONG_UNSIGNED, 2)]),
                  (axdr.OCTET_STRING, b"\x01\x02")]:
        got = outils.parse_as_dlms_data(axdr.encode(value))
        assert got == axdr.plain(value)


def test_oracle_decodes_our_association_apdus():
    ir = acse.InitiateRequest(max_pdu=0x0400)
    aarq = acse.AARQ(ir.to_bytes(), acse.LN, acse.MECH_LLS, b"secret12")
    o = oacse.ApplicationAssociationRequest.from_bytes(aarq.to_bytes())
    assert o.authentication == en.AuthenticationMechanism.LLS
    assert o.authentication_value == b"secret12"
    assert o.user_information.content.client_max_receive_pdu_size == 0x0400
    aare = acse.AARE(acse.InitiateResponse(0x501F, 0x0400).to_bytes())
    o = oacse.ApplicationAssociationResponse.from_bytes(aare.to_bytes())
    assert o.result == en.AssociationResult.ACCEPTED
    assert o.user_information.content.server_max_receive_pdu_size == 0x0400
    assert oacse.ReleaseRequest.from_bytes(acse.ReleaseRequest(0).to_bytes()).reason == \
        en.ReleaseRequestReason.NORMAL


def test_oracle_decodes_our_frames():
    conn = Connection(hdlc.client_address(16), hdlc.server_address(1, 17), True)
    (snrm,) = conn.snrm()       # no parameters: the oracle's SNRM has none either
    srv, cl = oaddr.HdlcAddress(1, 17, "server"), oaddr.HdlcAddress(16, None, "client")
    assert snrm == oframes.SetNormalResponseModeFrame(srv, cl).to_bytes()
    ua = Connection(hdlc.server_address(1, 17), hdlc.client_address(16), False).ua(
        hdlc.LinkParameters(512, 512, 1, 1))[0]
    assert oframes.UnNumberedAcknowledgmentFrame.from_bytes(ua).payload
    get = xdlms.GetRequest(xdlms.NORMAL, [_desc(3, "1.0.1.8.0.255")]).to_bytes()
    (iframe,) = conn.send_apdu(get)   # its parser only reads server->client I frames
    assert iframe == oframes.InformationFrame(srv, cl, b"\xe6\xe6\x00" + get).to_bytes()
    (disc,) = conn.disc()
    assert oframes.DisconnectFrame.from_bytes(disc).destination_address.logical_address == 1
    server = Connection(hdlc.server_address(1, 17), hdlc.client_address(16), False,
                        hdlc.LinkParameters(16, 16, 1, 1))
    resp = b"\xc4\x01\xc1\x00\x09\x20" + bytes(32)
    (first,) = server.send_apdu(resp)
    o = oframes.InformationFrame.from_bytes(first)
    assert o.segmented and o.payload == (b"\xe6\xe7\x00" + resp)[:16]
    assert o.source_address.physical_address == 17


def test_oracle_reads_our_date_time():
    from dlms_cosem.time import datetime_from_bytes

    raw = axdr.DateTime.from_epoch(1780272000, deviation=-60).to_bytes()
    dt, _ = datetime_from_bytes(raw)
    assert dt.timestamp() == 1780272000
    assert dt.utcoffset() == timedelta(hours=1)


# -- security: same AES-GCM and GMAC ----------------------------------------------------------
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("4D4D4D0000BC614E")


def test_suite0_matches_oracle():
    plain = xdlms.GetRequest(xdlms.NORMAL, [_desc(8, "0.0.1.0.0.255")]).to_bytes()
    ours = security.protect(plain, 0x30, TITLE, 0x01234567, EK, AK)
    sc = osec.SecurityControlField(security_suite=0, authenticated=True, encrypted=True)
    theirs = osec.encrypt(sc, TITLE, 0x01234567, EK, plain, AK)
    assert ours == b"\x30\x01\x23\x45\x67" + theirs
    assert osec.decrypt(sc, TITLE, 0x01234567, EK, ours[5:], AK) == plain
    assert security.unprotect(ours, TITLE, EK, AK) == (0x30, 0x01234567, plain)


def test_gmac_matches_oracle():
    challenge = bytes.fromhex("503677524A323146")
    ours = security.gmac(0x10, TITLE, 1, EK, AK, challenge)
    sc = osec.SecurityControlField(security_suite=0, authenticated=True, encrypted=False)
    assert ours == b"\x10\x00\x00\x00\x01" + osec.gmac(sc, TITLE, 1, EK, AK, challenge)


def test_oracle_general_global_cipher_reads_ours():
    from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher

    ctx = security.SecurityContext(EK, AK, TITLE, general=True, invocation_counter=5)
    wire = ctx.encrypt(xdlms.GetRequest(xdlms.NORMAL, [_desc(3, "1.0.1.8.0.255")]).to_bytes())
    o = GeneralGlobalCipher.from_bytes(wire)
    assert o.system_title == TITLE and o.invocation_counter == 5
    peer = security.SecurityContext(EK, AK, b"\x00" * 8)
    assert isinstance(apdu.decode(wire, peer), xdlms.GetRequest)


# -- the oracle's own client reads our simulated meter over a pty ------------------------------
def _oracle_session(port, **kw):
    from dlms_cosem.clients.dlms_client import DlmsClient

    return DlmsClient.with_serial_hdlc_transport(
        port.agent_path, client_logical_address=16, server_logical_address=1,
        server_physical_address=17, baud_rate=115200, timeout=3, **kw)


@pytest.mark.parametrize("secured", [False, True])
def test_oracle_client_reads_our_simulator(secured):
    from test_dlms_pty import AK, EK, HOUR, T, _meter, bus_of

    kw, opts = {}, {}
    if secured:    # HLS-GMAC with general-glo-ciphering, as dlms-cosem 21.3.2 does it
        kw = dict(authentication_method=en.AuthenticationMechanism.HLS_GMAC,
                  encryption_key=EK, authentication_key=AK, client_system_title=b"ORACLE01")
        opts = dict(auth="hls", ek=EK, ak=AK)
    model, sim = _meter(3, 17, block_size=300, **opts)
    start = (T - 24 * HOUR) // HOUR * HOUR
    rd = RangeDescriptor(restricting_object=CaptureObject(cosem_attribute=CLK),
                         from_value=datetime.fromtimestamp(start, UTC),
                         to_value=datetime.fromtimestamp(T, UTC))
    with bus_of([sim]) as port:
        s = _oracle_session(port, **kw)
        s.connect()
        try:
            s.associate()
            energy = outils.parse_as_dlms_data(s.get(REG))
            rows = outils.parse_as_dlms_data(s.get(LP, access_descriptor=rd))
            assert s.release_association() is not None
        finally:
            # No DISC: dlms-cosem 21.3.2 cannot parse a UA without an information
            # field (legal after DISC, IEC 62056-46 6.4.4.4.3.3) and would wait forever.
            s.io_interface._serial.close()
    assert energy == model.registers(T)["1.0.1.8.0.255"]
    want = model.profile(start, T)
    assert len(rows) == len(want) == 25          # three GET blocks, many HDLC segments
    assert [r[1:5] for r in rows] == [[v[o] for o in sorted(v, key=list(v).index)]
                                      for _, v in want]
    assert sim.requests >= 4
