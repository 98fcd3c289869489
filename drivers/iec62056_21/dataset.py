"""IEC 62056-21 data sets: ``address(value*unit)(value)…`` lines, the readout
data block ending in the ``!`` line, and their translation to OBIS readings.

Portable (CPython and MicroPython). Owns the data set grammar (§6.4 of IEC
62056-21:2002: value ≤ 128 characters, unit ≤ 16, neither containing
``( ) * / !``), the EDIS address forms (``C.D.E``, ``A-B:C.D.E*F``, letter
groups ``C``/``F``/``L``/``P`` for 96–99) mapped to six-group OBIS, decimal
values as exact (mantissa, scaler) and kilo/mega units folded into the base
unit every protocol reports (kWh → Wh). Must not know messages or IO.
"""

from drivers.iec62056_21.errors import IecProtocolError
from drivers.meter import scaled
from drivers.obis import Obis, ObisError

LETTERS = {"C": 96, "F": 97, "L": 98, "P": 99}
FORBIDDEN = "()*/!"
MAX_VALUE = 128
MAX_UNIT = 16
# Folded into the base unit the rest of the stack uses (drivers.meter: Wh, W, var…).
PREFIXED = {
    "kWh": ("Wh", 3), "MWh": ("Wh", 6), "kvarh": ("varh", 3), "kVArh": ("varh", 3),
    "Mvarh": ("varh", 6), "kVAh": ("VAh", 3), "kW": ("W", 3), "MW": ("W", 6),
    "kvar": ("var", 3), "kVAr": ("var", 3), "kVA": ("VA", 3), "kV": ("V", 3), "mA": ("A", -3),
}
# Data sets that describe the meter rather than measure: not registers.
META = ("0.0.0", "0.0.1", "0.0.2", "C.1.0", "C.1.1", "96.1.0", "96.1.1", "0.9.1", "0.9.2", "0.9.4",
        "1.0.0")


class DataSet:
    """One data set: ``address`` (may be empty) and its ``values``, a list of
    ``(value, unit)`` with ``unit`` None when the set has no ``*unit`` part."""

    __slots__ = ("address", "values")

    def __init__(self, address, values):
        self.address = address
        self.values = list(values)

    @property
    def value(self):
        return self.values[0][0] if self.values else ""

    @property
    def unit(self):
        return self.values[0][1] if self.values else None

    @property
    def obis(self):
        """The six-group OBIS code, or None for vendor addresses that are not OBIS."""
        return obis_of(self.address)

    def to_text(self):
        out = self.address
        for v, u in self.values:
            out += "(" + v + ("" if u is None else "*" + u) + ")"
        return out

    def __eq__(self, other):
        return isinstance(other, DataSet) and (self.address, self.values) == (
            other.address, other.values)

    def __repr__(self):
        return "DataSet(%r)" % self.to_text()


def _field(text, frame):
    value, star, unit = text.partition("*")
    if len(value) > MAX_VALUE or len(unit) > MAX_UNIT or "*" in unit:
        raise IecProtocolError("data set value or unit too long or malformed", raw=frame)
    return (value, unit if star else None)


def parse_line(line):
    """``1.8.0(1.5*kWh)2.8.0(0*kWh)`` → [DataSet, DataSet]; '' → []."""
    sets = []
    i = 0
    n = len(line)
    while i < n:
        j = line.find("(", i)
        if j < 0:
            raise IecProtocolError("data set without '('", raw=line)
        address = line[i:j]
        for ch in address:                 # '*' may carry the F group (1.8.0*12)
            if ch in "()/!" or ch < " " or ch > "~":
                raise IecProtocolError("bad character in data set address", raw=line)
        values = []
        while j < n and line[j] == "(":
            k = line.find(")", j + 1)
            if k < 0:
                raise IecProtocolError("data set without ')'", raw=line)
            body = line[j + 1:k]
            for ch in body:
                if ch in "()/!" or ch < " " or ch > "~":
                    raise IecProtocolError("bad character in data set value", raw=line)
            values.append(_field(body, line))
            j = k + 1
        sets.append(DataSet(address, values))
        i = j
    return sets


