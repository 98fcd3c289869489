"""How a node sees one of its links: kind, MTU and, for LoRa, the radio
parameters from which it computes time on air and charges its duty budget.

Owns the description and its arithmetic only (MTU, time on air, ack
timeout). Must not know sockets, SPI, drivers or peers' endpoints: the keys
a driver needs (``listen``, ``peers``, ``spi`` ...) are ignored here.
Portable (MicroPython).

A link is given to ``mesh.node.Node`` as a dict (the agent's ``[[mesh.link]]``
table, or what a simulator builds)::

    {"kind": "udp", "mtu": 1200, "ack_timeout_ms": 300}
    {"kind": "lora", "sf": 9, "bandwidth": 125000, "coding_rate": "4/5",
     "channel": 868100000, "preamble": 8, "mtu": 115, "ack_timeout_ms": ...}

``bandwidth`` is in Hz (125, 250, 500 are read as kHz), or give
``bandwidth_khz``; ``coding_rate`` is "4/5".."4/8" or 1..4; ``region``, if
present, must be "EU868" (the duty-cycle rules ``mesh.duty`` models). ``"adaptive_sf": true`` (with ``min_sf``, default 7, and
``margin_db``, default 5) sends each unicast at the fastest SF the
neighbour's measured SNR allows, down from ``sf`` (broadcasts stay at
``sf``); it assumes receivers demodulate every SF on the channel (gateway
class chips, or a simulator), so it is off by default. ``mtu`` defaults to 1200 on UDP (below any IPv4/IPv6 path MTU
with headroom) and to the EU868 guide for the SF on LoRa (222 at SF7-8,
115 at SF9, 51 above). On LoRa the default ack timeout covers the frame's
own time on air, the receiver finishing a frame of its own (half duplex),
the longest ack's time on air and a 100 ms turnaround.
"""

from mesh import MeshLocalError
from mesh.airtime import lora_toa_ms, max_payload, pick_sf, wifi_toa_us

KINDS = ("udp", "lora")
UDP_MTU = 1200
UDP_ACK_TIMEOUT_MS = 300
TURNAROUND_MS = 100
ACK_FRAME_LEN = 15                # longest ACK frame (mesh.packet, long counter)


def _coding_rate(v):
    if isinstance(v, str):
        if len(v) == 3 and v[:2] == "4/" and v[2] in "5678":
            return int(v[2]) - 4
        raise MeshLocalError("coding rate must be 4/5..4/8", reason="link", coding_rate=v)
    if isinstance(v, int) and 1 <= v <= 4:
        return v
    raise MeshLocalError("coding rate must be 4/5..4/8", reason="link", coding_rate=v)


class LinkSpec:
    """One link as the node uses it (see the module docstring)."""

    def __init__(self, kind, mtu=None, sf=9, bw=125000, cr=1, channel=868100000,
                 preamble=8, ack_timeout_ms=None, adaptive_sf=False, min_sf=7,
                 margin_db=5.0):
        if kind not in KINDS:
            raise MeshLocalError("unknown link kind", reason="link", kind=kind)
        self.kind = kind
        self.sf = sf
        self.bw = bw
        self.cr = cr
        self.channel = channel
        self.preamble = preamble
        self.adaptive_sf = bool(adaptive_sf) and kind == "lora"
        self.min_sf = min(min_sf, sf)
        self.margin_db = margin_db
        if kind == "lora":
            lora_toa_ms(1, sf, bw, cr, True, True, preamble)      # validates sf/bw/cr
            limit = max_payload(sf)
            self.mtu = limit if mtu is None else mtu
        else:
            self.mtu = UDP_MTU if mtu is None else mtu
        if self.mtu < 32 or self.mtu > 65000:
            raise MeshLocalError("link MTU out of range", reason="link", mtu=self.mtu)
        if ack_timeout_ms is None:
            if kind == "lora":
                ack_timeout_ms = (2 * self.toa_ms(self.mtu) + self.toa_ms(ACK_FRAME_LEN)
                                  + TURNAROUND_MS)
            else:
                ack_timeout_ms = UDP_ACK_TIMEOUT_MS
        self.ack_timeout_ms = ack_timeout_ms

    @classmethod
    def from_dict(cls, d):
        kind = d.get("kind")
        region = d.get("region", "EU868")
        if region != "EU868":
            raise MeshLocalError("only the EU868 duty-cycle rules are modelled",
                                 reason="link", region=region)
        bw = d.get("bandwidth")
        if bw is None and "bandwidth_khz" in d:
            bw = int(d["bandwidth_khz"] * 1000)
        elif bw in (125, 250, 500):
            bw = bw * 1000                    # written in kHz
        return cls(kind, d.get("mtu"), d.get("sf", 9), bw if bw is not None else 125000,
                   _coding_rate(d.get("coding_rate", 1)), d.get("channel", 868100000),
                   d.get("preamble", 8), d.get("ack_timeout_ms"), d.get("adaptive_sf", False),
                   d.get("min_sf", 7), d.get("margin_db", 5.0))

    @property
    def duty_cycled(self):
        return self.kind == "lora"

    def toa_ms(self, nbytes, sf=None):
        """Time on air of a frame of ``nbytes`` (whole ms, rounded up), at
        ``sf`` or the link's SF."""
        if self.kind == "lora":
            return lora_toa_ms(nbytes, sf or self.sf, self.bw, self.cr, True, True,
                               self.preamble)
        return -((-wifi_toa_us(nbytes)) // 1000)

    def sf_for(self, snr_db):
        """SF for a unicast to a neighbour heard at ``snr_db``: the link's SF
        unless ``adaptive_sf``, then the fastest in [min_sf, sf] keeping
        ``margin_db`` above the demodulator's limit (mesh.airtime.pick_sf)."""
        if not self.adaptive_sf or snr_db is None:
            return self.sf
        try:
            return pick_sf(snr_db, None, self.margin_db, self.bw,
                           tuple(range(self.min_sf, self.sf + 1)))
        except MeshLocalError:
            return self.sf

    def params(self, toa_ms, sf=None):
        """``Transmit.params`` for a frame that lasts ``toa_ms``."""
        if self.kind != "lora":
            return {}
        return {"sf": sf or self.sf, "bw": self.bw, "cr": self.cr, "channel": self.channel,
                "toa_ms": toa_ms}

    def describe(self):
        d = {"kind": self.kind, "mtu": self.mtu}
        if self.kind == "lora":
            d["sf"] = self.sf
            d["bandwidth"] = self.bw
            d["coding_rate"] = "4/%d" % (self.cr + 4)
            d["channel"] = self.channel
        return d

    def __repr__(self):
        return "LinkSpec(%r)" % (self.describe(),)
