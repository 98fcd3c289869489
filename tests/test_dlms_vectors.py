"""Golden DLMS vectors (tests/vectors/dlms/*.json): every vector decodes and
re-encodes byte for byte, and the framer finds the same frame whether the
bytes arrive whole, in halves or one at a time."""

import json
import pathlib

import pytest

from drivers.dlms import acse, apdu, axdr, hdlc, xdlms
from drivers.dlms.dissector import dissect

VECTOR_DIR = pathlib.Path(__file__).parent / "vectors" / "dlms"


def _load():
    out = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc.get("provenance"), path
        for v in doc["vectors"]:
            out.append(pytest.param(v, id="%s:%s" % (path.stem, v["name"])))
    return out


VECTORS = _load()


def _chunks(data, how):
    if how == "whole":
        return [data]
    if how == "halves":
        return [data[:len(data) // 2], data[len(data) // 2:]]
    return [data[i:i + 1] for i in range(len(data))]


def _frames(data, how):
    framer = hdlc.Framer()
    found = []
    for chunk in _chunks(data, how):
        framer.receive_data(chunk)
        while True:
            ev = framer.next_event()
            if ev is None:
                break
            found.append(ev)
    return found


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
def test_vector_round_trip(vector, how):
    raw = bytes.fromhex(vector["hex"])
    if vector["layer"] == "hdlc":
        frames = _frames(b"\x00\x7e\x13" + raw, how)      # garbage before it too
        assert len(frames) == 1 and isinstance(frames[0], hdlc.Frame)
        assert frames[0].to_bytes() == raw
        assert hdlc.Frame.from_bytes(raw) == frames[0]
    elif vector["layer"] == "apdu":
        msg = apdu.decode(raw)
        assert msg.to_bytes() == raw
    else:
        assert axdr.encode(axdr.decode(raw)) == raw


@pytest.mark.parametrize("vector", VECTORS)
def test_vector_meaning(vector):
    exp = vector.get("expect")
    if not exp:
        return
    f = hdlc.Frame.from_bytes(bytes.fromhex(vector["hex"]))
    assert f.kind == exp["kind"]
    if "dest" in exp:
        assert list(hdlc.parse_address(f.dest)) == exp["dest"]
        assert list(hdlc.parse_address(f.src)) == exp["src"]
    if "parameters" in exp:
        assert list(hdlc.LinkParameters.from_bytes(f.info).values()) == exp["parameters"]
    if "apdu" in exp:
        msg = apdu.decode(f.info[3:])
        assert type(msg).__name__ == exp["apdu"]
        if "conformance" in exp:
            ir = acse.InitiateRequest.from_bytes(msg.user_information)
            assert ir.conformance == exp["conformance"] and ir.max_pdu == exp["max_pdu"]
        if "ap_title" in exp:
            assert msg.ap_title.hex() == exp["ap_title"]
            assert msg.user_information[:1].hex() == exp["ciphered_initiate"]
        if "obis" in exp:
            d = msg.descriptors[0]
            assert (d.class_id, d.attribute) == (exp["class_id"], exp["attribute"])
            assert ".".join(str(b) for b in d.obis) == exp["obis"]


def test_dissect_layers_of_published_aarq():
    doc = json.loads((VECTOR_DIR / "published.json").read_text())
    v = next(x for x in doc["vectors"] if x["name"] == "kmethy-aarq")
    out = dissect(bytes.fromhex(v["hex"]))
    layer = out["frames"][0]
    assert layer["hdlc"]["kind"] == "I" and layer["llc"] == "e6e600"
    assert layer["apdu"]["type"] == "AARQ"
    assert layer["apdu"]["initiate"]["type"] == "InitiateRequest"


def test_dissect_never_raises_on_garbage():
    assert "frames" in dissect(b"\x7e\xa0\x05garbage\x7e")
    assert "error" in dissect(b"\xc4\x01")["apdu"]


def test_get_response_vectors_mean_what_they_say():
    r = apdu.decode(bytes.fromhex("c403c10300060000002a01030002020fff161e"))
    assert isinstance(r, xdlms.GetResponse) and r.kind == xdlms.WITH_LIST
    assert r.results == [(axdr.DOUBLE_LONG_UNSIGNED, 42), 3,
                         (axdr.STRUCTURE, [(axdr.INTEGER, -1), (axdr.ENUM, 30)])]
