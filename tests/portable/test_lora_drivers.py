"""The LoRa drivers' byte encodings under CPython and MicroPython, against a
scripted bus that records every transaction: the datasheet's command and
register values, packet status decoding, the link's queue, time on air."""

from drivers.link import FrameTooLong, LinkBusy, Received
from drivers.lora import LoRaParams, TxDone, coding_rate, params_from_config
from drivers.lora.airtime import time_on_air_us
from drivers.lora.link import LoRaLink
from drivers.lora.sx126x import Sx126x
from drivers.lora.sx127x import Sx127x

STDBY_OK = 0x22          # SX126x status: STDBY_RC (0x2 << 4), command status 0x1 << 1


class Bus126:
    """Answers every SX126x command with a good status; reads get ``data[op]``."""

    def __init__(self):
        self.sent = []
        self.data = {0x12: b"\x00\x00", 0x17: b"\x00\x00", 0x1D: b"\x00"}

    def transfer(self, tx):
        self.sent.append(bytes(tx))
        out = bytearray(bytes([STDBY_OK]) * len(tx))
        d = self.data.get(tx[0])
        if d is not None:
            k = {0x1D: 2, 0x1E: 1}.get(tx[0], 0)
            for i in range(len(d)):
                if 2 + k + i < len(tx):
                    out[2 + k + i] = d[i]
        return bytes(out)


class Low:
    def __init__(self, v=0):
        self.v = v

    def value(self, v=None):
        return self.v


def no_wait(us):
    return None


def test_sx126x_configure_sends_the_datasheet_bytes():
    bus = Bus126()
    d = Sx126x(bus, Low(), delay_us=no_wait, clock_ms=lambda: 0)
    d.connect()
    assert bus.sent[0] == b"\x80\x00"                       # SetStandby(STDBY_RC)
    assert b"\x96\x01" in bus.sent                          # SetRegulatorMode(DC-DC)
    assert b"\x89\x7f" in bus.sent                          # Calibrate(all blocks)
    assert b"\x8a\x01" in bus.sent                          # SetPacketType(LoRa)
    bus.sent = []
    d.configure(LoRaParams(sf=9, tx_power_dbm=14))
    # 869.525 MHz * 2^25 / 32 MHz = 911763046.4 -> 0x36586666
    assert b"\x86\x36\x58\x66\x66" in bus.sent
    assert b"\x98\xd7\xdb" in bus.sent                      # CalibrateImage 863-870 MHz
    assert b"\x95\x04\x07\x00\x01" in bus.sent              # SetPaConfig for +22 dBm (SX1262)
    assert b"\x8e\x0e\x04" in bus.sent                      # SetTxParams 14 dBm, 200 us ramp
    assert b"\x8b\x09\x04\x01\x00" in bus.sent              # SF9, 125 kHz, 4/5, LDRO off
    assert b"\x8c\x00\x08\x00\xff\x01\x00" in bus.sent      # preamble 8, explicit, 255, CRC, IQ std
    assert b"\x0d\x07\x40\x14\x24" in bus.sent              # sync word 0x12 -> 0x1424
    assert b"\x08\x03\xe3\x03\xe3\x00\x00\x00\x00" in bus.sent


