"""The blocking IEC 62056-21 ``MeterClient`` over ``drivers.serialio.Link``.

CPython only (threads, pyserial). Owns carrying out what the sans-IO core
asks: writing its bytes, reading with a silence timeout, switching the line
on ``BaudChange``, bounded retries (a new sign-on after a timeout or a
garbled answer, NAK for a garbled block in programming mode), learning a
baud quirk when a meter answers garbage right after the speed switch, and
the MeterClient verbs: readout or R1 registers, R5 ``P.01`` load profile,
0.9.1/0.9.2 clock via R1/W1. Must not know protocol byte layouts (core,
frames) or schedules and archives (agent).
"""

from __future__ import annotations

import logging
import termios
import time

import serial

from drivers import DriverError, MeterTimeout, Unsupported
from drivers.iec62056_21 import PROTOCOL
from drivers.iec62056_21.core import (
    AWAIT_DATA,
    AWAIT_P0,
    IDENTIFIED,
    NEED_DATA,
    BaudChange,
    Connection,
)
from drivers.iec62056_21.dataset import Readout, obis_of, registers
from drivers.iec62056_21.errors import (
    BccError,
    GarbledAnswer,
    IecProtocolError,
    IecRefused,
    IecUsageError,
)
from drivers.iec62056_21.frames import (
    INITIAL_BAUD,
    Ack,
    Block,
    Break,
    Command,
    Identification,
    Nak,
    Request,
)
from drivers.iec62056_21.profile import (
    clock_texts,
    clock_value,
    parse_logbook,
    parse_profile,
    request_text,
)
from drivers.iec62056_21.quirks import QUIRKS
from drivers.meter import MeterClient, MeterIdentity, RegisterValue
from drivers.obis import Obis
from drivers.serialio import Link

log = logging.getLogger(__name__)
MAX_ANSWER_S = 300.0        # hard cap on one answer, however slow the line
NO_7E1: set[str] = set()    # ports found to refuse 7 data bits (ptys): emulate at once


def iec_address(obis: str) -> str:
    """Six-group OBIS → the shortest data set address that maps back to it."""
    ob = Obis.parse(obis)
    a, b, c, d, e, f = ob.groups
    short = "%d.%d.%d" % (c, d, e)
    if obis_of(short) == ob:
        return short
    return "%d-%d:%d.%d.%d" % (a, b, c, d, e) + ("" if f == 255 else "*%d" % f)


