"""A-XDR encoding of COSEM data (IEC 61334-6, Green Book 9.5 "Data" CHOICE,
Blue Book 4.1.5 data types) and the COSEM date-time.

Portable. A decoded value is a ``(tag, value)`` tuple so it re-encodes byte
for byte; ``plain()`` strips the tags for callers who only want numbers.
Values by tag: null/dont-care -> None; boolean -> bool; bit-string ->
(bits, bytes); integers and enum/bcd -> int; octet-string -> bytes;
visible-string -> str (one char per byte); utf8-string -> str; float ->
float; date-time/date/time -> bytes (12/5/4, see ``DateTime``); array and
structure -> list of (tag, value); compact-array -> (type description, list
of (tag, value)). Owns bytes <-> values; must not know what they mean.
"""

import struct

from drivers import LocalProtocolError, RemoteProtocolError

NULL, ARRAY, STRUCTURE, BOOLEAN, BIT_STRING = 0, 1, 2, 3, 4
DOUBLE_LONG, DOUBLE_LONG_UNSIGNED, OCTET_STRING, VISIBLE_STRING = 5, 6, 9, 10
UTF8_STRING, BCD, INTEGER, LONG, UNSIGNED, LONG_UNSIGNED = 12, 13, 15, 16, 17, 18
COMPACT_ARRAY, LONG64, LONG64_UNSIGNED, ENUM, FLOAT32, FLOAT64 = 19, 20, 21, 22, 23, 24
DATE_TIME, DATE, TIME, DONT_CARE = 25, 26, 27, 255

# tag -> (struct format, size) for fixed-length numbers (Blue Book 4.1.5)
_FIXED = {
    DOUBLE_LONG: (">i", 4), DOUBLE_LONG_UNSIGNED: (">I", 4), BCD: (">B", 1),
    INTEGER: (">b", 1), LONG: (">h", 2), UNSIGNED: (">B", 1), LONG_UNSIGNED: (">H", 2),
    LONG64: (">q", 8), LONG64_UNSIGNED: (">Q", 8), ENUM: (">B", 1),
    FLOAT32: (">f", 4), FLOAT64: (">d", 8),
}
_OCTETS = {DATE_TIME: 12, DATE: 5, TIME: 4}
# integer ranges, checked before packing (MicroPython's struct truncates silently)
_RANGES = {
    DOUBLE_LONG: (-(1 << 31), (1 << 31) - 1), DOUBLE_LONG_UNSIGNED: (0, (1 << 32) - 1),
    BCD: (0, 255), INTEGER: (-128, 127), LONG: (-32768, 32767), UNSIGNED: (0, 255),
    LONG_UNSIGNED: (0, 65535), LONG64: (-(1 << 63), (1 << 63) - 1),
    LONG64_UNSIGNED: (0, (1 << 64) - 1), ENUM: (0, 255),
}
NAMES = {
    NULL: "null-data", ARRAY: "array", STRUCTURE: "structure", BOOLEAN: "boolean",
    BIT_STRING: "bit-string", DOUBLE_LONG: "double-long",
    DOUBLE_LONG_UNSIGNED: "double-long-unsigned", OCTET_STRING: "octet-string",
    VISIBLE_STRING: "visible-string", UTF8_STRING: "utf8-string", BCD: "bcd",
    INTEGER: "integer", LONG: "long", UNSIGNED: "unsigned", LONG_UNSIGNED: "long-unsigned",
    COMPACT_ARRAY: "compact-array", LONG64: "long64", LONG64_UNSIGNED: "long64-unsigned",
    ENUM: "enum", FLOAT32: "float32", FLOAT64: "float64", DATE_TIME: "date-time",
    DATE: "date", TIME: "time", DONT_CARE: "dont-care",
}
MAX_DEPTH = 24
_STRUCT_ERROR = getattr(struct, "error", ValueError)   # MicroPython has no struct.error


# -- lengths (A-XDR / BER definite form) ----------------------------------------------------
def encode_length(n):
    if n < 0x80:
        return bytes((n,))
    for size in (1, 2, 3, 4):
        if n < (1 << (8 * size)):
            return bytes((0x80 | size,)) + n.to_bytes(size, "big")
    raise LocalProtocolError("length too large: %d" % n)