def test_sx126x_transmit_and_receive_bytes():
    bus = Bus126()
    d = Sx126x(bus, Low(), Low(1), delay_us=no_wait, clock_ms=lambda: 77)
    d.connect()
    d.configure(LoRaParams(sf=7))
    bus.sent = []
    toa = d.transmit(b"hi")
    assert toa == time_on_air_us(2, 7)
    assert bus.sent[0] == b"\x8c\x00\x08\x00\x02\x01\x00"   # payload length 2
    assert bus.sent[1] == b"\x0e\x00hi"                     # WriteBuffer at offset 0
    assert bus.sent[-1][0] == 0x83                          # SetTx
    steps = int.from_bytes(bus.sent[-1][1:], "big")
    assert steps * 15625 // 1000 >= 2 * toa
    try:
        d.transmit(b"again")
    except LinkBusy:
        pass
    else:
        raise AssertionError("a second transmit while on air must be refused")
    bus.data[0x12] = b"\x00\x01"                             # TxDone
    evs = d.service()
    assert len(evs) == 1 and isinstance(evs[0], TxDone) and evs[0].toa_us == toa
    d.listen()
    assert bus.sent[-1] == b"\x82\xff\xff\xff"               # SetRx continuous
    bus.data[0x12] = b"\x00\x02"                             # RxDone
    bus.data[0x13] = b"\x03\x10"                             # 3 bytes at 0x10
    bus.data[0x1E] = b"abc"
    bus.data[0x14] = b"\xb4\xf8\xc8"                         # RssiPkt, SnrPkt -2 dB, signal -100 dBm
    evs = d.service()
    assert len(evs) == 1 and isinstance(evs[0], Received)
    r = evs[0]
    assert r.frame == b"abc" and r.snr == -2.0 and r.rssi == -100.0 and r.ts == 77
    assert b"\x1e\x10\x00\x00\x00\x00" in bus.sent          # ReadBuffer(offset 0x10), NOP, 3 bytes
    try:
        d.transmit(bytes(256))
    except FrameTooLong:
        pass
    else:
        raise AssertionError("256 bytes exceed the buffer")


class Bus127:
    """A register file answering SX127x reads; records writes."""

    def __init__(self):
        self.regs = bytearray(128)
        self.regs[0x42] = 0x12
        self.writes = []

    def transfer(self, tx):
        addr = tx[0] & 0x7F
        out = bytearray(len(tx))
        if tx[0] & 0x80:
            self.writes.append(bytes(tx))
            for i in range(1, len(tx)):
                if addr == 0x01 and self.regs[0x01] & 7 != 0:
                    self.regs[0x01] = (tx[i] & 0x7F) | (self.regs[0x01] & 0x80)
                elif addr != 0:
                    self.regs[addr] = tx[i]
                addr = addr + 1 if addr else 0
        else:
            for i in range(1, len(tx)):
                out[i] = self.regs[addr]
                addr = addr + 1 if addr else 0
        return bytes(out)


def test_sx127x_register_values():
    bus = Bus127()
    d = Sx127x(bus, delay_us=no_wait, clock_ms=lambda: 0)
    d.connect()
    assert bus.writes[:3] == [b"\x81\x00", b"\x81\x80", b"\x81\x81"]   # SLEEP, LoRa SLEEP, STDBY
    d.configure(LoRaParams(sf=9, tx_power_dbm=17))
    # Frf = 869.525 MHz * 2^19 / 32 MHz = 14246297.6 -> 0xd96199
    assert b"\x86\xd9\x61\x99" in bus.writes
    assert b"\x89\xff" in bus.writes                          # PA_BOOST, OutputPower 15: 17 dBm
    assert b"\x9d\x72\x94\x64" in bus.writes                  # BW 125 | 4/5 | explicit; SF9 | CRC
    assert b"\xb9\x12" in bus.writes                          # sync word


def test_link_queue_and_params():
    assert coding_rate("4/7") == 3
    p = params_from_config({"sf": 8, "bandwidth_khz": 250, "coding_rate": "4/6",
                            "frequency_mhz": 868.1})
    assert (p.sf, p.bandwidth_hz, p.cr, p.frequency_hz) == (8, 250000, 2, 868100000)
    bus = Bus126()
    radio = Sx126x(bus, Low(), Low(1), delay_us=no_wait, clock_ms=lambda: 0)
    link = LoRaLink(radio, LoRaParams(sf=7), queue_max=1)
    link.connect()
    link.send(b"1")
    link.send(b"2")
    try:
        link.send(b"3")
    except LinkBusy:
        pass
    else:
        raise AssertionError("queue of one must refuse a third frame")
    bus.data[0x12] = b"\x00\x01"
    link.receive()                                           # TxDone: the queued frame goes
    assert b"\x0e\x002" in bus.sent[-4:] and link.busy()
    assert time_on_air_us(13, 9) == 164864