class IecClient(MeterClient):
    protocol = PROTOCOL

    def __init__(self, url: str, address: str = "", baud: int | None = None,
                 password: str | None = None, timeout: float = 2.0, retries: int = 2,
                 link: Link | None = None, mode: str = "C", quirks=None,
                 learn_quirks: bool = True, clock=time.time, **_options) -> None:
        if mode not in ("A", "B", "C"):
            raise IecUsageError("mode must be A, B or C", mode=mode)
        self.url = url
        self.address = str(address or "")
        self.baud = baud
        self.password = password
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.mode = mode
        self.quirks = QUIRKS if quirks is None else quirks
        self.learn_quirks = learn_quirks
        self.clock = clock
        self.link = link
        self._own_link = link is None
        self._identity: MeterIdentity | None = None
        self.identification: Identification | None = None
        self._last_rx = 0.0
        self.emulate_7e1 = url in NO_7E1  # the port cannot do 7E1: parity in bit 7 of 8N1

    # -- the line ----------------------------------------------------------------
    def _line(self, baud: int) -> None:
        """Put the port at ``baud`` 7E1; ports that refuse 7 data bits (ptys, some
        adapters) run 8N1 and carry the even parity in bit 7 instead."""
        assert self.link is not None
        if not self.emulate_7e1:
            try:
                self.link.configure(baudrate=baud, bytesize=7, parity="E")
                return
            except (DriverError, OSError, ValueError, termios.error, serial.SerialException) as e:
                log.info("%s refuses 7E1 (%s); emulating it over 8N1", self.url, e)
                self.emulate_7e1 = True
                NO_7E1.add(self.url)
        self.link.configure(baudrate=baud, bytesize=8, parity="N")

    def _write(self, data: bytes) -> None:
        assert self.link is not None
        if self.emulate_7e1:
            data = bytes(b | ((bin(b).count("1") & 1) << 7) for b in data)
        self.link.send(data)

    def _read(self, timeout: float) -> bytes:
        assert self.link is not None
        data = self.link.recv(timeout)
        if self.emulate_7e1 and data:
            data = bytes(b & 0x7F for b in data)
        return data

    # -- lifecycle -----------------------------------------------------------
    def connect(self) -> IecClient:
        if self.link is None:
            self.link = Link(self.url, baudrate=INITIAL_BAUD)
        if not self.link.is_open:
            self.link.connect()
        self._line(INITIAL_BAUD)
        return self

    def close(self) -> None:
        if self._own_link and self.link is not None:
            self.link.close()

    # -- the engine loop -------------------------------------------------------
    def _tx(self, conn: Connection, msg) -> None:
        wait = self._last_rx + conn.reaction_time - time.monotonic()
        if wait > 0:            # t_r: the meter turns its line around (IO timing, §5.3)
            time.sleep(wait)
        self._write(conn.send(msg))

    def _await(self, conn: Connection):
        """The next message from the meter, carrying out line events on the way."""
        assert self.link is not None
        start = time.monotonic()
        quiet_since = start
        noise0 = conn.noise[0]
        while True:
            ev = conn.next_event()
            if isinstance(ev, BaudChange):
                self._line(ev.baud)
                continue
            if ev is not NEED_DATA:
                return ev
            now = time.monotonic()
            if now - quiet_since > self.timeout or now - start > MAX_ANSWER_S:
                self._silence(conn, noise0)
            data = self._read(0.05)
            if data:
                self._last_rx = time.monotonic()
                conn.receive_data(data)
                if conn.noise[0] == noise0:     # only real progress resets the clock
                    quiet_since = time.monotonic()

    def _silence(self, conn: Connection, noise0: int) -> None:
        count, noise = conn.noise
        fields = dict(meter=self.address, port=self.url, state=conn.state,
                      baud=conn.line_baud)
        if count > noise0:
            raise GarbledAnswer("garbled answer: %d bytes of line noise" % (count - noise0),
                                raw=noise.hex(), **fields)
        if conn.pending:
            raise IecProtocolError("incomplete frame, then silence", **fields)
        raise MeterTimeout("meter %r silent for %.1fs" % (self.address, self.timeout), **fields)

    # -- sessions --------------------------------------------------------------
    def _sign_on(self, programming: bool) -> tuple[Connection, object]:
        """Request, identification, option select; → (conn, first message after)."""
        assert self.link is not None
        conn = Connection(self.quirks, max_baud=self.baud)
        self._line(INITIAL_BAUD)
        self.link.drain()
        self._tx(conn, Request(self.address))
        ident = self._await(conn)
        self.identification = ident
        if conn.state == IDENTIFIED and self.mode == "C":
            self._tx(conn, conn.option_select(programming))
        elif conn.state == IDENTIFIED:
            self._tx(conn, conn.option_select(False))
        elif programming:
            raise Unsupported("meter in mode %s has no programming mode" % ident.mode,
                              meter=self.address)
        try:
            first = self._await(conn)
        except GarbledAnswer:
            self._maybe_learn(conn)
            raise
        return conn, first

    def _maybe_learn(self, conn: Connection) -> None:
        """Only noise right after the speed switch: the meter did not follow its
        own proposal. Register a quirk so the next sign-on stays at 300 Bd. (A
        bad BCC or a framed but broken answer means the speed is right.)"""
        ident = conn.identification
        if (self.learn_quirks and ident is not None and conn.state in (AWAIT_DATA, AWAIT_P0)
                and conn.line_baud != INITIAL_BAUD and conn.quirk is None):
            q = self.quirks.learn_line_baud(ident, INITIAL_BAUD)
            log.warning("meter %r (%s %s) garbled after switching to %d Bd; learned %r",
                        self.address, ident.manufacturer, ident.model, conn.line_baud, q)

    def _with_retries(self, what: str, fn):
        last: DriverError | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (MeterTimeout, IecProtocolError) as e:
                last = e
                log.warning("iec62056-21 %s on %s meter %r failed (attempt %d/%d): %s",
                            what, self.url, self.address, attempt + 1, self.retries + 1, e)
                self._abandon()
        assert last is not None and self.link is not None
        last.fields["flight"] = self.link.recorder.dump()    # a structured field, like the rest
        setattr(last, "flight", last.fields["flight"])       # noqa: B010
        raise last

    def _abandon(self) -> None:
        """Best effort: end whatever the meter thinks is going on, at 300 Bd."""
        assert self.link is not None
        try:
            self._line(INITIAL_BAUD)
            self._write(Break().to_bytes())
            time.sleep(0.3)          # IO pacing, not protocol logic: let the meter settle
            self.link.drain()
        except DriverError:
            pass

    def _readout_once(self) -> Readout:
        conn, msg = self._sign_on(False)
        text = ""
        while True:
            if not isinstance(msg, Block):
                raise IecProtocolError("expected the data message, got %r" % (msg,),
                                       meter=self.address)
            text += msg.data
            if not msg.partial:
                return Readout.from_text(text)
            self._tx(conn, Ack())
            msg = self._await(conn)

    def readout(self) -> Readout:
        """The meter's data readout (mode C option '0', or mode A/B)."""
        return self._with_retries("readout", self._readout_once)

    def _programming(self, what: str, ops, write: bool = False):
        def once():
            conn, msg = self._sign_on(True)
            if not (isinstance(msg, Command) and msg.command == "P"):
                raise Unsupported("meter has no programming mode (answered %r)" % (msg,),
                                  meter=self.address)
            if self.password is not None:
                self._command(conn, Command("P", "1", "(%s)" % self.password), expect_ack=True)
            elif write:
                raise IecUsageError("writing needs the meter password", meter=self.address)
            result = ops(conn)
            self._tx(conn, Break())
            return result

        return self._with_retries(what, once)

    def _command(self, conn: Connection, cmd: Command, expect_ack: bool = False):
        """Send a programming command; NAK garbled answers and repeat on the
        meter's NAK, at most ``retries`` times; → the answer text (or '' for ACK)."""
        text = ""
        tries = 0
        self._tx(conn, cmd)
        while True:
            try:
                msg = self._await(conn)
            except BccError:
                tries += 1
                if tries > self.retries:
                    raise
                self._tx(conn, Nak())
                continue
            if isinstance(msg, Nak):
                tries += 1
                if tries > self.retries:
                    raise IecRefused("meter keeps refusing %s" % cmd.name, meter=self.address)
                self._tx(conn, cmd)
                continue
            if isinstance(msg, Ack):
                return text
            if isinstance(msg, Command):            # the meter broke off (B0)
                raise IecRefused("meter ended the session after %s" % cmd.name,
                                 meter=self.address, command=cmd.name)
            if msg.error is not None:
                raise IecRefused("meter error %r for %s %s" % (msg.error, cmd.name, cmd.data),
                                 meter=self.address, error=msg.error, command=cmd.name)
            text += msg.data
            if not msg.partial:
                if expect_ack:
                    raise IecProtocolError("expected ACK, got data", meter=self.address)
                return text
            self._tx(conn, Ack())

    def _read1(self, conn: Connection, address: str):
        ds = Readout.from_text(self._command(conn, Command("R", "1", address + "()"))).find(address)
        if ds is None:
            raise IecProtocolError("answer does not carry %s" % address, meter=self.address)
        return ds

    # -- MeterClient -------------------------------------------------------------
    def identify(self) -> MeterIdentity:
        if self._identity is None:
            ro = self.readout()
            serial = ro.find("0.0.0") or ro.find("C.1.0") or ro.find("96.1.0")
            ident = self.identification
            fallback = self.address or (ident.ident if ident else "")
            self._identity = MeterIdentity(
                PROTOCOL, self.address, serial.value if serial is not None else fallback,
                manufacturer=ident.manufacturer if ident else "",
                model=ident.model if ident else "")
        return self._identity

    def read_registers(self, obis=None) -> list[RegisterValue]:
        if obis is not None and self.password is not None and self.mode == "C":
            wanted = [str(Obis.parse(o)) for o in obis]

            def ops(conn):
                out = []
                for o in wanted:
                    ds = self._read1(conn, iec_address(o))
                    out.extend(registers([ds]))
                return out

            regs = self._programming("R1 registers", ops)
        else:
            regs = registers(self.readout().datasets())
            if obis is not None:
                keep = {str(Obis.parse(o)) for o in obis}
                regs = [r for r in regs if r[0] in keep]
        ts = int(self.clock())
        return [RegisterValue(o, v, u, ts) for o, v, u in regs]

    def read_load_profile(self, start, end):
        def ops(conn):
            try:
                text = self._command(conn, Command("R", "5", request_text(start, end)))
            except IecRefused as e:
                raise Unsupported("meter has no P.01 load profile: %s" % e,
                                  meter=self.address) from e
            rows = []
            for sec in parse_profile(text):
                rows.extend(r for r in sec.profile_rows() if start <= r.ts <= end)
            return rows

        return self._programming("R5 load profile", ops)

    def read_events(self, start, end):
        def ops(conn):
            try:
                text = self._command(conn, Command("R", "5", request_text(start, end, "P.98")))
            except IecRefused as e:
                raise Unsupported("meter has no P.98 log book: %s" % e,
                                  meter=self.address) from e
            return [ev for ev in parse_logbook(text) if start <= ev.ts <= end]

        return self._programming("R5 log book", ops)

    def read_clock(self) -> int:
        def ops(conn):
            t1 = self._read1(conn, "0.9.1").value
            d = self._read1(conn, "0.9.2").value
            t2 = self._read1(conn, "0.9.1").value
            if t2 < t1:                                   # midnight passed in between
                d = self._read1(conn, "0.9.2").value
            return clock_value(d, t2)

        return self._programming("clock read", ops)

    def set_clock(self, ts) -> None:
        date, tod = clock_texts(int(ts))

        def ops(conn):
            self._command(conn, Command("W", "1", "0.9.2(%s)" % date), expect_ack=True)
            self._command(conn, Command("W", "1", "0.9.1(%s)" % tod), expect_ack=True)

        self._programming("clock set", ops, write=True)

    def _relay(self, connected: bool) -> None:
        def ops(conn):
            self._command(conn, Command("W", "1", "0-0:96.3.10(%d)" % connected), expect_ack=True)

        self._programming("relay", ops, write=True)

    def disconnect(self) -> None:
        self._relay(False)

    def reconnect(self) -> None:
        self._relay(True)
