"""The Modbus RTU reading path: pymodbus's serial client over pyserial,
behind ``drivers.meter.MeterClient``.

Owns: one shared pymodbus ``ModbusSerialClient`` per open port (``SerialBus``)
so many meters on one RS-485 bus are read one after another through one
file descriptor; reading a profile's registers in few grouped requests;
bounded retries; turning every pymodbus outcome into a typed
``drivers.DriverError`` (a silent meter -> ``MeterTimeout``, a garbled reply
-> ``RemoteProtocolError``, an exception response -> ``MeterRefused``) with
the port's flight recorder attached.

Sharing a port: ``open_client(url, ...)`` reuses the ``SerialBus`` already
open for ``url`` (reference counted; the last ``close()`` closes the port), or
pass ``link=<drivers.serialio.Link>`` (connected) to run over the agent's
own port, which is then never closed here.

Must not know: schedules, archives, the HES.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from drivers import DriverError, MeterRefused, MeterTimeout, RemoteProtocolError
from drivers.flight import FlightRecorder
from drivers.meter import MeterClient, MeterIdentity, ProfileRow, RegisterValue
from drivers.modbus import rtu
from drivers.modbus.profile import INPUT, Block, Profile, ProfileError, load

log = logging.getLogger(__name__)
if logging.getLogger("pymodbus").level == logging.NOTSET:
    # pymodbus logs every silent unit at ERROR; we raise typed errors instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2


class _RecordingClient(ModbusSerialClient):
    """pymodbus's serial client that records raw bytes into our flight recorder
    and can run over an already open pyserial handle."""

    def __init__(self, port: str, recorder: FlightRecorder, handle: object = None,
                 **kw: object) -> None:
        super().__init__(port, **kw)  # type: ignore[arg-type]
        self.recorder = recorder
        self.bytes_tx = self.bytes_rx = 0
        self.external = handle is not None
        if handle is not None:
            self.socket = handle

    def send(self, request: bytes, addr: tuple | None = None) -> int:
        self.recorder.record("tx", request, time.monotonic())
        self.bytes_tx += len(request)
        return super().send(request, addr)

    def recv(self, size: int | None) -> bytes:
        data = super().recv(size)
        if data:
            self.recorder.record("rx", data, time.monotonic())
            self.bytes_rx += len(data)
        return data

    def close(self) -> None:
        if not self.external:
            super().close()


class SerialBus:
    """One open port shared by every ``ModbusClient`` on it (one at a time)."""

    def __init__(self, url: str, baud: int = 9600, link: object = None, parity: str = "N",
                 stopbits: int = 1, echo: bool = False) -> None:
        self.url = url
        self.lock = threading.RLock()
        self.users = 0
        self.recorder = getattr(link, "recorder", None) or FlightRecorder()
        handle = getattr(link, "_ser", None) if link is not None else None
        if link is not None and handle is None:
            raise DriverError("link %s is not connected" % url, port=url)
        self.pm = _RecordingClient(url, self.recorder, handle, baudrate=baud, parity=parity,
                                   stopbits=stopbits, timeout=DEFAULT_TIMEOUT, retries=0,
                                   handle_local_echo=echo)
        self.pm.transaction.max_until_disconnect = 1 << 30
        self.link = link

    def connect(self) -> SerialBus:
        if not self.pm.connect():
            raise DriverError("cannot open %s" % self.url, port=self.url)
        return self

    @property
    def bytes_tx(self) -> int:
        return self.pm.bytes_tx

    @property
    def bytes_rx(self) -> int:
        return self.pm.bytes_rx

    def close(self) -> None:
        self.pm.close()

    def execute(self, unit: int, call: Callable[[], object], timeout: float, retries: int,
                what: str, quiet: bool = False) -> object:
        """Run one pymodbus request with up to ``retries`` retransmissions."""
        with self.lock:
            self.pm.comm_params.timeout_connect = timeout
            err: DriverError | None = None
            for attempt in range(retries + 1):
                mark = self.pm.bytes_rx
                try:
                    resp = call()
                except ModbusException as e:
                    err = self._failure(unit, what, self.pm.bytes_rx > mark, e)
                    log.log(logging.DEBUG if quiet else logging.WARNING,
                            "modbus unit %d %s attempt %d: %s", unit, what, attempt + 1, err)
                    continue
                if resp.isError():  # type: ignore[attr-defined]
                    code = getattr(resp, "exception_code", 0)
                    raise MeterRefused("unit %d refused %s: %s" % (
                        unit, what, rtu.EXCEPTIONS.get(code, "code %d" % code)),
                        meter=str(unit), code=code, port=self.url)
                return resp
            assert err is not None
            log.log(logging.DEBUG if quiet else logging.ERROR,
                    "modbus unit %d %s failed; flight recorder:\n%s", unit, what,
                      "\n".join(self.recorder.dump()[-8:]))
            raise err

    def _failure(self, unit: int, what: str, heard: bool, e: Exception) -> DriverError:
        fields: dict[str, object] = {"meter": str(unit), "port": self.url, "request": what,
                  "flight": self.recorder.as_json()[-6:]}
        if heard:
            return RemoteProtocolError("garbled reply from unit %d to %s" % (unit, what),
                                       **fields)
        return MeterTimeout("unit %d did not answer %s" % (unit, what),
                            **fields)


_BUSES: dict[str, SerialBus] = {}
_BUSES_LOCK = threading.Lock()


def shared_bus(url: str, baud: int | None = None, link: object = None, **line: object) -> SerialBus:
    """The ``SerialBus`` for ``url`` (opened on first use), one more user."""
    if link is not None:
        own = SerialBus(url, baud or int(getattr(link, "baudrate", 9600)), link).connect()
        own.users += 1
        return own
    with _BUSES_LOCK:
        bus = _BUSES.get(url)
        if bus is None or not bus.pm.connected:
            bus = SerialBus(url, baud or 9600, **line).connect()  # type: ignore[arg-type]
            _BUSES[url] = bus
        bus.users += 1
        return bus


@contextlib.contextmanager
def hold_port(url: str, baud: int | None = None, **line: object) -> Iterator[SerialBus]:
    """Keep ``url`` open across a cycle: clients opened and closed inside
    reuse this one port instead of reopening it per meter."""
    bus = shared_bus(url, baud, **line)
    try:
        yield bus
    finally:
        release_bus(bus)


def release_bus(bus: SerialBus) -> None:
    with _BUSES_LOCK:
        bus.users -= 1
        if bus.users <= 0:
            bus.close()
            if _BUSES.get(bus.url) is bus:
                del _BUSES[bus.url]


class ModbusClient(MeterClient):
    """One Modbus unit on a (shared) ``SerialBus``, read through a profile."""

    protocol = "modbus"

    def __init__(self, bus: SerialBus, address: int, profile: Profile,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 clock: Callable[[], float] = time.time) -> None:
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
        self._closed = False

    # -- requests ---------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], object]) -> object:
        self.round_trips += 1
        return self.bus.execute(self.unit, call, self.timeout, self.retries, what, self.quiet)

    def read_block(self, block: Block) -> list[int]:
        pm = self.bus.pm
        fn = pm.read_input_registers if block.table == INPUT else pm.read_holding_registers
        what = "read %s %d+%d" % (block.table, block.start, block.count)
        resp = self._call(what, lambda: fn(block.start, count=block.count, device_id=self.unit))
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
                       lambda: pm.write_register(addr, words[0], device_id=self.unit))
        else:
            self._call("write %d+%d" % (addr, len(words)),
                       lambda: pm.write_registers(addr, words, device_id=self.unit))

    def _read(self, registers: list) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        for block in self.profile.plan(registers):
            words = self.read_block(block)
            try:
                out.update(block.decode(words))
            except (ValueError, OverflowError) as e:
                raise RemoteProtocolError("unit %d: bad value in %r: %s" % (self.unit, block, e),
                                          meter=str(self.unit), port=self.bus.url) from e
        return out

    # -- MeterClient ------------------------------------------------------------
    def identify(self) -> MeterIdentity:
        p = self.profile
        if self.serial is None and p.identity is not None:
            self._remember_serial(self._read([p.identity])[p.identity.obis])
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
        return [RegisterValue(r.obis, values[r.obis], r.unit, ts) for r in regs]

    def _remember_serial(self, raw: int | float) -> None:
        self.serial = self.profile.serial_format % int(raw)

    def read_load_profile(self, start: int, end: int) -> list[ProfileRow]:
        lp = self.profile.load_profile
        cursor = self.profile.controls.get("profile_cursor")
        if not lp or cursor is None:
            return []
        step = int(lp.get("interval", 3600))
        cols = lp["columns"]
        block = Block(lp["table"], lp["address"], 2 + 4 * len(cols), [])
        rows = []
        for ts in range(-(-int(start) // step) * step, int(end) + 1, step):
            self.write(cursor, ts)
            w = self.read_block(block)
            if (w[0] << 16 | w[1]) != ts:
                raise RemoteProtocolError("unit %d returned the row of %d for %d" % (
                    self.unit, w[0] << 16 | w[1], ts), meter=str(self.unit))
            vals = {}
            for i, obis in enumerate(cols):
                q = w[2 + 4 * i:6 + 4 * i]
                vals[obis] = q[0] << 48 | q[1] << 32 | q[2] << 16 | q[3]
            rows.append(ProfileRow(ts, vals))
        return rows

    def _control(self, name: str):  # type: ignore[no-untyped-def]
        reg = self.profile.controls.get(name)
        if reg is None:
            raise ProfileError("profile %s has no %s register" % (self.profile.name, name),
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
    readings' ts), parity/stopbits, echo (discard the adapter's local echo)."""
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
                            clock=options.get("clock") or time.time)  # type: ignore[arg-type]
    except DriverError:
        release_bus(bus)
        raise


def scan(url: str, baud: int | None = None, addresses: object = None, timeout: float = 0.3,
         **options: object) -> list[MeterIdentity]:
    """Ask every unit of ``addresses`` (default 1..247) for its identity
    register; a unit that answers, even with an exception, is present."""
    found = []
    units = [int(a) for a in (addresses or range(1, 248))]  # type: ignore[attr-defined]
    hold = shared_bus(url, baud, options.get("link"))   # one open port for the whole scan
    try:
        _scan_units(url, baud, units, timeout, found, options)
    finally:
        release_bus(hold)
    return found


def _scan_units(url: str, baud: int | None, units: list[int], timeout: float,
                found: list[MeterIdentity], options: dict) -> None:
    for unit in units:
        client = open_client(url, unit, baud, timeout=timeout, retries=0, **options)
        client.quiet = True
        try:
            found.append(client.identify())
        except MeterRefused:
            found.append(MeterIdentity("modbus", unit, "", client.profile.vendor,
                                       client.profile.model))
        except (MeterTimeout, RemoteProtocolError) as e:
            log.debug("scan: unit %d: %s", unit, e)
        finally:
            client.close()
