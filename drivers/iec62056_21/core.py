"""The sans-IO IEC 62056-21 master (client) engine, h11-style.

Portable (CPython and MicroPython). Owns the master's side of a session as
a state machine in two tables (what we may send, what we may receive, in
each state) and the line-setting events the IO layer must carry out:

    conn = Connection()                    # the line starts at 300 Bd 7E1
    link.send(conn.send(Request("1234")))
    while True:
        ev = conn.next_event()             # NEED_DATA, a message, or BaudChange
        ...                                # feed bytes with conn.receive_data()

``BaudChange`` means "from now on, after the bytes already handed out by
``send()`` have left the wire, talk at ``baud`` 7E1": after our option select
in mode C (§6.4.4), after the identification in mode B, and back to 300 Bd
when a session ends. ``reaction_time`` is the least time the IO layer must
leave between the end of a meter's message and our next one (t_r, §5.3:
200 ms, or 20 ms when the third letter of the manufacturer is lower case). Quirks (``quirks.QUIRKS``) pick the option-select speed
of meters that do not honour their own proposal. Must not know sockets,
serial ports, clocks or sleeps.
"""

from drivers.iec62056_21.errors import IecProtocolError, IecUsageError
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import (
    BAUD_C,
    INITIAL_BAUD,
    Identification,
    OptionSelect,
    baud_char_for,
)
from drivers.iec62056_21.quirks import QUIRKS

IDLE = "IDLE"                  # nothing going on; line at 300 Bd
AWAIT_ID = "AWAIT_ID"          # request sent, waiting for the identification
IDENTIFIED = "IDENTIFIED"      # mode C identification received, option select due
AWAIT_DATA = "AWAIT_DATA"      # readout selected, waiting for the data message
AWAIT_P0 = "AWAIT_P0"          # programming selected, waiting for the password request
PROGRAMMING = "PROGRAMMING"    # programming mode, our turn
AWAIT_REPLY = "AWAIT_REPLY"    # command sent, waiting for ACK/NAK/data/error
DONE = "DONE"                  # readout complete; the meter is back at 300 Bd

# What the master may send in each state (kind → next state).
SEND = {
    IDLE: {"request": AWAIT_ID},
    AWAIT_ID: {"request": AWAIT_ID, "B0": IDLE},
    IDENTIFIED: {"option-readout": AWAIT_DATA, "option-programming": AWAIT_P0, "B0": IDLE},
    AWAIT_DATA: {"ack": AWAIT_DATA, "nak": AWAIT_DATA, "B0": IDLE},
    AWAIT_P0: {"nak": AWAIT_P0, "B0": IDLE},
    PROGRAMMING: {"P": AWAIT_REPLY, "R": AWAIT_REPLY, "W": AWAIT_REPLY, "E": AWAIT_REPLY,
                  "B0": IDLE},
    AWAIT_REPLY: {"ack": AWAIT_REPLY, "nak": AWAIT_REPLY, "B0": IDLE},
    DONE: {"request": AWAIT_ID, "B0": IDLE},
}
# What the meter may send in each state (kind → next state).
RECV = {
    IDLE: {},
    AWAIT_ID: {"identification-C": IDENTIFIED, "identification-B": AWAIT_DATA,
               "identification-A": AWAIT_DATA},
    IDENTIFIED: {},
    AWAIT_DATA: {"block": DONE, "block-partial": AWAIT_DATA},
    AWAIT_P0: {"P": PROGRAMMING, "block": DONE, "B0": IDLE},
    PROGRAMMING: {},
    AWAIT_REPLY: {"ack": PROGRAMMING, "nak": PROGRAMMING, "block": PROGRAMMING,
                  "block-partial": AWAIT_REPLY, "B0": IDLE},
    DONE: {},
}
# Frames dropped without an error: what only a master sends (our own echo on
# a bus without echo suppression, or another master's), and stray ACK/NAK/
# break while no session is open (noise, the echo of an earlier break).
MASTER_KINDS = ("request", "option-readout", "option-programming", "option-x")
STRAY = {IDLE: ("ack", "nak", "B0"), AWAIT_ID: ("ack", "nak", "B0"), DONE: ("ack", "nak", "B0")}
REACTION_TIME = 0.2            # t_r min (§5.3)
FAST_REACTION_TIME = 0.02      # t_r min of a meter whose identification says so (§6.3.2)
# Entering these states puts the line back to the initial speed.
LINE_RESET = (IDLE, DONE)


class _NeedData:
    def __repr__(self):
        return "NEED_DATA"


NEED_DATA = _NeedData()


