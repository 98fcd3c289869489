"""Golden IEC 62056-21 vectors (tests/vectors/iec62056_21/*.json): every one
parses and re-encodes byte for byte, fed whole, in halves and byte by byte;
the published bad-BCC frames give BccError; dissect() describes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.iec62056_21 import BccError, dissect
from drivers.iec62056_21.dataset import Readout, registers
from drivers.iec62056_21.framer import Framer

DIR = Path(__file__).parent / "vectors" / "iec62056_21"
FILES = sorted(DIR.glob("*.json"))
VECTORS = [(f.name, v) for f in FILES for v in json.loads(f.read_text())["vectors"]]
BAD = [(f.name, v) for f in FILES for v in json.loads(f.read_text()).get("bad", [])]


def _parse(chunks: list[bytes]) -> list:
    f = Framer("meter")          # an ACK followed by digits is an option select
    out = []
    for c in chunks:
        f.feed(c)
        while (m := f.next_frame()) is not None:
            out.append(m)
    assert f.pending == 0 and f.discarded == 0
    return out


def test_every_file_has_provenance() -> None:
    assert FILES
    for f in FILES:
        assert len(json.loads(f.read_text())["provenance"]) > 40, f.name


@pytest.mark.parametrize("split", ["whole", "halves", "bytes"])
@pytest.mark.parametrize(("file", "vec"), VECTORS, ids=[v["name"] for _, v in VECTORS])
def test_vector_parses_and_reencodes(file: str, vec: dict, split: str) -> None:
    raw = bytes.fromhex(vec["hex"])
    chunks = {"whole": [raw], "halves": [raw[:len(raw) // 2], raw[len(raw) // 2:]],
              "bytes": [raw[i:i + 1] for i in range(len(raw))]}[split]
    msgs = _parse(chunks)
    assert len(msgs) == 1
    msg = msgs[0]
    assert msg.to_bytes() == raw
    exp = vec["expect"]
    assert type(msg).__name__ == exp["type"]
    for key in ("address", "manufacturer", "baud_char", "ident", "model", "mode", "baud",
                "protocol", "mode_char", "name", "data", "partial"):
        if key in exp:
            assert getattr(msg, key) == exp[key], key


@pytest.mark.parametrize(("file", "vec"), VECTORS, ids=[v["name"] for _, v in VECTORS])
def test_vector_data_sets(file: str, vec: dict) -> None:
    exp = vec["expect"]
    if exp["type"] != "Block":
        return
    msg = _parse([bytes.fromhex(vec["hex"])])[0]
    ro = Readout.from_text(msg.data)
    assert ro.to_text() == msg.data
    sets = ro.datasets()
    if "datasets" in exp:
        assert [[d.address, [list(v) for v in d.values]] for d in sets] == exp["datasets"]
    if "n_datasets" in exp:
        assert ro.complete and len(sets) == exp["n_datasets"]
    if "multi" in exp:
        addr, n = exp["multi"]
        assert len(ro.find(addr).values) == n
    if "readings" in exp:
        got = {o: [v, u] for o, v, u in registers(sets)}
        assert got == exp["readings"]


@pytest.mark.parametrize(("file", "vec"), BAD, ids=[v["name"] for _, v in BAD])
def test_bad_vectors_raise_bcc_error(file: str, vec: dict) -> None:
    raw = bytes.fromhex(vec["hex"])
    f = Framer("client")
    f.feed(raw)
    with pytest.raises(BccError) as ei:
        f.next_frame()
    assert ei.value.raw == raw.hex()
    assert f.pending == 0


def test_dissect_describes_a_capture() -> None:
    raw = b"".join(bytes.fromhex(v["hex"]) for _, v in VECTORS)
    raw += bytes.fromhex(BAD[0][1]["hex"]) + b"\x00\x00"
    out = dissect(raw)
    json.dumps(out)
    *good, flagged = out["messages"]        # the bad-BCC block is decoded too, and flagged
    assert [m["hex"] for m in good] == [v["hex"] for _, v in VECTORS]
    assert flagged["hex"] == BAD[0][1]["hex"] and not flagged["checks"][0]["ok"]
    assert len(out["errors"]) == 1 and out["skipped_bytes"] == 2
    ids = [m for m in out["messages"] if m["type"] == "Identification"]
    assert ids[0]["model"] == "EK280" and ids[0]["enhanced"] == ["2"]
    block = [m for m in out["messages"] if m.get("datasets") and len(m["datasets"]) > 10][0]
    assert {"address": "1-0:1.8.1", "obis": "1.0.1.8.1.255",
            "values": [{"value": "007054.890", "unit": "kWh"}],
            "reading": {"value": 7054890, "unit": "Wh"}} in block["datasets"]
