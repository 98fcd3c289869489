"""The COSEM interface classes a concentrator reads, as data (Blue Book
4.3-4.5): class ids, attribute and method numbers, the well-known logical
names, and the conversions from attribute values to readings: scaler_unit,
clock date-time, capture objects, selective access by range / by entry, and
profile buffers (rows with a null clock inferred from the capture period).

Portable. Owns meaning of COSEM attributes; must not know HDLC, sessions or
ciphering.
"""

from drivers import RemoteProtocolError
from drivers.dlms import axdr
from drivers.dlms.axdr import (
    ARRAY,
    DATE_TIME,
    DOUBLE_LONG_UNSIGNED,
    INTEGER,
    LONG_UNSIGNED,
    NULL,
    OCTET_STRING,
    STRUCTURE,
    UNSIGNED,
    DateTime,
)
from drivers.meter import ProfileRow, scaled
from drivers.obis import Obis
from drivers.units import unit_name

DATA, REGISTER, EXTENDED_REGISTER, PROFILE_GENERIC, CLOCK = 1, 3, 4, 7, 8
ASSOCIATION_LN, DISCONNECT_CONTROL = 15, 70

# attribute numbers (Blue Book 4.3.x / 4.5.x)
VALUE, SCALER_UNIT, STATUS, CAPTURE_TIME = 2, 3, 4, 5          # Data/Register/Extended
BUFFER, CAPTURE_OBJECTS, CAPTURE_PERIOD = 2, 3, 4              # Profile generic
ENTRIES_IN_USE, PROFILE_ENTRIES = 7, 8
TIME, TIME_ZONE, CLOCK_STATUS = 2, 3, 4                        # Clock
DST_BEGIN, DST_END, DST_DEVIATION, DST_ENABLED = 5, 6, 7, 8
OUTPUT_STATE, CONTROL_STATE, CONTROL_MODE = 2, 3, 4            # Disconnect control
REMOTE_DISCONNECT, REMOTE_RECONNECT = 1, 2                     # its methods
REPLY_TO_HLS = 1                                               # Association LN method 1

CLOCK_OBIS = "0.0.1.0.0.255"
LOAD_PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"
EVENT_CODE = "0.0.96.11.0.255"
PROFILE_STATUS = "0.0.96.10.1.255"
LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
SERIAL_NUMBER = "0.0.96.1.0.255"
DISCONNECTOR = "0.0.96.3.10.255"
ERROR_REGISTER = "0.0.97.97.0.255"
CURRENT_ASSOCIATION = "0.0.40.0.0.255"

# class of an OBIS code in a register read when it is not a Register (class 3)
REGISTER_CLASSES = {DISCONNECTOR: DISCONNECT_CONTROL, ERROR_REGISTER: DATA,
                    SERIAL_NUMBER: DATA, LOGICAL_DEVICE_NAME: DATA, EVENT_CODE: DATA,
                    PROFILE_STATUS: DATA, CLOCK_OBIS: CLOCK}


def obis_bytes(obis):
    return Obis.parse(str(obis)).to_bytes()


def obis_text(raw):
    return str(Obis.from_bytes(raw))


def register_class(obis):
    return REGISTER_CLASSES.get(str(obis), REGISTER)


def has_scaler(class_id):
    return class_id in (REGISTER, EXTENDED_REGISTER)


def scaler_unit(data):
    """Register attribute 3, structure {integer scaler, enum unit} -> (scaler, unit name)."""
    tag, value = data
    if tag != STRUCTURE or len(value) != 2:
        raise RemoteProtocolError("scaler_unit is not a 2-element structure")
    scaler, unit = value[0][1], value[1][1]
    if not isinstance(scaler, int) or not isinstance(unit, int):
        raise RemoteProtocolError("scaler_unit elements are not integers")
    return scaler, unit_name(unit)


def reading_value(data, scaler=0):
    """A register's value attribute with its scaler applied; booleans as 0/1."""
    tag, value = data
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (int, float)):
        return scaled(value, scaler) if isinstance(value, int) else value * (10 ** scaler)
    if tag in (OCTET_STRING,) and isinstance(value, bytes):
        return value
    return value


def clock_time(data):
    """Clock attribute 2 (octet-string or date-time) -> DateTime."""
    tag, value = data
    if tag not in (OCTET_STRING, DATE_TIME) or not isinstance(value, bytes):
        raise RemoteProtocolError("clock time is not an octet-string")
    return DateTime.from_bytes(value)


def date_time_data(ts, deviation=0, status=0):
    return (OCTET_STRING, DateTime.from_epoch(ts, deviation, status).to_bytes())


