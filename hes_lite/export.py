"""Exports of stored readings: JSON, JSON Lines, CSV, XLSX, XML and TXT.

Every format streams: rows come from ``Store.rows()`` (meter, ts, {obis:
value}) one at a time and leave as byte chunks, so a year of a district never
sits in memory. ``jsonl`` is a contract (one line per meter per hour, RFC 3339
UTC, ints stay ints and floats round-trip by repr); the tabular formats put
one meter-hour per row with a column per OBIS code. XLSX uses xlsxwriter in
constant_memory mode and starts a new sheet at Excel's row limit.

Must not know SQL or HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Iterator
from typing import IO
from xml.sax.saxutils import escape, quoteattr

from hes_lite import HesError
from hes_lite.store import Cell

FORMATS = ("json", "jsonl", "csv", "xlsx", "xml", "txt")
MEDIA_TYPES = {
    "json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv",
    "xml": "application/xml", "txt": "text/plain",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, header row included
Row = tuple[str, int, dict[str, Cell]]


class ExportError(HesError):
    pass


def rfc3339(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_time(text: str) -> int:
    """Epoch seconds, or RFC 3339 (``2026-06-01T00:00:00Z``, offsets allowed)."""
    from datetime import UTC, datetime
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ExportError(f"not a time (epoch seconds or RFC 3339): {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _num(v: Cell) -> str:
    return str(v)  # str(float) is repr(float) in Python 3: the shortest round-trip form


def chunks(fmt: str, rows: Iterable[Row], units: dict[str, str],
           batch: int = 512) -> Iterator[bytes]:
    """The export as byte chunks (every format but xlsx)."""
    gen = {"json": _json, "jsonl": _jsonl, "csv": _csv, "xml": _xml, "txt": _txt}.get(fmt)
    if gen is None:
        raise ExportError(f"unknown or non-streamable format {fmt!r}", format=fmt)
    buf: list[str] = []
    for piece in gen(rows, units):
        buf.append(piece)
        if len(buf) >= batch:
            yield "".join(buf).encode()
            buf.clear()
    if buf:
        yield "".join(buf).encode()


def _jsonl(rows: Iterable[Row], units: dict[str, str]) -> Iterator[str]:
    dumps = json.dumps
    for meter, ts, values in rows:
        yield dumps({"meter": meter, "ts": rfc3339(ts), "values": values}) + "\n"


def _json(rows: Iterable[Row], units: dict[str, str]) -> Iterator[str]:
    yield '{"units": ' + json.dumps(units) + ', "readings": ['
    sep = "\n"
    for meter, ts, values in rows:
        yield sep + json.dumps({"meter": meter, "ts": rfc3339(ts), "values": values})
        sep = ",\n"
    yield "\n]}\n"


def _header(units: dict[str, str]) -> list[str]:
    return ["meter", "ts"] + [f"{o} [{u}]" if u else o for o, u in units.items()]


def _table(rows: Iterable[Row], units: dict[str, str]) -> Iterator[list[str]]:
    cols = list(units)
    for meter, ts, values in rows:
        get = values.get
        yield [meter, rfc3339(ts), *["" if (v := get(c)) is None else str(v) for c in cols]]


def _csv(rows: Iterable[Row], units: dict[str, str]) -> Iterator[str]:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(_header(units))
    for rec in _table(rows, units):
        w.writerow(rec)
        if out.tell() > 65536:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def _txt(rows: Iterable[Row], units: dict[str, str]) -> Iterator[str]:
    """Tab-separated, one meter-hour per line, a header line first."""
    yield "\t".join(_header(units)) + "\n"
    for rec in _table(rows, units):
        yield "\t".join(rec) + "\n"


def _xml(rows: Iterable[Row], units: dict[str, str]) -> Iterator[str]:
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<readings>\n'
    for meter, ts, values in rows:
        parts = [f"  <reading meter={quoteattr(meter)} ts=\"{rfc3339(ts)}\">"]
        for obis, v in values.items():
            if v is None:
                continue
            u = units.get(obis, "")
            ua = f" unit={quoteattr(u)}" if u else ""
            parts.append(f"<value obis=\"{escape(obis)}\"{ua}>{_num(v)}</value>")
        parts.append("</reading>\n")
        yield "".join(parts)
    yield "</readings>\n"


def write_xlsx(target: str | IO[bytes], rows: Iterable[Row], units: dict[str, str],
               max_rows: int = XLSX_MAX_ROWS) -> int:
    """Write an XLSX workbook; returns the number of data rows written."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(target, {"constant_memory": True, "in_memory": False})
    header = _header(units)
    cols = list(units)
    bold = wb.add_format({"bold": True})
    sheet = None
    r = n = 0
    for meter, ts, values in rows:
        if sheet is None or r >= max_rows:
            sheet = wb.add_worksheet(f"readings{len(wb.worksheets()) + 1}")
            sheet.write_row(0, 0, header, bold)
            r = 1
        sheet.write_string(r, 0, meter)
        sheet.write_string(r, 1, rfc3339(ts))
        for c, obis in enumerate(cols, 2):
            v = values.get(obis)
            if v is not None:
                sheet.write_number(r, c, v)
        r += 1
        n += 1
    if sheet is None:
        wb.add_worksheet("readings1").write_row(0, 0, header, bold)
    wb.close()
    return n


def write(fmt: str, path: str, rows: Iterable[Row], units: dict[str, str]) -> None:
    if fmt == "xlsx":
        write_xlsx(path, rows, units)
        return
    with open(path, "wb") as f:
        for piece in chunks(fmt, rows, units):
            f.write(piece)
