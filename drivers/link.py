"""The link interface: what the mesh's IO loop uses for any link (Wi-Fi over
UDP, a LoRa radio), the received-frame value object and the links' errors.

Owns the contract only; the links are ``drivers.udp_link.UdpLink`` and
``drivers.lora.link.LoRaLink``. Must not know packets, routes or the mesh's
security: a link delivers bytes and says where and how well they were heard.
Portable (MicroPython): see docs/portability.md.

A link, whatever its kind (docs/radio.md "The link interface")::

    link.kind              "udp" | "lora"
    link.mtu               largest frame ``send`` accepts (bytes)
    link.connect()         open the socket / reset and configure the radio
    link.send(frame, dest=None) -> int
                           queue or transmit one frame to every neighbour
                           (``dest``: one address learnt from ``Received.src``);
                           returns its time on air in microseconds (0 on UDP)
    link.receive(timeout=0.0) -> Received | None
                           the next frame heard; services the link too (a
                           LoRa TX that finished, the next queued frame);
                           ``timeout`` 0 never blocks
    link.fileno()          a descriptor that turns readable when ``receive``
                           may have something (socket, DIO interrupt line), or
                           None: then call ``receive`` every ``poll_ms()``
    link.poll_ms()         how often to call ``receive`` without a descriptor
    link.learn(src)        the mesh authenticated a frame from ``src``: keep
                           the address as a neighbour (UDP)
    link.stats()           counters (dict)
    link.close()
"""

from drivers import DriverError


class LinkError(DriverError):
    """Root of the links' and radios' errors (fields: ``link``, ``reason``...)."""


class LinkClosed(LinkError):
    """Used before ``connect()`` or after ``close()``."""


class FrameTooLong(LinkError):
    """The frame is longer than the link's MTU (fields ``size``, ``mtu``)."""


class LinkBusy(LinkError):
    """The link's transmit queue is full: keep the frame and retry later."""


class RadioFault(LinkError):
    """The radio chip misbehaved: absent, BUSY stuck, a command refused, a
    calibration failed (fields ``chip``, ``command``, ``status``, ``flight``)."""


class RadioConfigError(LinkError):
    """A radio parameter out of the chip's range (fields ``param``, ``value``)."""


class Received:
    """One frame heard on a link.

    ``rssi`` (dBm) and ``snr`` (dB) are None on links that do not measure
    them (UDP); ``ts`` is the receiver's monotonic time in ms; ``src`` the
    sender's address on IP links (a ``(host, port)`` tuple), None on radios
    (the air has no source address: the mesh header carries it).
    """

    __slots__ = ("frame", "rssi", "snr", "ts", "src")

    def __init__(self, frame, rssi=None, snr=None, ts=None, src=None):
        self.frame = frame
        self.rssi = rssi
        self.snr = snr
        self.ts = ts
        self.src = src

    def __repr__(self):
        return "Received(%d bytes, rssi=%r, snr=%r, src=%r)" % (
            len(self.frame), self.rssi, self.snr, self.src)


class Link:
    """Base of every link: defaults for the optional parts of the interface."""

    kind = "?"
    mtu = 0

    def connect(self):
        raise NotImplementedError

    def send(self, frame, dest=None):
        raise NotImplementedError

    def receive(self, timeout=0.0):
        raise NotImplementedError

    def fileno(self):
        return None

    def poll_ms(self):
        return 10

    def learn(self, src):
        return None

    def stats(self):
        return {}

    def close(self):
        return None


def monotonic_ms():
    """Milliseconds of a monotonic clock: ``time.ticks_ms`` on MicroPython
    (wraps at 2^30), ``time.monotonic`` elsewhere."""
    import time
    ticks = getattr(time, "ticks_ms", None)
    if ticks is not None:
        return ticks()
    return int(time.monotonic() * 1000)