# -- capture objects and selective access (Blue Book 4.3.6) ----------------------
class CaptureObject:
    """structure {class_id long-unsigned, logical_name octet-string(6),
    attribute_index integer, data_index long-unsigned}"""

    __slots__ = ("class_id", "obis", "attribute", "data_index")

    def __init__(self, class_id, obis, attribute=2, data_index=0):
        self.class_id, self.obis = class_id, str(obis)
        self.attribute, self.data_index = attribute, data_index

    def to_data(self):
        return (STRUCTURE, [(LONG_UNSIGNED, self.class_id), (OCTET_STRING, obis_bytes(self.obis)),
                            (INTEGER, self.attribute), (LONG_UNSIGNED, self.data_index)])

    @classmethod
    def from_data(cls, data):
        tag, value = data
        if tag != STRUCTURE or len(value) != 4 or value[1][0] != OCTET_STRING \
                or len(value[1][1]) != 6:
            raise RemoteProtocolError("bad capture object definition")
        return cls(value[0][1], obis_text(value[1][1]), value[2][1], value[3][1])

    def __eq__(self, other):
        return isinstance(other, CaptureObject) and \
            (self.class_id, self.obis, self.attribute) == (other.class_id, other.obis,
                                                           other.attribute)

    def __repr__(self):
        return "CaptureObject(%d, %s, %d)" % (self.class_id, self.obis, self.attribute)


def capture_objects(data):
    tag, value = data
    if tag != ARRAY:
        raise RemoteProtocolError("capture_objects is not an array")
    return [CaptureObject.from_data(v) for v in value]


CLOCK_CAPTURE = CaptureObject(CLOCK, CLOCK_OBIS, TIME)


def range_access(start, end, deviation=0):
    """Selective access by range (selector 1) on the clock column, all columns."""
    return (1, (STRUCTURE, [CLOCK_CAPTURE.to_data(), date_time_data(start, deviation),
                            date_time_data(end, deviation), (ARRAY, [])]))


def entry_access(from_entry, to_entry, from_value=1, to_value=0):
    """Selective access by entry (selector 2): entries and columns, 1-based, 0 = last."""
    return (2, (STRUCTURE, [(DOUBLE_LONG_UNSIGNED, from_entry), (DOUBLE_LONG_UNSIGNED, to_entry),
                            (LONG_UNSIGNED, from_value), (LONG_UNSIGNED, to_value)]))


def parse_range_access(access):
    """-> (start, end) epoch seconds of a by-range selective access."""
    selector, data = access
    if selector != 1 or data[0] != STRUCTURE or len(data[1]) != 4:
        raise RemoteProtocolError("not a range access")
    return clock_time(data[1][1]).to_epoch(), clock_time(data[1][2]).to_epoch()


def buffer_rows(data, columns, period, scalers=None):
    """Profile buffer -> list of (ts, [values]) in column order, the clock
    column replaced by the UTC ts. A row whose clock is null follows the one
    before it by ``period`` seconds (Blue Book 4.3.6, compressed buffers)."""
    if data[0] != ARRAY:
        raise RemoteProtocolError("profile buffer is not an array")
    clock_col = None
    for i, c in enumerate(columns):
        if c.class_id == CLOCK and c.attribute == TIME:
            clock_col = i
            break
    if clock_col is None:
        raise RemoteProtocolError("profile has no clock column")
    rows, last = [], None
    for row in data[1]:
        if row[0] != STRUCTURE or len(row[1]) != len(columns):
            raise RemoteProtocolError("profile row does not match its capture objects")
        cells = row[1]
        if cells[clock_col][0] == NULL:
            if last is None or not period:
                raise RemoteProtocolError("null clock in the first profile row")
            ts = last + period
        else:
            ts = clock_time(cells[clock_col]).to_epoch()
        last = ts
        values = []
        for i, cell in enumerate(cells):
            sc = (scalers or {}).get(columns[i].obis, 0)
            values.append(None if i == clock_col else reading_value(cell, sc))
        rows.append((ts, values))
    return rows


def profile_rows(data, columns, period, scalers=None):
    """Load-profile buffer -> list of ProfileRow {obis: value} (status column separate)."""
    out = []
    for ts, values in buffer_rows(data, columns, period, scalers):
        row, status = {}, None
        for c, v in zip(columns, values):  # noqa: B905 (MicroPython zip has no strict=)
            if c.class_id == CLOCK:
                continue
            if c.obis == PROFILE_STATUS:
                status = v
            else:
                row[c.obis] = v
        out.append(ProfileRow(ts, row, status))
    return out


def encode_data(data):
    return axdr.encode(data)


# The register set a DLMS meter serves when the device profile names none
# (the agent's default list; a device profile may override it).
DEFAULT_REGISTERS = [
    "1.0.1.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255", "1.0.1.8.3.255", "1.0.1.8.4.255",
    "1.0.2.8.0.255", "1.0.2.8.1.255", "1.0.2.8.2.255", "1.0.2.8.3.255", "1.0.2.8.4.255",
    "1.0.3.8.0.255", "1.0.4.8.0.255",
    "1.0.32.7.0.255", "1.0.52.7.0.255", "1.0.72.7.0.255",
    "1.0.31.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255",
    "1.0.21.7.0.255", "1.0.41.7.0.255", "1.0.61.7.0.255",
    "1.0.1.7.0.255", "1.0.3.7.0.255", "1.0.13.7.0.255", "1.0.14.7.0.255",
    DISCONNECTOR, ERROR_REGISTER,
]
# Standard event log codes (Blue Book "Standard event log" numbering)
EVENT_NAMES = {1: "power_down", 2: "power_up", 40: "cover_open", 41: "cover_closed",
               47: "magnetic_tamper", 59: "relay_disconnected", 60: "relay_connected"}


