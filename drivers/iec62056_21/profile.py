"""The IEC/VDEW load profile (``P.01``) and log book (``P.98``) readouts, and
meter date/time fields.

Portable (CPython and MicroPython; no datetime). Owns the load profile
request ``R5 P.01(from;to)`` data set, the answer's layout (VDEW 2.x as used
over IEC 62056-21):

    P.01(ZSTs)(S)(RP)(z)(KZ1)(E1)…(KZz)(Ez)   header: first row's time,
                                              status (hex), period (min),
                                              channel count, code/unit pairs
    (M1)…(Mz)                                 one line per period

and the meter's ``yymmddhhmm[ss]`` (optionally season-prefixed) stamps and
``0.9.1``/``0.9.2`` time/date values converted to UTC epoch seconds (the
meter's clock is taken to run on UTC). Must not know messages or IO.
"""

from drivers.iec62056_21.dataset import DataSet, format_lines, obis_of, parse_lines, quantity
from drivers.iec62056_21.errors import IecProtocolError
from drivers.meter import MeterEvent, ProfileRow

DAY = 86400


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of the proleptic Gregorian date (H. Hinnant)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (yoe + era * 400 + (1 if m <= 2 else 0), m, d)


def epoch(y, mo, d, h=0, mi=0, s=0):
    if not (1 <= mo <= 12 and 1 <= d <= 31 and 0 <= h <= 23 and 0 <= mi <= 59 and 0 <= s <= 59):
        raise ValueError("date/time field out of range")
    return days_from_civil(y, mo, d) * DAY + h * 3600 + mi * 60 + s