class BaudChange:
    """Line-setting event for the IO layer: switch to ``baud`` 7E1 now."""

    kind = "baud"
    __slots__ = ("baud", "bytesize", "parity")

    def __init__(self, baud, bytesize=7, parity="E"):
        self.baud = baud
        self.bytesize = bytesize
        self.parity = parity

    def __eq__(self, other):
        return isinstance(other, BaudChange) and self.baud == other.baud

    def __repr__(self):
        return "BaudChange(%d)" % self.baud


def kind_of(msg):
    """The table key of a message."""
    k = msg.kind
    if k == "identification":
        return "identification-" + msg.mode
    if k == "option":
        return {"0": "option-readout", "1": "option-programming"}.get(msg.mode_char, "option-x")
    if k == "block":
        return "block-partial" if msg.partial else "block"
    if k == "command":
        return "B0" if msg.name == "B0" else msg.command
    return k


class Connection:
    """One master's view of one meter session (and the next, after ``start_over``)."""

    def __init__(self, quirks=None, max_baud=None, max_frame=65536):
        self.quirks = QUIRKS if quirks is None else quirks
        self.max_baud = max_baud
        self.state = IDLE
        self.line_baud = INITIAL_BAUD
        self.identification = None
        self.quirk = None
        self._framer = Framer("client", max_frame)
        self._events = []
        self._last_sent = None
        self.stray = 0                  # frames dropped by MASTER_KINDS / STRAY

    # -- the three verbs ---------------------------------------------------
    def receive_data(self, data):
        self._framer.feed(data)

    def send(self, msg):
        kind = kind_of(msg)
        nxt = SEND.get(self.state, {}).get(kind)
        if nxt is None:
            raise IecUsageError("cannot send %s in state %s" % (kind, self.state),
                                state=self.state, kind=kind)
        data = msg.to_bytes()
        self._last_sent = data
        if kind == "request":
            self.identification = None
            self.quirk = None
        self._enter(nxt)
        if kind.startswith("option-"):
            self._switch(msg.baud)
        return data

    def next_event(self):
        """The next event: a queued BaudChange, a message from the meter, or
        NEED_DATA. Raises IecProtocolError for bytes that are not a valid
        message (consumed; the state is unchanged, so the caller may NAK)."""
        while True:
            if self._events:
                return self._events.pop(0)
            msg = self._framer.next_frame()
            if msg is None:
                return NEED_DATA
            if self._last_sent is not None and msg.to_bytes() == self._last_sent:
                self._last_sent = None        # our own echo (no echo suppression)
                continue
            kind = kind_of(msg)
            if kind in MASTER_KINDS or kind in STRAY.get(self.state, ()):
                self.stray += 1
                continue
            return self._received(msg)

    # -- helpers for the IO layer -------------------------------------------
    def option_select(self, programming=False):
        """Our option select for the identified meter: its proposed speed, unless
        a quirk or ``max_baud`` says otherwise (§6.3.3)."""
        ident = self.identification
        if ident is None or self.state != IDENTIFIED:
            raise IecUsageError("no mode C identification to answer", state=self.state)
        baud = ident.baud
        if self.quirk is not None and self.quirk.line_baud:
            baud = self.quirk.line_baud
        if self.max_baud and baud > self.max_baud:
            baud = max(b for b in BAUD_C.values() if b <= self.max_baud)
        return OptionSelect(baud_char_for(baud), "1" if programming else "0")

    def start_over(self):
        """Abandon the session (timeout, garbage): back to IDLE at 300 Bd."""
        self._framer.clear()
        self._last_sent = None
        self._enter(IDLE)

    @property
    def reaction_time(self):
        """Seconds to leave after the meter's last byte before we send."""
        ident = self.identification
        if ident is not None and ident.manufacturer[2:3].islower():
            return FAST_REACTION_TIME
        return REACTION_TIME

    @property
    def noise(self):
        """(count, last bytes) the framer skipped as line noise."""
        return (self._framer.discarded, self._framer.noise)

    @property
    def pending(self):
        return self._framer.pending

    # -- internals -----------------------------------------------------------
    def _received(self, msg):
        kind = kind_of(msg)
        nxt = RECV.get(self.state, {}).get(kind)
        if nxt is None:
            raise IecProtocolError("unexpected %s in state %s" % (kind, self.state),
                                   state=self.state, raw=msg.to_bytes().hex())
        if isinstance(msg, Identification):
            self.identification = msg
            self.quirk = self.quirks.lookup(msg)
        self._enter(nxt)
        if kind == "identification-B":
            baud = self.quirk.line_baud if self.quirk and self.quirk.line_baud else msg.baud
            self._switch(baud)
        return msg

    def _enter(self, state):
        self.state = state
        if state in LINE_RESET:
            self._switch(INITIAL_BAUD)

    def _switch(self, baud):
        if baud != self.line_baud:
            self.line_baud = baud
            self._events.append(BaudChange(baud))
