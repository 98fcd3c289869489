"""A simulated IEC 62056-21 meter on a ``hil.bus.Bus``.

Owns the meter's side of the protocol over a ``hil.model.MeterModel``:
identification (only to ``/?<its address>!``, or ``/?!`` when
``answer_empty``), mode A/B/C sign-on with the speed switch, the data readout
of the full register set (EDIS codes such as ``1.8.0``, ``32.7.0``,
``0-0:96.3.10``), programming mode (P0 → P1 password → R1 reads, W1 writes of
``0.9.1``/``0.9.2`` clock and ``0-0:96.3.10`` relay, R5 ``P.01`` hourly load
profile and ``P.98`` log book in partial blocks, B0 break, NAK → repeat), the
``wire_parity`` framing (7E1 characters on a real 8N1 port: parity in bit 7;
on a pty a byte with bit 7 set is not a character), and the
``honour_baud=False`` quirk: the meter proposes ``max_baud`` but keeps its UART
at ``quirk_baud``. A master on a different speed then hears what a UART hears
across a speed mismatch (``uart_view``), not clean bytes; what the master
sends is garbled the same way unless ``line_speed`` (``pty_line_speed``)
shows it really talks at our speed.

Uses the portable frames of ``drivers.iec62056_21``; must not know the
client (``drivers.iec62056_21.io``).
"""

from __future__ import annotations

import logging
import termios

from drivers.iec62056_21.dataset import DataSet, Readout
from drivers.iec62056_21.errors import BccError, IecProtocolError
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import (
    BAUD_B,
    INITIAL_BAUD,
    Ack,
    Block,
    Command,
    Identification,
    Nak,
    OptionSelect,
    Request,
    baud_char_for,
)
from drivers.iec62056_21.profile import (
    ProfileSection,
    clock_texts,
    clock_value,
    format_logbook,
    format_profile,
    parse_request,
)
from hil.model import HOUR, PROFILE, REGISTERS, UNITS

log = logging.getLogger(__name__)

IDLE, IDENTIFIED, PROGRAMMING = "IDLE", "IDENTIFIED", "PROGRAMMING"
PROFILE_UNITS = {"Wh": "kWh", "varh": "kvarh"}


def _milli(v: int) -> str:
    """Integer in base units → thousands with three decimals, exact (1234 → 1.234)."""
    q, r = divmod(abs(int(v)), 1000)
    return ("-" if v < 0 else "") + "%d.%03d" % (q, r)


def edis(obis: str) -> str:
    """1.0.1.8.0.255 → '1.8.0'; 0.0.96.3.10.255 → '0-0:96.3.10'."""
    a, b, c, d, e, _f = (int(x) for x in obis.split("."))
    if a == 1 and b == 0:
        return "%d.%d.%d" % (c, d, e)
    return "%d-%d:%d.%d.%d" % (a, b, c, d, e)


def register_dataset(obis: str, value) -> DataSet:
    """A model register as the meter shows it (kWh, kvarh, kW, kvar; V, A, Hz as is)."""
    unit = UNITS[obis]
    if unit in ("Wh", "varh", "W", "var"):
        text, unit = ("%07d.%03d" % divmod(int(value), 1000)
                      if unit in ("Wh", "varh") else _milli(value)), "k" + unit
    elif unit == "V":
        text = "%.1f" % value
    elif unit == "A" or (unit == "" and isinstance(value, float)):
        text = "%.3f" % value
    elif unit == "Hz":
        text = "%.2f" % value
    else:
        text = "%d" % value
    return DataSet(edis(obis), [(text, unit or None)])