def parse_lines(text):
    """A data block's text (lines ending CR LF; the last one may lack it) →
    list of lines of data sets."""
    pieces = text.split("\r\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    for ln in pieces:
        if "\r" in ln or "\n" in ln:
            raise IecProtocolError("bare CR or LF in data block", raw=ln)
    return [parse_line(ln) for ln in pieces]


def format_lines(lines, terminated=True):
    text = "\r\n".join("".join(ds.to_text() for ds in ln) for ln in lines)
    return text + "\r\n" if (terminated and lines) else text


class Readout:
    """The data block of a data readout (§6.3.4): data lines, then the end
    line ``!`` CR LF (``complete``). Also any answer block (R1, R5): then
    ``complete`` is False and ``terminated`` tells whether the last line had
    its CR LF, so every block re-encodes byte for byte."""

    __slots__ = ("lines", "complete", "terminated")

    def __init__(self, lines, complete=True, terminated=True):
        self.lines = lines
        self.complete = complete
        self.terminated = terminated

    @classmethod
    def from_text(cls, text):
        complete = text == "!\r\n" or text.endswith("\r\n!\r\n")
        body = text[:-3] if complete else text
        return cls(parse_lines(body), complete, complete or body == "" or body.endswith("\r\n"))

    @classmethod
    def from_datasets(cls, datasets, complete=True):
        return cls([[ds] for ds in datasets], complete)

    def to_text(self):
        return format_lines(self.lines, self.terminated) + ("!\r\n" if self.complete else "")

    def datasets(self):
        return [ds for ln in self.lines for ds in ln]

    def find(self, address):
        want = obis_of(address)
        for ds in self.datasets():
            if ds.address == address or (want is not None and ds.obis == want):
                return ds
        return None


def _group(text):
    if text in LETTERS:
        return LETTERS[text]
    if not text or not text.isdigit():
        raise ValueError(text)
    return int(text)


def obis_of(address):
    """EDIS/OBIS data set address → ``Obis`` (A defaults to 0 for C = 96–99, else
    1; B to 0; F to 255), or None when the address is not an OBIS code."""
    s = address.strip()
    a = b = None
    f = 255
    try:
        if ":" in s:
            head, s = s.split(":", 1)
            if "-" in head:
                ha, hb = head.split("-", 1)
                a, b = _group(ha), _group(hb)
            else:
                b = _group(head)
        for sep in ("*", "&"):
            if sep in s:
                s, tail = s.split(sep, 1)
                f = _group(tail)
        parts = s.split(".")
        if len(parts) == 2:
            parts.append("0")
        if len(parts) != 3:
            return None
        c, d, e = _group(parts[0]), _group(parts[1]), _group(parts[2])
        if a is None:
            a = 0 if 96 <= c <= 99 else 1
        return Obis(a, b or 0, c, d, e, f)
    except (ValueError, ObisError):
        return None


def decimal(text):
    """``-0012.50`` → (-1250, -2); None when ``text`` is not a plain decimal."""
    s = text.strip()
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    whole, dot, frac = s.partition(".")
    digits = whole + frac
    if not digits or not digits.isdigit() or (dot and not frac and not whole):
        return None
    return (sign * int(digits), -len(frac))


def quantity(value, unit):
    """(value text, unit) → (number in the base unit, base unit), exact; None
    when the value is not numeric."""
    d = decimal(value)
    if d is None:
        return None
    mantissa, scaler = d
    u = unit or ""
    if u in PREFIXED:
        u, shift = PREFIXED[u]
        scaler += shift
    return (scaled(mantissa, scaler), u)


def registers(datasets):
    """Data sets → [(OBIS str, value, unit)] of the numeric measuring ones."""
    meta = [obis_of(m) for m in META]
    out = []
    for ds in datasets:
        ob = ds.obis
        if ob is None or ob in meta or not ds.values:
            continue
        q = quantity(ds.value, ds.unit)
        if q is not None:
            out.append((str(ob), q[0], q[1]))
    return out
