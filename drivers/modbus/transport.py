"""The Modbus RTU transport: pymodbus's serial client over pyserial, one
per open port, shared by every meter on the bus.

Owns: ``SerialBus`` (one ``ModbusSerialClient`` per port, reference counted
through ``shared_bus``/``release_bus``/``hold_port``, or wrapped around the
agent's own ``drivers.serialio.Link``), the flight recorder of raw bytes,
bounded retries, and turning every pymodbus outcome into a typed
``drivers.DriverError``: a silent meter -> ``MeterTimeout``, a garbled reply
-> ``RemoteProtocolError``, an exception response -> ``MeterRefused``.
Received bytes go through our sans-IO ``rtu`` framer first (``ReplyHunter``),
so garbage, other units' frames and bad CRCs are skipped or end an attempt
at once instead of costing a timeout.

Must not know: profiles, OBIS, schedules.
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
from drivers.modbus import rtu

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

    def send(self, request: bytes, addr: tuple[str, int] | None = None) -> int:
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


class _Garbled(Exception):
    """The whole expected reply has arrived and holds no frame for us."""

    def __init__(self, raw: bytes) -> None:
        super().__init__("garbled reply %s" % raw.hex())
        self.raw = raw


class ReplyHunter:
    """pymodbus's ``trace_packet`` hook on received bytes: our sans-IO framer
    finds the reply (skipping garbage, other units' frames and bad CRCs) and
    hands pymodbus exactly that frame; once the expected length has arrived
    without one, the attempt ends at once instead of waiting for the timeout."""

    def __init__(self) -> None:
        self.expect: tuple[int, int, int] | None = None     # unit, function, length

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if sending or self.expect is None:
            return data
        unit, fc, length = self.expect
        buf, pos = bytes(data), 0
        while True:
            frame, used = rtu.consume(buf[pos:], rtu.RESPONSE)
            if frame is None:
                break
            pos += used
            if frame.address == unit and frame.function & 0x7F == fc:
                return frame.to_bytes()
        if len(buf) >= length:
            raise _Garbled(buf)
        return b""          # keep it all: more bytes are coming


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
        self.hunter = ReplyHunter()
        self.pm = _RecordingClient(url, self.recorder, handle, baudrate=baud, parity=parity,
                                   stopbits=stopbits, timeout=DEFAULT_TIMEOUT, retries=0,
                                   handle_local_echo=echo, trace_packet=self.hunter)
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

    def wait_idle(self, limit: float) -> None:
        """After a garbled reply: let the line fall silent (the rest of a
        damaged frame must not land in the next reply), at most ``limit`` s."""
        char = 11.0 / self.pm.comm_params.baudrate
        end = time.monotonic() + limit
        seen = -1
        while time.monotonic() < end:
            waiting = self.pm._in_waiting()
            if waiting == seen:
                break
            seen = waiting
            time.sleep(max(0.002, 4 * char))
        if seen > 0 and self.pm.socket is not None:
            self.recorder.record("rx", self.pm.socket.read(seen), time.monotonic())

    def execute(self, unit: int, call: Callable[[], object], timeout: float, retries: int,
                what: str, quiet: bool = False, expect: tuple[int, int] = (0, 0)) -> object:
        """Run one pymodbus request with up to ``retries`` retransmissions;
        ``expect`` = (function code, reply length) lets a garbled reply end
        its attempt early."""
        with self.lock:
            self.pm.comm_params.timeout_connect = timeout
            err: DriverError | None = None
            for attempt in range(retries + 1):
                mark = self.pm.bytes_rx
                self.hunter.expect = (unit, expect[0], expect[1]) if expect[0] else None
                try:
                    resp = call()
                except _Garbled as e:
                    err = self._failure(unit, what, True, e)
                    log.log(logging.DEBUG if quiet else logging.WARNING,
                            "modbus unit %d %s attempt %d: %s", unit, what, attempt + 1, err)
                    self.wait_idle(timeout)
                    continue
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
        if isinstance(e, _Garbled):
            fields["raw"] = e.raw.hex()
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
