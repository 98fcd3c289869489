"""A simulated Modbus RTU meter on the hil bus.

Owns: serving one ``hil.model.MeterModel`` through a device profile's register
map (``drivers.modbus.profile``): read holding/input registers (0x03/0x04),
write single/multiple registers (0x06/0x10: relay, clock, load-profile cursor
of the generic profile), exception responses (illegal function / data address
/ data value), answering only its own unit address, and ``corrupt_address``
for the fault injector. ``refuse=["identity" | obis, ...]`` plays a firmware
without those registers: any read touching them gets exception 02
(``refusals`` counts those answers).

Built on our sans-IO ``drivers.modbus.rtu`` framer rather than pymodbus's
server datastore: register values are computed from the model at the instant
of each request (a datastore would need refreshing before every read), and
the hunting framer keeps the meter deaf to other stations' traffic and noise.

Must not know: the port or the timing (``hil.bus.Bus`` paces replies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from drivers.modbus import rtu
from drivers.modbus.profile import HOLDING, INPUT, Profile, Register, load
from hil.model import MeterModel

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


class ModbusMeter:
    def __init__(self, model: MeterModel, address: str | int, clock: Callable[[], float],
                 profile: str | Profile = "generic",
                 **options: object) -> None:
        self.model = model
        self.address = str(int(address))
        self.unit = int(address)
        self.clock = clock
        self.profile: Profile = profile if isinstance(profile, Profile) else load(profile)
        self.framer = rtu.Framer(rtu.REQUEST)
        self.cursor = 0           # load-profile row selected by the master
        self.requests = 0
        names = options.get("refuse") or ()
        self.refused = [self._named(str(n)) for n in names]  # type: ignore[attr-defined]
        self.refusals = 0         # reads refused because they touch ``refused``

    def _named(self, name: str) -> Register:
        p = self.profile
        if name == "identity":
            if p.identity is None:
                raise ValueError("profile %s has no identity register" % p.name)
            return p.identity
        return p.register(name)

    # -- the bus interface ------------------------------------------------------
    def feed(self, data: bytes, now: float) -> list[tuple[bytes, int | None]]:
        self.framer.receive_data(data)
        out: list[tuple[bytes, int | None]] = []
        while True:
            frame = self.framer.next_frame()
            if frame is None:
                return out
            if frame.address != self.unit:
                continue          # another meter's request, or a broadcast
            self.requests += 1
            try:
                reply = self.answer(frame)
            except (ValueError, OverflowError) as e:   # a model value the map cannot hold
                log.warning("meter %s cannot encode: %s", self.address, e)
                reply = rtu.exception_response(self.unit, frame.function, 4)
            out.append((reply.to_bytes(), None))

    def reset(self) -> None:
        self.framer.reset()

    def corrupt_address(self, reply: bytes) -> bytes:
        if not reply:
            return reply
        other = (reply[0] % 247) + 1
        return rtu.with_crc(bytes([other]) + reply[1:-2])

    # -- requests ----------------------------------------------------------------
    def answer(self, req: rtu.Frame) -> rtu.Frame:
        fc = req.function
        if fc in (rtu.READ_HOLDING, rtu.READ_INPUT):
            start, count, _ = req.request_fields()
            if not 1 <= count <= 125:
                return rtu.exception_response(self.unit, fc, ILLEGAL_VALUE)
            table = INPUT if fc == rtu.READ_INPUT else HOLDING
            words = self.read(table, start, count)
            if words is None:
                return rtu.exception_response(self.unit, fc, ILLEGAL_ADDRESS)
            return rtu.read_response(self.unit, fc, words)
        if fc in (rtu.WRITE_SINGLE, rtu.WRITE_MULTIPLE):
            start, second, words = req.request_fields()
            if fc == rtu.WRITE_SINGLE:
                words = [second]
            elif len(words) != second or not 1 <= second <= 123:
                return rtu.exception_response(self.unit, fc, ILLEGAL_VALUE)
            code = self.write(start, words)
            if code:
                return rtu.exception_response(self.unit, fc, code)
            return rtu.write_response(self.unit, fc, start, second)
        return rtu.exception_response(self.unit, fc, ILLEGAL_FUNCTION)

    def values(self, now: float) -> dict[str, int | float]:
        vals = self.model.registers(now)
        for reg in self.profile.registers:
            if reg.derived:
                vals[reg.obis] = sum(vals[o] for o in reg.derived)
        return vals

    @staticmethod
    def _put(out: dict[int, int], start: int, words: list[int]) -> None:
        for i, w in enumerate(words):
            out[start + i] = w

    def image(self, table: str, now: float) -> dict[int, int]:
        """Register address -> word for every mapped register of ``table``."""
        out: dict[int, int] = {}
        p = self.profile
        if table == INPUT:
            vals = self.values(now)
            for reg in p.registers:
                if reg.table == INPUT:
                    self._put(out, reg.address, reg.encode(vals[reg.obis]))
        if p.identity is not None and p.identity.table == table:
            ident = p.identity
            self._put(out, ident.address, ident.encode(int(self.model.serial)))
        ctl = p.controls
        if table == HOLDING:
            state = {"relay": 1 if self.model.relay_connected else 0,
                     "clock": int(self.model.clock(now)), "profile_cursor": self.cursor}
            for name, reg in ctl.items():
                self._put(out, reg.address, reg.encode(state.get(name, 0)))
        lp = p.load_profile
        if lp and table == lp["table"] and self.cursor:
            self._put(out, lp["address"], self.profile_window(lp, now))
        return out

    def profile_window(self, lp: dict[str, Any], now: float) -> list[int]:
        """Rows from the cursor on: ts u32 then u64 columns; rows the meter
        has not captured yet (after its clock) are zeros."""
        words: list[int] = []
        step = int(lp.get("interval", 3600))
        for i in range(int(lp.get("rows", 1))):
            ts = self.cursor + i * step
            if ts > self.model.clock(now):
                words += [0] * (2 + 4 * len(lp["columns"]))
                continue
            row = self.model.profile_row(ts)
            words += [ts >> 16, ts & 0xFFFF]
            for obis in lp["columns"]:
                words += [(row[obis] >> s) & 0xFFFF for s in (48, 32, 16, 0)]
        return words

    def read(self, table: str, start: int, count: int) -> list[int] | None:
        end = start + count
        if end > 0x10000 or not self.profile.readable(table, start, end):
            return None
        if any(r.table == table and r.address < end and start < r.end for r in self.refused):
            self.refusals += 1
            return None           # this firmware has no such register
        img = self.image(table, self.clock())
        return [img.get(a, 0) for a in range(start, end)]

    def write(self, start: int, words: list[int]) -> int:
        """Apply a write to the control registers; 0 or an exception code."""
        now = self.clock()
        for name, reg in self.profile.controls.items():
            if reg.address == start and reg.words == len(words):
                value = 0
                for w in words:
                    value = (value << 16) | w
                if name == "relay":
                    if value not in (0, 1):
                        return ILLEGAL_VALUE
                    self.model.set_relay(bool(value), now)
                elif name == "clock":
                    self.model.set_clock(value, now)
                elif name == "profile_cursor":
                    if value % 3600:
                        return ILLEGAL_VALUE
                    self.cursor = value
                log.info("meter %s: %s <- %d", self.address, name, value)
                return 0
        return ILLEGAL_ADDRESS