def fields(ts):
    """Epoch seconds → (yy, mm, dd, hh, mi, ss), two-digit year (2000–2099)."""
    ts = int(ts)
    y, mo, d = civil_from_days(ts // DAY)
    rem = ts % DAY
    return (y % 100, mo, d, rem // 3600, rem // 60 % 60, rem % 60)


def stamp(ts, seconds=False, season=None):
    """Epoch → ``yymmddhhmm`` (``ss`` appended when ``seconds``; a season digit first)."""
    f = fields(ts)
    out = "%02d%02d%02d%02d%02d" % f[:5]
    if seconds:
        out += "%02d" % f[5]
    return (season or "") + out


def parse_stamp(text):
    """``yymmddhhmm``, ``yymmddhhmmss`` with or without a leading season digit → epoch."""
    s = text.strip()
    if not s.isdigit() or len(s) not in (10, 11, 12, 13):
        raise IecProtocolError("not a meter time stamp", raw=text)
    if len(s) in (11, 13):
        s = s[1:]
    n = [int(s[i:i + 2]) for i in range(0, len(s), 2)]
    try:
        return epoch(2000 + n[0], n[1], n[2], n[3], n[4], n[5] if len(n) > 5 else 0)
    except ValueError:
        raise IecProtocolError("time stamp out of range", raw=text) from None


def _digits(text, what):
    s = "".join(ch for ch in text if ch.isdigit())
    if len(s) < 6:
        raise IecProtocolError("not a %s value" % what, raw=text)
    return [int(s[-6:][i:i + 2]) for i in (0, 2, 4)]


def clock_value(date_text, time_text):
    """``0.9.2`` (yy-mm-dd, yymmdd, or season-prefixed) and ``0.9.1`` (hh:mm:ss
    or hhmmss) values → epoch seconds."""
    yy, mo, dd = _digits(date_text, "date")
    hh, mi, ss = _digits(time_text, "time")
    try:
        return epoch(2000 + yy, mo, dd, hh, mi, ss)
    except ValueError:
        raise IecProtocolError("clock out of range", raw=date_text + " " + time_text) from None


def clock_texts(ts):
    """Epoch → (``yy-mm-dd``, ``hh:mm:ss``) as written to 0.9.2 and 0.9.1."""
    f = fields(ts)
    return ("%02d-%02d-%02d" % f[:3], "%02d:%02d:%02d" % f[3:])


def request_text(start, end, code="P.01"):
    """The R5 data set asking for rows from ``start`` to ``end``: ``P.01(from;to)``."""
    return "%s(%s;%s)" % (code, stamp(start), stamp(end))


def parse_request(text):
    """``P.01(yymmddhhmm;yymmddhhmm)`` → (code, start, end); an empty bound is None."""
    sets = parse_lines(text)
    if len(sets) != 1 or len(sets[0]) != 1:
        raise IecProtocolError("not a load profile request", raw=text)
    ds = sets[0][0]
    lo, _, hi = ds.value.partition(";")
    return (ds.address, parse_stamp(lo) if lo else None, parse_stamp(hi) if hi else None)


class ProfileSection:
    """One header line and its rows (consecutive periods)."""

    __slots__ = ("code", "start", "status", "period", "channels", "rows")

    def __init__(self, code, start, status, period, channels, rows):
        self.code = code            # "P.01"
        self.start = start          # epoch of the first row
        self.status = status        # int (hex on the wire)
        self.period = period        # minutes
        self.channels = channels    # [(address, unit)]
        self.rows = rows            # [[value text]]

    def header(self):
        vals = [(stamp(self.start, True, "0"), None), ("%02X" % self.status, None),
                ("%d" % self.period, None), ("%d" % len(self.channels), None)]
        for addr, unit in self.channels:
            vals.append((addr, None))
            vals.append((unit, None))
        return DataSet(self.code, vals)

    def lines(self):
        return [[self.header()]] + [[DataSet("", [(v, None) for v in row])] for row in self.rows]

    def profile_rows(self):
        out = []
        obis = [obis_of(a) for a, _ in self.channels]
        for i, row in enumerate(self.rows):
            values = {}
            for j, ob in enumerate(obis):
                q = quantity(row[j], self.channels[j][1])
                if ob is not None and q is not None:
                    values[str(ob)] = q[0]
            out.append(ProfileRow(self.start + i * self.period * 60, values, self.status))
        return out


def _section(ds):
    vals = [v for v, _ in ds.values]
    try:
        start, status, period, n = parse_stamp(vals[0]), int(vals[1], 16), int(vals[2]), int(vals[3])
    except (IndexError, ValueError):
        raise IecProtocolError("bad load profile header", raw=ds.to_text()) from None
    pairs = vals[4:]
    if n < 0 or len(pairs) != 2 * n or period <= 0:
        raise IecProtocolError("load profile header channel count mismatch", raw=ds.to_text())
    channels = [(pairs[2 * i], pairs[2 * i + 1]) for i in range(n)]
    return ProfileSection(ds.address, start, status, period, channels, [])


def parse_profile(text):
    """The answer to ``R5 P.01(…)`` → list of ProfileSection."""
    sections = []
    for line in parse_lines(text):
        if len(line) == 1 and line[0].address.startswith("P."):
            sections.append(_section(line[0]))
            continue
        if not sections or len(line) != 1 or line[0].address != "":
            raise IecProtocolError("load profile row outside a section", raw=text[:80])
        row = [v for v, _ in line[0].values]
        if len(row) != len(sections[-1].channels):
            raise IecProtocolError("load profile row width mismatch", raw=line[0].to_text())
        sections[-1].rows.append(row)
    return sections


def format_profile(sections):
    lines = []
    for sec in sections:
        lines.extend(sec.lines())
    return format_lines(lines)


# The log book (``P.98``): one line per entry, laid out like a P.01 header
# with its values inline: P.98(ZSTs)(S)()(z)(KZ1)(E1)…(M1)…; the event number
# travels in channel 96.11.0 (OBIS "event code", DLMS standard event log).
EVENT_CODE = "96.11.0"


def format_logbook(events):
    """[(ts, code)] → the text of a ``P.98`` answer."""
    return "".join("P.98(%s)(00)()(1)(%s)()(%d)\r\n" % (stamp(ts, True, "0"), EVENT_CODE, code)
                   for ts, code in events)


def parse_logbook(text):
    """A ``P.98`` answer → [MeterEvent]; entries without an event code channel
    report their status word as the code."""
    out = []
    want = obis_of(EVENT_CODE)
    for line in parse_lines(text):
        for ds in line:
            vals = [v for v, _ in ds.values]
            if not ds.address.startswith("P.98") or len(vals) < 4:
                raise IecProtocolError("not a log book entry", raw=ds.to_text())
            try:
                ts, status, n = parse_stamp(vals[0]), int(vals[1], 16), int(vals[3])
            except ValueError:
                raise IecProtocolError("bad log book entry", raw=ds.to_text()) from None
            if len(vals) != 4 + 3 * n:
                raise IecProtocolError("log book entry width mismatch", raw=ds.to_text())
            code = status
            for j in range(n):
                if obis_of(vals[4 + 2 * j]) == want and vals[4 + 2 * n + j].isdigit():
                    code = int(vals[4 + 2 * n + j])
            out.append(MeterEvent(ts, code))
    return out