def decode_length(data, pos):
    """-> (length, new pos)."""
    if pos >= len(data):
        raise RemoteProtocolError("truncated length")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4 or pos + 1 + size > len(data):
        raise RemoteProtocolError("bad length encoding 0x%02x" % first)
    return int.from_bytes(data[pos + 1:pos + 1 + size], "big"), pos + 1 + size


def _take(data, pos, n):
    if n < 0 or pos + n > len(data):
        raise RemoteProtocolError("truncated A-XDR data (need %d bytes at %d)" % (n, pos))
    return bytes(data[pos:pos + n]), pos + n


# -- decoding ----------------------------------------------------------------
def decode(data):
    """The single Data value filling ``data`` exactly."""
    value, pos = decode_from(data, 0)
    if pos != len(data):
        raise RemoteProtocolError("%d trailing bytes after A-XDR data" % (len(data) - pos))
    return value


def decode_from(data, pos, depth=0):
    """-> ((tag, value), new pos)."""
    if pos >= len(data):
        raise RemoteProtocolError("truncated A-XDR data (no tag)")
    tag = data[pos]
    value, pos = _decode_value(tag, data, pos + 1, depth)
    return (tag, value), pos


def _decode_value(tag, data, pos, depth):
    if depth > MAX_DEPTH:
        raise RemoteProtocolError("A-XDR data nested too deep")
    fixed = _FIXED.get(tag)
    if fixed is not None:
        raw, pos = _take(data, pos, fixed[1])
        return struct.unpack(fixed[0], raw)[0], pos
    if tag in (NULL, DONT_CARE):
        return None, pos
    if tag == BOOLEAN:
        raw, pos = _take(data, pos, 1)
        return raw[0] != 0, pos
    if tag in _OCTETS:
        return _take(data, pos, _OCTETS[tag])
    if tag in (ARRAY, STRUCTURE):
        count, pos = decode_length(data, pos)
        if count > len(data) - pos:
            raise RemoteProtocolError("A-XDR %s count %d exceeds data" % (NAMES[tag], count))
        items = []
        for _ in range(count):
            item, pos = decode_from(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if tag == BIT_STRING:
        bits, pos = decode_length(data, pos)
        raw, pos = _take(data, pos, (bits + 7) // 8)
        return (bits, raw), pos
    if tag in (OCTET_STRING, VISIBLE_STRING, UTF8_STRING):
        n, pos = decode_length(data, pos)
        raw, pos = _take(data, pos, n)
        if tag == OCTET_STRING:
            return raw, pos
        if tag == VISIBLE_STRING:
            return "".join(chr(b) for b in raw), pos
        try:
            return raw.decode("utf-8"), pos
        except UnicodeError:
            raise RemoteProtocolError("invalid utf8-string") from None
    if tag == COMPACT_ARRAY:
        return _decode_compact(data, pos, depth)
    raise RemoteProtocolError("unknown A-XDR tag %d" % tag)


def _decode_type(data, pos, depth):
    """A compact-array type description (Blue Book 4.1.5): (tag, detail)."""
    if depth > MAX_DEPTH:
        raise RemoteProtocolError("type description nested too deep")
    raw, pos = _take(data, pos, 1)
    tag = raw[0]
    if tag == ARRAY:
        raw, pos = _take(data, pos, 2)
        elem, pos = _decode_type(data, pos, depth + 1)
        return (ARRAY, (int.from_bytes(raw, "big"), elem)), pos
    if tag == STRUCTURE:
        n, pos = decode_length(data, pos)
        if n > len(data) - pos:
            raise RemoteProtocolError("type description count exceeds data")
        elems = []
        for _ in range(n):
            e, pos = _decode_type(data, pos, depth + 1)
            elems.append(e)
        return (STRUCTURE, elems), pos
    if tag == COMPACT_ARRAY or tag not in NAMES:
        raise RemoteProtocolError("bad compact-array type %d" % tag)
    return (tag, None), pos


def _decode_typed(tdesc, data, pos, depth):
    tag, detail = tdesc
    if tag == ARRAY:
        count, elem = detail
        if count > len(data) - pos + 1:
            raise RemoteProtocolError("compact-array element count exceeds data")
        items = []
        for _ in range(count):
            v, pos = _decode_typed(elem, data, pos, depth + 1)
            items.append(v)
        return (ARRAY, items), pos
    if tag == STRUCTURE:
        items = []
        for e in detail:
            v, pos = _decode_typed(e, data, pos, depth + 1)
            items.append(v)
        return (STRUCTURE, items), pos
    value, pos = _decode_value(tag, data, pos, depth + 1)
    return (tag, value), pos


def _decode_compact(data, pos, depth):
    tdesc, pos = _decode_type(data, pos, depth)
    n, pos = decode_length(data, pos)
    contents, pos = _take(data, pos, n)
    rows, cpos = [], 0
    while cpos < len(contents):
        v, npos = _decode_typed(tdesc, contents, cpos, depth + 1)
        if npos == cpos:
            raise RemoteProtocolError("empty compact-array element")
        rows.append(v)
        cpos = npos
    return (tdesc, rows), pos


# -- encoding ----------------------------------------------------------------
def encode(data):
    """Bytes of one (tag, value)."""
    try:
        tag, value = data
    except (TypeError, ValueError):
        raise LocalProtocolError("not a (tag, value) pair: %r" % (data,)) from None
    if not isinstance(tag, int) or tag not in NAMES:
        raise LocalProtocolError("unknown A-XDR tag %r" % (tag,))
    return bytes((tag,)) + _encode_value(tag, value)


def _encode_value(tag, value):
    fixed = _FIXED.get(tag)
    span = _RANGES.get(tag)
    if span is not None and (not isinstance(value, int) or not span[0] <= value <= span[1]):
        raise LocalProtocolError("%r does not fit %s" % (value, NAMES[tag]))
    try:
        if fixed is not None:
            return struct.pack(fixed[0], value)
        if tag in (NULL, DONT_CARE):
            return b""
        if tag == BOOLEAN:
            return b"\xff" if value else b"\x00"
        if tag in _OCTETS:
            if len(value) != _OCTETS[tag]:
                raise LocalProtocolError("%s must be %d bytes" % (NAMES[tag], _OCTETS[tag]))
            return bytes(value)
        if tag in (ARRAY, STRUCTURE):
            return encode_length(len(value)) + b"".join(encode(v) for v in value)
        if tag == BIT_STRING:
            bits, raw = value
            if len(raw) != (bits + 7) // 8:
                raise LocalProtocolError("bit-string length mismatch")
            return encode_length(bits) + bytes(raw)
        if tag == OCTET_STRING:
            return encode_length(len(value)) + bytes(value)
        if tag == VISIBLE_STRING:
            return encode_length(len(value)) + bytes(ord(c) for c in value)
        if tag == UTF8_STRING:
            raw = value.encode("utf-8")
            return encode_length(len(raw)) + raw
        if tag == COMPACT_ARRAY:
            tdesc, rows = value
            contents = b"".join(_encode_typed(tdesc, r) for r in rows)
            return _encode_type(tdesc) + encode_length(len(contents)) + contents
    except (_STRUCT_ERROR, TypeError, ValueError, OverflowError) as e:
        raise LocalProtocolError("cannot encode %r as %s: %s" % (value, NAMES.get(tag), e)) from e
    raise LocalProtocolError("unknown A-XDR tag %r" % (tag,))


def _encode_type(tdesc):
    tag, detail = tdesc
    if tag == ARRAY:
        return bytes((ARRAY,)) + detail[0].to_bytes(2, "big") + _encode_type(detail[1])
    if tag == STRUCTURE:
        return bytes((STRUCTURE,)) + encode_length(len(detail)) + \
            b"".join(_encode_type(e) for e in detail)
    return bytes((tag,))


def _encode_typed(tdesc, data):
    tag, detail = tdesc
    if data[0] != tag:
        raise LocalProtocolError("compact-array element does not match its type")
    if tag == ARRAY:
        return b"".join(_encode_typed(detail[1], v) for v in data[1])
    if tag == STRUCTURE:
        if len(data[1]) != len(detail):
            raise LocalProtocolError("compact-array structure size mismatch")
        return b"".join(_encode_typed(e, v) for e, v in zip(detail, data[1]))  # noqa: B905 (MicroPython zip has no strict=)
    return _encode_value(tag, data[1])


def plain(data):
    """Strip the tags: lists for arrays/structures, the value otherwise."""
    tag, value = data
    if tag in (ARRAY, STRUCTURE):
        return [plain(v) for v in value]
    if tag == COMPACT_ARRAY:
        return [plain(v) for v in value[1]]
    return value


# -- COSEM date-time (Blue Book 4.1.6.1) ------------------------------------------------
def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


NOT_SPECIFIED = 0x8000      # deviation not specified
STATUS_DST = 0x80           # clock status: daylight saving active
STATUS_INVALID = 0x01


class DateTime:
    """COSEM date-time, 12 octets (Blue Book 4.1.6.1)::

        year(2) month day day-of-week hour minute second hundredths deviation(2) status

    0xFF (0xFFFF for year) means "not specified". ``deviation`` is in minutes
    with the classic DLMS sign, UTC = local time + deviation (CET is -60);
    0x8000 = not specified (then the time is taken as UTC).
    """

    __slots__ = ("year", "month", "day", "dow", "hour", "minute", "second",
                 "hundredths", "deviation", "status")

    def __init__(self, year, month, day, hour=0, minute=0, second=0, hundredths=0,
                 deviation=0, status=0, dow=None):
        self.year, self.month, self.day = year, month, day
        self.hour, self.minute, self.second, self.hundredths = hour, minute, second, hundredths
        self.deviation, self.status = deviation, status
        if dow is None:
            dow = 0xFF if 0xFF in (month, day) or year == 0xFFFF else \
                (_days_from_civil(year, month, day) + 3) % 7 + 1
        self.dow = dow

    @classmethod
    def from_bytes(cls, raw):
        if len(raw) != 12:
            raise RemoteProtocolError("date-time must be 12 bytes, got %d" % len(raw))
        dev = (raw[9] << 8) | raw[10]
        if dev != NOT_SPECIFIED and dev & 0x8000:
            dev -= 0x10000
        return cls((raw[0] << 8) | raw[1], raw[2], raw[3], raw[5], raw[6], raw[7], raw[8],
                   dev, raw[11], dow=raw[4])

    def to_bytes(self):
        dev = self.deviation & 0xFFFF
        return bytes((self.year >> 8, self.year & 0xFF, self.month, self.day, self.dow,
                      self.hour, self.minute, self.second, self.hundredths,
                      dev >> 8, dev & 0xFF, self.status))

    @classmethod
    def from_epoch(cls, ts, deviation=0, status=0):
        local = int(ts) - (0 if deviation == NOT_SPECIFIED else deviation * 60)
        days, secs = divmod(local, 86400)
        y, m, d = _civil_from_days(days)
        return cls(y, m, d, secs // 3600, (secs // 60) % 60, secs % 60, 0, deviation, status)

    def to_epoch(self):
        """UTC epoch seconds; RemoteProtocolError if a date/time field is unspecified."""
        if self.year == 0xFFFF or 0xFF in (self.month, self.day, self.hour, self.minute) \
                or not 1 <= self.month <= 12 or not 1 <= self.day <= 31 \
                or self.hour > 23 or self.minute > 59:
            raise RemoteProtocolError("date-time not a point in time", raw=self.to_bytes().hex())
        sec = 0 if self.second == 0xFF else self.second
        local = _days_from_civil(self.year, self.month, self.day) * 86400 + \
            self.hour * 3600 + self.minute * 60 + sec
        dev = 0 if self.deviation == NOT_SPECIFIED else self.deviation
        return local + dev * 60

    def __eq__(self, other):
        return isinstance(other, DateTime) and self.to_bytes() == other.to_bytes()

    def __repr__(self):
        return "DateTime(%04d-%02d-%02d %02d:%02d:%02d dev=%d st=0x%02x)" % (
            self.year, self.month, self.day, self.hour, self.minute, self.second,
            self.deviation, self.status)
