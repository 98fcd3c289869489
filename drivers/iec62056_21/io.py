"""The blocking IEC 62056-21 ``MeterClient`` (sessions on an ``IecLine``).

CPython only. Owns sessions — sign-on, readout, programming mode with P1,
break — bounded retries (a new sign-on after a timeout or a garbled answer,
NAK for a garbled block in programming mode), learning a baud quirk when a
meter answers only noise right after the speed switch, and the MeterClient
verbs: readout or R1 registers, R5 ``P.01`` load profile and ``P.98`` log
book, 0.9.1/0.9.2 clock via R1/W1, relay via 0-0:96.3.10. Must not know
protocol byte layouts (core, frames), the line (line) or schedules and
archives (agent).
"""

from __future__ import annotations

import logging
import time

from drivers import DriverError, MeterTimeout, Unsupported
from drivers.iec62056_21 import PROTOCOL
from drivers.iec62056_21.core import (
    AWAIT_DATA,
    AWAIT_P0,
    DONE,
    IDENTIFIED,
    IDLE,
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
from drivers.iec62056_21.line import IecLine
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


def iec_address(obis: str) -> str:
    """Six-group OBIS → the shortest data set address that maps back to it."""
    ob = Obis.parse(obis)
    a, b, c, d, e, f = ob.groups
    short = "%d.%d.%d" % (c, d, e)
    if obis_of(short) == ob:
        return short
    return "%d-%d:%d.%d.%d" % (a, b, c, d, e) + ("" if f == 255 else "*%d" % f)


class IecClient(IecLine, MeterClient):
    protocol = PROTOCOL

    def __init__(self, url: str, address: str = "", baud: int | None = None,
                 password: str | None = None, timeout: float = 2.0, retries: int = 2,
                 link: Link | None = None, mode: str = "C", quirks=None,
                 learn_quirks: bool = True, clock=time.time, **_options) -> None:
        if mode not in ("A", "B", "C"):
            raise IecUsageError("mode must be A, B or C", mode=mode)
        IecLine.__init__(self, url, address, timeout, link)
        self.baud = baud
        self.password = password
        self.retries = max(0, int(retries))
        self.mode = mode
        self.quirks = QUIRKS if quirks is None else quirks
        self.learn_quirks = learn_quirks
        self.clock = clock
        self._identity: MeterIdentity | None = None
        self.identification: Identification | None = None
        self._conn: Connection | None = None      # the session under way, if any

    # -- sessions --------------------------------------------------------------
    def _sign_on(self, programming: bool) -> tuple[Connection, object]:
        """Request, identification, option select; → (conn, first message after)."""
        assert self.link is not None
        conn = self._conn = Connection(self.quirks, max_baud=self.baud)
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
        """Best effort: end whatever the meter thinks is going on — B0 at the
        session's speed, then at 300 Bd — and let the line settle."""
        assert self.link is not None
        conn, self._conn = self._conn, None
        try:
            if conn is not None and conn.line_baud != INITIAL_BAUD:
                self._write(Break().to_bytes())
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
            try:
                if self.password is not None:
                    self._command(conn, Command("P", "1", "(%s)" % self.password),
                                  expect_ack=True)
                elif write:
                    raise IecUsageError("writing needs the meter password", meter=self.address)
            except (IecRefused, IecUsageError):
                self._bye(conn)
                raise
            try:
                result = ops(conn)
            except IecRefused:
                self._bye(conn)                # leave programming mode before giving up
                raise
            self._bye(conn)
            return result

        return self._with_retries(what, once)

    def _bye(self, conn: Connection) -> None:
        """B0, unless the meter already ended the session."""
        if conn.state not in (IDLE, DONE):
            self._tx(conn, Break())

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