def uart_view(data: bytes, tx_baud: int, rx_baud: int) -> bytes:
    """What a 7E1 UART at ``rx_baud`` receives from 7E1 characters sent at ``tx_baud``:
    start-edge detection, mid-bit sampling, framing errors delivered as the byte."""
    if tx_baud == rx_baud or not data:
        return bytes(data)
    bits: list[int] = []
    for b in data:
        par = bin(b & 0x7F).count("1") & 1
        bits += [0] + [(b >> i) & 1 for i in range(7)] + [par, 1]
    k = rx_baud / float(tx_baud)          # rx bit times per tx bit

    def level(t: float) -> int:
        i = int(t / k)
        return bits[i] if 0 <= i < len(bits) else 1

    out = bytearray()
    t, end = 0.0, len(bits) * k
    step = min(1.0, k) / 2.0
    while t < end:
        while t < end and level(t) == 1:      # hunt for a start edge
            t += step
        if t >= end:
            break
        if level(t + 0.5) == 1:                # glitch, not a start bit
            t += 0.5
            continue
        ch = 0
        for i in range(7):
            ch |= level(t + 1.5 + i) << i
        out.append(ch)
        t += 9.5
        while t < end and level(t) == 0:       # wait for the line to go idle again
            t += step
    return bytes(out)


def pty_line_speed(port):
    """A ``line_speed`` sensor for a ``hil.ports.PtyPort``: the speed the agent set
    on its end (a pty shares one termios between both ends), or None."""
    speeds = {getattr(termios, "B%d" % b): b
              for b in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)}

    def sense() -> int | None:
        try:
            return speeds.get(termios.tcgetattr(port.master)[5])
        except (termios.error, OSError):
            return None

    return sense