# -- what commands write: activity calendar (class 20, Blue Book 4.5.5) and
# limiter (class 71, Blue Book 4.5.9); disconnect control states (4.5.8) ---------
ACTIVITY_CALENDAR, LIMITER = 20, 71
CALENDAR = "0.0.13.0.0.255"
LIMITER_OBIS = "0.0.17.0.0.255"
TARIFF_SCRIPTS = "0.0.10.0.100.255"      # the tariffication script table (Blue Book 4.4.6)
CALENDAR_NAME_ACTIVE, SEASON_PROFILE_ACTIVE, WEEK_PROFILE_ACTIVE, DAY_PROFILE_ACTIVE = 2, 3, 4, 5
CALENDAR_NAME_PASSIVE, SEASON_PROFILE_PASSIVE, WEEK_PROFILE_PASSIVE, DAY_PROFILE_PASSIVE = \
    6, 7, 8, 9
ACTIVATE_PASSIVE_TIME = 10
ACTIVATE_PASSIVE_CALENDAR = 1            # its method
PASSIVE_NAMES = {CALENDAR_NAME_PASSIVE: "calendar_name_passive",
                 SEASON_PROFILE_PASSIVE: "season_profile_passive",
                 WEEK_PROFILE_PASSIVE: "week_profile_table_passive",
                 DAY_PROFILE_PASSIVE: "day_profile_table_passive",
                 ACTIVATE_PASSIVE_TIME: "activate_passive_calendar_time"}
MONITORED_VALUE, THRESHOLD_ACTIVE = 2, 3
LIMITER_ATTRIBUTES = {"threshold_normal": 4, "threshold_emergency": 5,
                      "min_over_threshold_duration": 6, "min_under_threshold_duration": 7}
CONTROL_STATES = {0: "disconnected", 1: "connected", 2: "ready_for_reconnection"}


def season_start(month, day):
    """A season's start: every year on month-day at 00:00 (year, day of week,
    hundredths, deviation and status not specified)."""
    return bytes((0xFF, 0xFF, month, day, 0xFF, 0, 0, 0, 0xFF, 0x80, 0x00, 0xFF))


def day_time(text):
    """'HH:MM:SS' -> COSEM time, 4 octets (hundredths 0)."""
    h, m, s = (int(x) for x in text.split(":"))
    return bytes((h, m, s, 0))


def passive_calendar(spec, deviation=0):
    """An activity-calendar spec (agent.command_args ``tariff``, normalised) ->
    [(attribute, Data)] for attributes 6..10, in writing order."""
    script = obis_bytes(TARIFF_SCRIPTS)
    seasons = [(STRUCTURE, [(OCTET_STRING, s["name"].encode()),
                            (OCTET_STRING, season_start(*(int(x) for x in s["start"].split("-")))),
                            (OCTET_STRING, s["week"].encode())]) for s in spec["seasons"]]
    weeks = [(STRUCTURE, [(OCTET_STRING, w["name"].encode())]
              + [(UNSIGNED, d) for d in w["days"]]) for w in spec["weeks"]]
    days = [(STRUCTURE, [(UNSIGNED, d["id"]), (ARRAY, [
        (STRUCTURE, [(OCTET_STRING, day_time(a["start"])), (OCTET_STRING, script),
                     (LONG_UNSIGNED, a["tariff"])]) for a in d["actions"]])])
        for d in spec["days"]]
    return [(CALENDAR_NAME_PASSIVE, (OCTET_STRING, spec["name"].encode())),
            (SEASON_PROFILE_PASSIVE, (ARRAY, seasons)),
            (WEEK_PROFILE_PASSIVE, (ARRAY, weeks)),
            (DAY_PROFILE_PASSIVE, (ARRAY, days)),
            (ACTIVATE_PASSIVE_TIME, date_time_data(spec["activate"], deviation))]


def limiter_values(values):
    """{threshold_normal, threshold_emergency, min_over_threshold_duration,
    min_under_threshold_duration: int} (any of them) -> [(attribute, Data)].
    Thresholds travel as double-long-unsigned (the unit of the monitored value,
    W for active power), durations as double-long-unsigned seconds."""
    return [(LIMITER_ATTRIBUTES[k], (DOUBLE_LONG_UNSIGNED, int(values[k])))
            for k in ("threshold_normal", "threshold_emergency", "min_over_threshold_duration",
                      "min_under_threshold_duration") if k in values]
