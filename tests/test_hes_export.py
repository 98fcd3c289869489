"""HES-lite exports as encode/decode pairs: whatever the readings, every
format parses back to them (jsonl exactly, ints stay ints, floats by repr)."""

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hes_lite import export

OBIS = ["1.0.1.8.0.255", "1.0.32.7.0.255", "0.0.97.97.0.255", "1.0.13.7.0.255"]
values = st.one_of(st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                   st.floats(allow_nan=False, allow_infinity=False))
row = st.tuples(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                        min_size=1, max_size=12),
                st.integers(min_value=0, max_value=4_102_444_800),
                st.dictionaries(st.sampled_from(OBIS), values, min_size=1))


def collect(fmt, rows, units):
    return b"".join(export.chunks(fmt, iter(rows), units, batch=3)).decode()


@settings(max_examples=120, deadline=None)
@given(rows=st.lists(row, max_size=20))
def test_jsonl_and_json_round_trip(rows):
    units = {o: "u" for o in OBIS}
    lines = collect("jsonl", rows, units).splitlines()
    back = [json.loads(x) for x in lines]
    assert [(b["meter"], export.parse_time(b["ts"]), b["values"]) for b in back] == rows
    for b, (_, _, vals) in zip(back, rows, strict=True):
        assert [type(v) for v in b["values"].values()] == [type(v) for v in vals.values()]
    doc = json.loads(collect("json", rows, units))
    assert [(b["meter"], export.parse_time(b["ts"]), b["values"]) for b in doc["readings"]] == rows


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(row, max_size=12))
def test_csv_and_xml_round_trip(rows):
    units = {o: ("Wh" if o.startswith("1.0.1.") else "") for o in OBIS}
    table = list(csv.reader(io.StringIO(collect("csv", rows, units))))
    assert table[0][:2] == ["meter", "ts"] and len(table) == len(rows) + 1
    for rec, (meter, ts, vals) in zip(table[1:], rows, strict=True):
        assert rec[0] == meter and export.parse_time(rec[1]) == ts
        got = {o: (int(c) if type(vals.get(o)) is int else float(c))
               for o, c in zip(OBIS, rec[2:], strict=True) if c != ""}
        assert got == vals
    root = ET.fromstring(collect("xml", rows, units))
    for el, (meter, ts, vals) in zip(root.findall("reading"), rows, strict=True):
        assert el.get("meter") == meter and export.parse_time(el.get("ts")) == ts
        assert {v.get("obis"): float(v.text) for v in el.findall("value")} == \
            {o: float(x) for o, x in vals.items()}


@pytest.mark.parametrize("text,ts", [("1780272000", 1780272000),
                                     ("2026-06-01T00:00:00Z", 1780272000),
                                     ("2026-06-01T02:00:00+02:00", 1780272000),
                                     ("2026-06-01T00:00:00", 1780272000)])
def test_parse_time(text, ts):
    assert export.parse_time(text) == ts


@given(st.text(max_size=30))
def test_parse_time_total(text):
    try:
        export.parse_time(text)
    except export.ExportError:
        pass


def test_unknown_format():
    with pytest.raises(export.ExportError):
        list(export.chunks("pdf", iter([]), {}))