class IecMeter:
    """One simulated meter; give it to ``hil.bus.Bus`` (``bits=10`` for 7E1)."""

    def __init__(self, model, address, clock, manufacturer: str = "WUM", max_baud: int = 9600,
                 honour_baud: bool = True, password: str = "00000000", mode: str = "C",
                 quirk_baud: int = INITIAL_BAUD, ident: str | None = None,
                 answer_empty: bool = True, block_size: int = 512,
                 session_timeout: float = 60.0, line_speed=None,
                 wire_parity: bool = False) -> None:
        self.model = model
        self.address = str(address)
        self.clock = clock
        self.manufacturer = manufacturer
        self.max_baud = max_baud
        self.honour_baud = honour_baud
        self.password = password
        self.mode = mode
        self.quirk_baud = quirk_baud
        if ident is None:
            ident = "IEC-SIM" if honour_baud else (
                "IEC-LEGACY" if quirk_baud == INITIAL_BAUD else "IEC-%d" % quirk_baud)
        self.ident = ident
        self.answer_empty = answer_empty
        self.block_size = block_size
        self.session_timeout = session_timeout
        # We assume the master talks at the speed it selected; where its real
        # speed can be sensed (pty_line_speed) and equals our UART's, what it
        # sends is heard clean (a master that fell back to 300 Bd after our
        # garbage). Sensing only clears garbling: on a pty the agent switches
        # speed the instant its bytes are written, before we hear them.
        self.line_speed = line_speed
        # IEC 62056-21 §5 frames a character as 7 data bits + even parity. On a
        # pty (no wire, no framing) a character is a byte with bit 7 clear, and
        # a byte with bit 7 set is none: noise. On a real port the bus runs at
        # 8N1, so bit 7 is the parity bit: stripped on receive, set on send.
        self.wire_parity = wire_parity
        self.framer = Framer("meter")
        self.state = IDLE
        self.authed = False
        self.master_baud = INITIAL_BAUD     # the speed the master talks (from its ACK)
        self.own_baud = INITIAL_BAUD        # the speed our UART really runs
        self.last_reply: bytes | None = None
        self.pending_blocks: list[bytes] = []
        self.last_heard = 0.0
        self.requests = 0

    # -- bus interface ---------------------------------------------------------
    def reset(self) -> None:
        self.framer.clear()

    def corrupt_address(self, reply: bytes) -> bytes:
        return reply.replace(self.ident.encode(), b"X" * len(self.ident), 1)

    def feed(self, data: bytes, now: float) -> list[tuple[bytes, int | None]]:
        if self.state != IDLE and now - self.last_heard > self.session_timeout:
            self._idle()
        self.last_heard = now
        if self.wire_parity:       # 8N1 hearing 7E1: bit 7 is the parity bit
            data = bytes(b & 0x7F for b in data)
        if self.master_baud != self.own_baud and not (
                self.line_speed is not None and self.line_speed() == self.own_baud):
            data = uart_view(data, self.master_baud, self.own_baud)
        self.framer.feed(data)
        out: list[tuple[bytes, int | None]] = []
        while True:
            self.framer.ack_may_be_option = self.state == IDENTIFIED
            try:
                msg = self.framer.next_frame()
            except BccError:
                if self.state == PROGRAMMING:
                    out.append(self._say(Nak().to_bytes()))
                continue
            except IecProtocolError:
                continue
            if msg is None:
                return [(self._framed(p), b) for p, b in out]
            out.extend(self._handle(msg))

    def _framed(self, payload: bytes) -> bytes:
        """7-bit characters as our port carries them: even parity in bit 7 on a
        real 8N1 port (``wire_parity``), the bytes themselves on a pty."""
        if not self.wire_parity:
            return payload
        return bytes(b | ((bin(b).count("1") & 1) << 7) for b in payload)

    # -- protocol ----------------------------------------------------------------
    def _idle(self) -> None:
        self.state = IDLE
        self.authed = False
        self.master_baud = self.own_baud = INITIAL_BAUD
        self.pending_blocks = []

    def _say(self, payload: bytes) -> tuple[bytes, int]:
        """A reply as the master hears it, sent at our UART's speed."""
        self.last_reply = payload
        return (uart_view(payload, self.own_baud, self.master_baud), self.own_baud)

    def _addressed(self, address: str) -> bool:
        if address == "":
            return self.answer_empty
        return address == self.address or address.lstrip("0") == self.address.lstrip("0")

    def _handle(self, msg) -> list[tuple[bytes, int | None]]:
        if isinstance(msg, Request):
            self._idle()
            if not self._addressed(msg.address):
                return []
            self.requests += 1
            return self._identify()
        if self.state == IDENTIFIED and isinstance(msg, OptionSelect):
            return self._option(msg)
        if self.state != PROGRAMMING:
            return []
        if isinstance(msg, Nak) and self.last_reply is not None:
            return [(uart_view(self.last_reply, self.own_baud, self.master_baud), self.own_baud)]
        if isinstance(msg, Ack) and self.pending_blocks:
            return [self._say(self.pending_blocks.pop(0))]
        if isinstance(msg, Command):
            return self._command(msg)
        return []

    def _identify(self) -> list[tuple[bytes, int | None]]:
        if self.mode == "C":
            baud_char = baud_char_for(self.max_baud)
        elif self.mode == "B":
            baud_char = [c for c, b in BAUD_B.items() if b == self.max_baud][0]
        else:
            baud_char = "Z"
        ident = Identification(self.manufacturer, baud_char, self.ident).to_bytes()
        replies: list[tuple[bytes, int | None]] = [(ident, INITIAL_BAUD)]
        if self.mode == "C":
            self.state = IDENTIFIED
            return replies
        if self.mode == "B":           # mode B: both switch without an option select
            self.master_baud = self.max_baud
            self.own_baud = self.max_baud if self.honour_baud else self.quirk_baud
        replies.append(self._say(self._readout_block()))
        self._idle()
        return replies

    def _option(self, opt: OptionSelect) -> list[tuple[bytes, int | None]]:
        self.master_baud = opt.baud
        self.own_baud = min(opt.baud, self.max_baud) if self.honour_baud else self.quirk_baud
        if opt.mode_char == "1":
            self.state = PROGRAMMING
            p0 = Command("P", "0", "(%s)" % self.model.serial).to_bytes()
            return [self._say(p0)]
        reply = self._say(self._readout_block())
        self._idle()
        return [reply]

    def _readout_block(self) -> bytes:
        ts = self.clock()
        sets = [DataSet("0.0.0", [(self.model.serial, None)])]
        date, tod = clock_texts(int(self.model.clock(ts)))
        sets.append(DataSet("0.9.1", [(tod, None)]))
        sets.append(DataSet("0.9.2", [(date, None)]))
        regs = self.model.registers(ts)
        sets.extend(register_dataset(o, regs[o]) for o, _ in REGISTERS)
        return Block(Readout.from_datasets(sets).to_text()).to_bytes()

    def _error(self) -> list[tuple[bytes, int | None]]:
        return [self._say(Block("(ERROR)").to_bytes())]

    def _command(self, cmd: Command) -> list[tuple[bytes, int | None]]:
        name = cmd.name
        if name == "B0":
            self._idle()
            return []
        if name == "P1":
            if cmd.data == "(%s)" % self.password:
                self.authed = True
                return [self._say(Ack().to_bytes())]
            return self._error()
        try:
            if cmd.command == "R" and cmd.data and cmd.data.startswith("P."):
                return self._profile(cmd.data)
            if name == "R1":
                return self._read(cmd.data or "")
            if name == "W1":
                return self._write(cmd.data or "")
        except IecProtocolError:
            return self._error()
        return self._error()

    def _read(self, data: str) -> list[tuple[bytes, int | None]]:
        ds = Readout.from_text(data).datasets()
        want = ds[0].obis if len(ds) == 1 else None
        if want is None:
            return self._error()
        ts = self.clock()
        date, tod = clock_texts(int(self.model.clock(ts)))
        special = {"1.0.0.9.1.255": tod, "1.0.0.9.2.255": date,
                   "1.0.0.0.0.255": self.model.serial}
        if str(want) in special:
            answer = DataSet(ds[0].address, [(special[str(want)], None)])
        else:
            regs = self.model.registers(ts)
            if str(want) not in regs:
                return self._error()
            answer = register_dataset(str(want), regs[str(want)])
            answer.address = ds[0].address
        return [self._say(Block(answer.to_text()).to_bytes())]

    def _write(self, data: str) -> list[tuple[bytes, int | None]]:
        if not self.authed:
            return self._error()
        ds = Readout.from_text(data).datasets()
        if len(ds) != 1:
            return self._error()
        ob, value = str(ds[0].obis), ds[0].value
        ts = self.clock()
        meter = int(self.model.clock(ts))
        date, tod = clock_texts(meter)
        if ob == "1.0.0.9.1.255":
            self.model.set_clock(clock_value(date, value) + (self.model.clock(ts) - meter), ts)
        elif ob == "1.0.0.9.2.255":
            self.model.set_clock(clock_value(value, tod) + (self.model.clock(ts) - meter), ts)
        elif ob == "0.0.96.3.10.255" and value in ("0", "1"):
            self.model.set_relay(value == "1", ts)
        else:
            return self._error()
        return [self._say(Ack().to_bytes())]

    def _profile(self, data: str) -> list[tuple[bytes, int | None]]:
        code, start, end = parse_request(data)
        if code not in ("P.01", "P.98"):
            return self._error()
        now = int(self.clock())
        start = start if start is not None else now - 24 * HOUR
        end = min(end if end is not None else now, now)
        if code == "P.98":
            return self._send_blocks(format_logbook(self.model.events(start, end)))
        rows = self.model.profile(start, end)
        channels = [(edis(o), PROFILE_UNITS[UNITS[o]]) for o in PROFILE]
        sec = ProfileSection("P.01", rows[0][0] if rows else start - start % HOUR, 0, 60,
                             channels, [["%07d.%03d" % divmod(vals[o], 1000) for o in PROFILE]
                                        for _, vals in rows])
        return self._send_blocks(format_profile([sec]))

    def _send_blocks(self, text: str) -> list[tuple[bytes, int | None]]:
        """An answer in partial blocks of about ``block_size`` (ACK fetches the next)."""
        lines = text.split("\r\n")[:-1]
        blocks: list[bytes] = []
        chunk = ""
        for ln in lines:
            chunk += ln + "\r\n"
            if len(chunk) >= self.block_size:
                blocks.append(Block(chunk, partial=True).to_bytes())
                chunk = ""
        if chunk or not blocks:
            blocks.append(Block(chunk).to_bytes())
        else:   # the last full chunk ends the answer
            blocks[-1] = Block(Block.from_bytes(blocks[-1]).data).to_bytes()
        self.pending_blocks = blocks[1:]
        return [self._say(blocks[0])]
