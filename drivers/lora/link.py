"""A LoRa radio as a mesh link (``drivers.link`` interface): a small transmit
queue in front of the half-duplex radio, back to receive after every frame.

Owns the link-level sequencing of one radio: transmit, wait for TxDone, next
queued frame or listen again; buffering of frames heard meanwhile; counters.
Must not know the mesh (it decides when a frame may go: duty cycle, CAD) nor
the chip (any ``drivers.lora.Radio``). Portable (MicroPython).
"""

from drivers.link import FrameTooLong, Link, LinkBusy, LinkClosed, Received
from drivers.lora import CadDone, RxError, TxDone, TxTimeout, default_delay_us


class LoRaLink(Link):
    """``radio`` a connected-on-demand ``Radio``; ``params`` its LoRaParams.

    ``send`` returns the frame's time on air by the chip's formula even when
    the frame waits in the queue (``queue_max`` frames, then LinkBusy).
    ``receive(timeout)`` services the radio; with a timeout it waits in
    ``poll_us`` steps through the radio's ``delay_us``.
    """

    kind = "lora"

    def __init__(self, radio, params, queue_max=8, poll_us=1000):
        self.radio = radio
        self.params = params
        self.mtu = radio.max_payload
        self.queue_max = queue_max
        self.poll_us = poll_us
        self.last_cad = None
        self.counters = {"sent": 0, "received": 0, "rx_errors": 0, "tx_timeouts": 0,
                         "airtime_us": 0, "queue_full": 0}
        self._queue = []
        self._rx = []
        self._tx_busy = False
        self._connected = False

    def connect(self):
        self.radio.connect()
        self.radio.configure(self.params)
        self.radio.listen()
        self._connected = True

    def send(self, frame, dest=None):
        """Transmit now, or queue behind the frame on air; -> time on air (us)."""
        if not self._connected:
            raise LinkClosed("link not connected", link="lora")
        if len(frame) > self.mtu:
            raise FrameTooLong("frame longer than the LoRa MTU", link="lora",
                               size=len(frame), mtu=self.mtu)
        toa = self.radio.time_on_air_us(len(frame))
        if self._tx_busy:
            if len(self._queue) >= self.queue_max:
                self.counters["queue_full"] += 1
                raise LinkBusy("LoRa transmit queue full", link="lora", queued=len(self._queue))
            self._queue.append(bytes(frame))
            return toa
        self._start(bytes(frame))
        return toa

    def _start(self, frame):
        self.radio.transmit(frame)
        self._tx_busy = True
        self.counters["sent"] += 1

    def _after_tx(self):
        self._tx_busy = False
        if self._queue:
            self._start(self._queue.pop(0))
        else:
            self.radio.listen()

    def service(self):
        """Handle the radio's pending interrupts (``receive`` calls it)."""
        for ev in self.radio.service():
            if isinstance(ev, Received):
                self.counters["received"] += 1
                self._rx.append(ev)
            elif isinstance(ev, TxDone):
                self.counters["airtime_us"] += ev.toa_us
                self._after_tx()
            elif isinstance(ev, TxTimeout):
                self.counters["tx_timeouts"] += 1
                self._after_tx()
            elif isinstance(ev, RxError):
                self.counters["rx_errors"] += 1
            elif isinstance(ev, CadDone):
                self.last_cad = ev.detected

    def receive(self, timeout=0.0):
        if not self._connected:
            raise LinkClosed("link not connected", link="lora")
        budget = int(timeout * 1000000)
        delay = getattr(self.radio, "delay_us", None) or default_delay_us()
        while True:
            self.service()
            if self._rx:
                return self._rx.pop(0)
            if budget <= 0:
                return None
            step = min(self.poll_us, budget)
            delay(step)
            budget -= step

    def busy(self):
        """A frame on the air or waiting for it."""
        return self._tx_busy or bool(self._queue)

    def fileno(self):
        return self.radio.fileno()

    def poll_ms(self):
        return max(1, self.poll_us // 1000)

    def stats(self):
        out = dict(self.counters)
        out["queued"] = len(self._queue)
        radio = getattr(self.radio, "counters", None)
        if radio:
            out["radio"] = dict(radio)
        return out

    def close(self):
        if self._connected:
            self._connected = False
            self.radio.close()
