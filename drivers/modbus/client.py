"""The Modbus meter client behind ``drivers.meter.MeterClient``.

Owns: reading a device profile's registers in few grouped requests, the
identity (serial) register, load-profile rows through the generic profile's
cursor, relay and clock control, ``open_client`` and ``scan``. The wire and
its retries are ``drivers.modbus.transport``.

Refused optional registers: when a grouped request is refused with exception
02 or 03 (illegal data address / value, Modbus Application Protocol V1.1b3
§7) and its block holds registers the profile marks optional, the mandatory
ones are read on their own (a refusal there raises ``MeterRefused``: the
meter lacks a register it must have), and the optional ones by halves, until
each refused one has been asked alone and refused alone; only then is it
skipped. So a refusal caused by something else (the request's length, a gap
the profile wrongly declares readable) never costs a register, and no
request ever spans an optional register outside the set asked (it may be one
the meter refuses). A register alone in its request (the Eastron identity)
costs no extra round trip; one among n optional registers of a request costs
the re-read of the mandatory ones around them (at most n + 1 requests) and
about two requests per halving (log2 n of them). ``skipped`` lists what this session found refused
(``(obis, reason)``); ``refused`` (also an ``open_client`` option, which the
agent fills from its archive) holds the OBIS codes not asked again. A refused
identity leaves ``identify().id`` "": callers name the meter by their
fallback id (docs/INTERFACES.md).

Sharing a port: ``open_client(url, ...)`` reuses the ``SerialBus`` already
open for ``url`` (reference counted; the last ``close()`` closes the port);
``hold_port(url)`` keeps it open across a whole cycle; or pass
``link=<drivers.serialio.Link>`` (connected) to run over the agent's own
port, which is then never closed here.

Must not know: schedules, archives, the HES.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from drivers import DriverError, MeterRefused, MeterTimeout, RemoteProtocolError, Unsupported
from drivers.meter import MeterClient, MeterIdentity, ProfileRow, RegisterValue
from drivers.modbus import rtu
from drivers.modbus.profile import INPUT, Block, Profile, ProfileError, Register, load
from drivers.modbus.transport import (  # noqa: F401  (re-exported for callers)
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    SerialBus,
    hold_port,
    release_bus,
    shared_bus,
)

log = logging.getLogger(__name__)
REFUSED_CODES = (2, 3)     # illegal data address / value: "this meter has no such register"


class ModbusClient(MeterClient):
    """One Modbus unit on a (shared) ``SerialBus``, read through a profile."""

    protocol = "modbus"

    def __init__(self, bus: SerialBus, address: int, profile: Profile,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 clock: Callable[[], float] = time.time,
                 refused: Iterable[str] = ()) -> None:
        if not 1 <= address <= 247:
            raise ProfileError("Modbus unit address must be 1..247, got %d" % address)
        self.bus = bus
        self.unit = address
        self.profile = profile
        self.timeout = timeout
        self.retries = retries
        self.clock = clock
        self.serial: str | None = None
        self.round_trips = 0
        self.quiet = False        # scans expect silence: log failures at DEBUG
        self.refused: set[str] = set(refused)           # optional OBIS codes not asked
        self.skipped: list[tuple[str, str]] = []        # (obis, reason) refused this session
        self._closed = False

    # -- requests ---------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], object], expect: tuple[int, int]) -> object:
        self.round_trips += 1
        return self.bus.execute(self.unit, call, self.timeout, self.retries, what, self.quiet,
                                expect)

    def read_block(self, block: Block) -> list[int]:
        pm = self.bus.pm
        fn = pm.read_input_registers if block.table == INPUT else pm.read_holding_registers
        what = "read %s %d+%d" % (block.table, block.start, block.count)
        fc = rtu.READ_INPUT if block.table == INPUT else rtu.READ_HOLDING
        resp = self._call(what, lambda: fn(block.start, count=block.count, device_id=self.unit),
                          (fc, 5 + 2 * block.count))
        words = list(getattr(resp, "registers", []))[:block.count]
        if len(words) != block.count:
            raise RemoteProtocolError("unit %d sent %d registers for %s" % (
                self.unit, len(words), what), meter=str(self.unit), port=self.bus.url)
        return words

    def write(self, table_reg: object, value: int) -> None:
        reg = table_reg
        words = reg.encode(value)  # type: ignore[attr-defined]
        pm = self.bus.pm
        addr = reg.address  # type: ignore[attr-defined]
        if len(words) == 1:
            self._call("write %d" % addr,
                       lambda: pm.write_register(addr, words[0], device_id=self.unit),
                       (rtu.WRITE_SINGLE, 8))
        else:
            self._call("write %d+%d" % (addr, len(words)),
                       lambda: pm.write_registers(addr, words, device_id=self.unit),
                       (rtu.WRITE_MULTIPLE, 8))

    def _read(self, registers: list[Register]) -> dict[str, int | float]:
        """Values of ``registers`` (optional ones refused before are left out).
        No request spans an optional register outside the set (it may be one
        the meter refuses), so a refusal always concerns the set's own words."""
        out: dict[str, int | float] = {}
        wanted = [r for r in registers if not (r.optional and r.obis in self.refused)]
        keep = set(wanted)
        avoid = [r for r in self.profile.optional if r not in keep]
        for block in self.profile.plan(wanted, avoid):
            try:
                words = self.read_block(block)
            except MeterRefused as e:
                regs = block.registers
                if e.fields.get("code") not in REFUSED_CODES or not any(r.optional for r in regs):
                    obis = [r.obis for r in regs]
                    e.fields["obis"] = obis
                    e.obis = obis  # type: ignore[attr-defined]
                    raise
                if len(regs) == 1:          # asked alone: the meter has no such register
                    self._refuse(regs[0], e)
                else:
                    out.update(self._read_around(block))
                continue
            out.update(self._decode(block, words))
        return out

    def _decode(self, block: Block, words: list[int]) -> dict[str, int | float]:
        try:
            return block.decode(words)
        except (ValueError, OverflowError) as e:
            raise RemoteProtocolError("unit %d: bad value in %r: %s" % (self.unit, block, e),
                                      meter=str(self.unit), port=self.bus.url) from e

    def _read_around(self, block: Block) -> dict[str, int | float]:
        """``block`` (two or more registers, some optional) was refused: read
        its mandatory registers without the optional ones (a refusal there is
        the meter's answer and raises), then each half of the optional ones,
        halving on until every refused register has been refused alone."""
        mandatory = [r for r in block.registers if not r.optional]
        optional = [r for r in block.registers if r.optional]
        out = self._read(mandatory) if mandatory else {}
        if mandatory or len(optional) == 1:
            out.update(self._read(optional))
        else:
            half = len(optional) // 2
            out.update(self._read(optional[:half]))
            out.update(self._read(optional[half:]))
        return out

    def _refuse(self, reg: Register, err: MeterRefused) -> None:
        code = int(err.fields.get("code") or 0)  # type: ignore[call-overload]
        reason = rtu.EXCEPTIONS.get(code, "code %d" % code)
        self.refused.add(reg.obis)
        self.skipped.append((reg.obis, reason))
        log.log(logging.DEBUG if self.quiet else logging.WARNING,
                "modbus unit %d refused optional %s%s (%s %d): %s; skipped", self.unit,
                reg.obis, " (identity)" if reg is self.profile.identity else "",
                reg.table, reg.address, reason)

    # -- MeterClient ------------------------------------------------------------
    def identify(self) -> MeterIdentity:
        p = self.profile
        if self.serial is None and p.identity is not None:
            got = self._read([p.identity])
            if p.identity.obis in got:
                self._remember_serial(got[p.identity.obis])
        return MeterIdentity("modbus", self.unit, self.serial or "", p.vendor, p.model)

    def read_registers(self, obis: list[str] | None = None) -> list[RegisterValue]:
        p = self.profile
        regs = p.registers if obis is None else [p.register(str(o)) for o in obis]
        wanted = list(regs)
        if self.serial is None and p.identity is not None and obis is None:
            wanted.append(p.identity)          # same request when the map allows
        values = self._read(wanted)
        ts = int(self.clock())
        if p.identity is not None and p.identity.obis in values:
            self._remember_serial(values.pop(p.identity.obis))
        return [RegisterValue(r.obis, values[r.obis], r.unit, ts) for r in regs
                if r.obis in values]

    def _remember_serial(self, raw: int | float) -> None:
        self.serial = self.profile.serial_format % int(raw)

    def read_load_profile(self, start: int, end: int) -> list[ProfileRow]:
        """Rows with start <= ts <= end: point the profile cursor at the first
        wanted row, read the window of rows behind it, move on."""
        lp = self.profile.load_profile
        cursor = self.profile.controls.get("profile_cursor")
        if not lp or cursor is None:
            return []
        step = int(lp.get("interval", 3600))
        cols = lp["columns"]
        width = 2 + 4 * len(cols)
        window = int(lp.get("rows", 1))
        first = -(-int(start) // step) * step
        rows: list[ProfileRow] = []
        for ts in range(first, int(end) + 1, step * window):
            n = min(window, (int(end) - ts) // step + 1)
            self.write(cursor, ts)
            words = self.read_block(Block(lp["table"], lp["address"], width * n, []))
            for i in range(n):
                row = self._profile_row(words[i * width:(i + 1) * width], cols, ts + i * step)
                if row is not None:
                    rows.append(row)
        return rows

    def _profile_row(self, w: list[int], cols: list[str], want: int) -> ProfileRow | None:
        ts = w[0] << 16 | w[1]
        if ts == 0:
            return None                 # not captured yet
        if ts != want:
            raise RemoteProtocolError("unit %d returned the row of %d for %d" % (
                self.unit, ts, want), meter=str(self.unit), port=self.bus.url)
        vals: dict[str, int | float] = {}
        for i, obis in enumerate(cols):
            q = w[2 + 4 * i:6 + 4 * i]
            vals[obis] = q[0] << 48 | q[1] << 32 | q[2] << 16 | q[3]
        return ProfileRow(ts, vals)

    def _control(self, name: str):  # type: ignore[no-untyped-def]
        reg = self.profile.controls.get(name)
        if reg is None:
            raise Unsupported("profile %s has no %s register" % (self.profile.name, name),
                              profile=self.profile.name, meter=str(self.unit))
        return reg

    def read_clock(self) -> int:
        reg = self._control("clock")
        words = self.read_block(Block(reg.table, reg.address, reg.words, [reg]))
        return int(reg.decode(words))

    def set_clock(self, ts: float) -> None:
        self.write(self._control("clock"), int(ts))

    def disconnect(self) -> None:
        self.write(self._control("relay"), 0)

    def reconnect(self) -> None:
        self.write(self._control("relay"), 1)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            release_bus(self.bus)


def open_client(url: str, address: str | int, baud: int | None = None,
                **options: object) -> ModbusClient:
    """Options: profile (name, or a JSON file path, or a Profile; default
    "generic"), timeout (s per attempt), retries (retransmissions per request:
    a silent meter costs at most timeout × (retries + 1)), link (a connected
    ``drivers.serialio.Link`` to share), clock (callable -> epoch s, for the
    readings' ts), parity/stopbits, echo (discard the adapter's local echo),
    refused (OBIS codes of optional registers this meter refused before:
    not asked again)."""
    prof = options.get("profile") or "generic"
    profile = prof if isinstance(prof, Profile) else load(str(prof))
    try:
        unit = int(address)
    except ValueError:
        raise ProfileError("Modbus unit address must be a number, got %r" % address) from None
    line = {k: options[k] for k in ("parity", "stopbits", "echo") if k in options}
    bus = shared_bus(url, baud, options.get("link"), **line)
    try:
        return ModbusClient(bus, unit, profile,
                            timeout=float(options.get("timeout") or DEFAULT_TIMEOUT),  # type: ignore[arg-type]
                            retries=int(options.get("retries", DEFAULT_RETRIES)),  # type: ignore[call-overload]
                            clock=options.get("clock") or time.time,  # type: ignore[arg-type]
                            refused=options.get("refused") or ())  # type: ignore[arg-type]
    except DriverError:
        release_bus(bus)
        raise


def scan(url: str, baud: int | None = None, addresses: object = None, timeout: float = 0.3,
         **options: object) -> list[MeterIdentity]:
    """Ask every unit of ``addresses`` (default 1..247) for its identity
    register; a unit that answers, even with an exception, is present."""
    found: list[MeterIdentity] = []
    units = [int(a) for a in (addresses or range(1, 248))]  # type: ignore[attr-defined]
    hold = shared_bus(url, baud, options.get("link"))   # one open port for the whole scan
    try:
        _scan_units(url, baud, units, timeout, found, options)
    finally:
        release_bus(hold)
    return found


def _scan_units(url: str, baud: int | None, units: list[int], timeout: float,
                found: list[MeterIdentity], options: dict[str, object]) -> None:
    """Silence means nobody is there (no retry: a full scan stays short); a
    garbled answer means somebody is, so ask again before giving up on its id."""
    for unit in units:
        client = open_client(url, unit, baud, timeout=timeout, retries=0, **options)
        client.quiet = True
        try:
            for attempt in range(3):
                try:
                    found.append(client.identify())
                    break
                except RemoteProtocolError as e:
                    log.info("scan: unit %d answered garbled (%d): %s", unit, attempt + 1, e)
            else:
                found.append(MeterIdentity("modbus", unit, "", client.profile.vendor,
                                           client.profile.model))
        except MeterRefused:
            found.append(MeterIdentity("modbus", unit, "", client.profile.vendor,
                                       client.profile.model))
        except MeterTimeout as e:
            log.debug("scan: unit %d: %s", unit, e)
        finally:
            client.close()
