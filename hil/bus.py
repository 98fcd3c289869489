"""A simulated multi-drop RS-485 bus: one port, many meters, a wire with
timing and faults.

Owns: reading what the master sends, offering every byte to every simulated
meter (as on a real bus, each meter hears everything and answers only frames
addressed to it; meters of other protocols see noise), pacing each reply at
the line's baud rate after the request's own transmit time plus the meter's
latency, and injecting faults.

A meter is any object with:
    address: str
    feed(data: bytes, now: float) -> list[tuple[bytes, int | None]]
        bytes heard on the bus; returns the replies to send, each with the
        baud rate to send it at (None = the bus's rate). Must never raise on
        any input (property-tested).
    reset() -> None (optional): forget a half-received frame (line idle).
    corrupt_address(reply: bytes) -> bytes (optional): for the wrongaddr fault.

Faults (``FaultSpec.parse``): comma-separated ``kind[@address][=value]``:
    dead@3            meter 3 never answers
    crc=0.05          5 % of replies get one flipped byte (CRC fails)
    garbage=0.02      2 % of replies are preceded by random bytes
    wrongaddr@7=0.1   10 % of meter 7's replies carry another address
    slow@5=0.8        meter 5 answers 0.8 s late
    echo              the adapter echoes every request back (no echo suppression)
    drop=0.01         1 % of replies are lost
"""

from __future__ import annotations

import logging
import random
import threading
import time

from hil import HilError

log = logging.getLogger(__name__)

KINDS = ("dead", "crc", "garbage", "wrongaddr", "slow", "echo", "drop")


class Fault:
    __slots__ = ("kind", "address", "value")

    def __init__(self, kind: str, address: str | None, value: float) -> None:
        self.kind, self.address, self.value = kind, address, value

    def applies(self, address: str) -> bool:
        return self.address is None or self.address == address


class FaultSpec:
    def __init__(self, faults: list[Fault] | None = None, seed: int = 0) -> None:
        self.faults = faults or []
        self.rng = random.Random(seed)

    @classmethod
    def parse(cls, text: str | None, seed: int = 0) -> FaultSpec:
        faults = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            head, _, val = part.partition("=")
            kind, _, addr = head.partition("@")
            if kind not in KINDS:
                raise HilError("unknown fault %r (known: %s)" % (kind, ", ".join(KINDS)))
            default = 1.0
            try:
                value = float(val.rstrip("s")) if val else default
            except ValueError:
                raise HilError("bad fault value in %r" % part) from None
            faults.append(Fault(kind, addr or None, value))
        return cls(faults, seed)

    def value(self, kind: str, address: str) -> float | None:
        for f in self.faults:
            if f.kind == kind and f.applies(address):
                return f.value
        return None

    def chance(self, kind: str, address: str) -> bool:
        p = self.value(kind, address)
        return p is not None and self.rng.random() < p


def bits_per_char(parity: str = "N", databits: int = 8, stopbits: int = 1) -> int:
    return 1 + databits + (0 if parity == "N" else 1) + stopbits


class Bus:
    """Serves ``meters`` on ``port`` in a background thread until ``stop()``."""

    def __init__(self, port, meters: list, baud: int = 9600, latency: float = 0.0,
                 faults: FaultSpec | None = None, bits: int = 10, pace: bool = True) -> None:
        self.port = port
        self.meters = list(meters)
        self.baud = baud
        self.latency = latency
        self.faults = faults or FaultSpec()
        self.bits = bits
        self.pace = pace
        self.bytes_in = 0
        self.bytes_out = 0
        self.replies = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def char_time(self, baud: int | None = None) -> float:
        return self.bits / float(baud or self.baud)

    def start(self) -> Bus:
        self._thread = threading.Thread(target=self.serve, name="hil-bus", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def serve(self) -> None:
        req_start = None
        req_len = 0
        while not self._stop.is_set():
            data = self.port.read(0.05)
            now = time.monotonic()
            if not data:
                if req_start is not None and now - req_start > 0.5:
                    req_start, req_len = None, 0
                    for meter in self.meters:
                        if hasattr(meter, "reset"):
                            meter.reset()
                continue
            if req_start is None:
                req_start = now
            req_len += len(data)
            self.bytes_in += len(data)
            if self.faults.value("echo", "*") is not None:
                self.port.write(data)
            for meter in self.meters:
                try:
                    replies = meter.feed(data, time.time())
                except Exception:  # a simulator bug must not kill the bus
                    log.exception("meter %s crashed on input %s", meter.address, data.hex())
                    replies = []
                for payload, baud in replies:
                    self._answer(meter, payload, baud, req_start, req_len)
                    req_start, req_len = None, 0
            # A request longer than one read keeps req_start from its first byte.

    def _answer(self, meter, payload: bytes, baud: int | None, req_start: float | None,
                nreq: int) -> None:
        addr = meter.address
        f = self.faults
        dead = f.value("dead", addr)
        if dead is not None and dead >= 1.0:
            return
        if f.chance("drop", addr):
            return
        if f.chance("crc", addr) and payload:
            i = f.rng.randrange(len(payload))
            payload = payload[:i] + bytes([payload[i] ^ (1 << f.rng.randrange(8))]) + payload[i + 1:]
        if f.chance("wrongaddr", addr) and hasattr(meter, "corrupt_address"):
            payload = meter.corrupt_address(payload)
        if f.chance("garbage", addr):
            payload = bytes(f.rng.randrange(256) for _ in range(f.rng.randrange(1, 8))) + payload
        delay = self.latency + (f.value("slow", addr) or 0.0)
        start = time.monotonic()
        if self.pace and req_start is not None:
            # The request itself took time on the wire; the meter answers after it.
            start = max(start, req_start + nreq * self.char_time())
        self._send_paced(payload, baud, start + delay)
        self.replies += 1

    def _send_paced(self, payload: bytes, baud: int | None, at: float) -> None:
        ct = self.char_time(baud)
        t = at
        chunk = max(1, int(0.004 / ct)) if self.pace else len(payload)
        for i in range(0, len(payload), chunk):
            piece = payload[i:i + chunk]
            d = t - time.monotonic()
            if d > 0:
                time.sleep(d)
            self.port.write(piece)
            self.bytes_out += len(piece)
            if self.pace:
                t += len(piece) * ct
        if self.pace:
            d = t - time.monotonic()
            if d > 0:
                time.sleep(d)
