"""A LoRa radio as a mesh link (drivers/lora/link.py) over the simulated
SX126x and the radio medium: queued frames go one after another and the
radio returns to receive; a full queue says LinkBusy; receive(timeout)
waits in simulated time."""

from __future__ import annotations

import pytest

from drivers.link import LinkBusy, LinkClosed
from drivers.lora import LoRaParams
from drivers.lora.link import LoRaLink
from drivers.lora.sx126x import Sx126x
from hil.radio import RadioMedium
from hil.sx126x_sim import Sx126xSim


def links(n=2, queue_max=8):
    m = RadioMedium(seed=3, path_loss={"shadowing_db": 0.0})
    out = []
    for i in range(n):
        name = "n%d" % i
        m.add_node(name, 100 * i, 0)
        chip = Sx126xSim(m, name)
        radio = Sx126x(chip, chip.busy, chip.dio1, delay_us=m.advance,
                       clock_ms=lambda: m.now_us // 1000)
        link = LoRaLink(radio, LoRaParams(sf=8), queue_max=queue_max)
        link.connect()
        out.append(link)
    return m, out


def test_queued_frames_follow_each_other_and_both_sides_keep_listening():
    m, (a, b) = links()
    frames = [b"frame-%d" % i for i in range(5)]
    toas = [a.send(f) for f in frames]
    assert a.busy() and toas[0] == a.radio.time_on_air_us(7)
    got = []
    while len(got) < 5:
        r = b.receive(timeout=1.0)
        assert r is not None
        got.append(r.frame)
        a.receive()                        # services a: next frame out
    assert got == frames
    a.receive(timeout=0.5)
    assert not a.busy() and a.stats()["airtime_us"] == sum(toas)
    b.send(b"back")                        # a went back to receive after its last frame
    assert a.receive(timeout=1.0).frame == b"back"


def test_full_queue_is_busy_and_receive_timeout_waits():
    m, (a, b) = links(queue_max=1)
    a.send(b"1")
    a.send(b"2")
    with pytest.raises(LinkBusy):
        a.send(b"3")
    t0 = m.now_us
    assert b.receive() is None                # the first frame is still on the air
    assert b.receive(timeout=0.2) is not None and m.now_us > t0
    closed = LoRaLink(a.radio, a.params)
    with pytest.raises(LinkClosed):
        closed.send(b"x")
    a.close()


def test_linux_adapters_refuse_missing_devices_with_typed_errors(tmp_path):
    from drivers.link import LinkError, RadioConfigError
    from drivers.lora.linux import GpioLine, SpiDevice, open_lora_link, parse_line

    assert parse_line("gpiochip0:23") == ("/dev/gpiochip0", 23)
    with pytest.raises(RadioConfigError):
        parse_line("23")
    with pytest.raises(LinkError) as e:
        SpiDevice(str(tmp_path / "spidev9.9")).transfer(b"\xc0\x00")
    assert e.value.reason == "spi_open"
    with pytest.raises(LinkError) as e:
        GpioLine("%s:4" % (tmp_path / "gpiochip9")).value()
    assert e.value.reason == "gpio_open"
    link = open_lora_link({"chip": "sx1262", "spi": str(tmp_path / "spidev9.9"),
                           "busy": "gpiochip9:1", "sf": 9, "coding_rate": "4/5"})
    assert link.kind == "lora" and link.params.sf == 9 and link.params.cr == 1
    assert link.params.frequency_hz == 868100000          # mesh.links' default channel
    g3 = open_lora_link({"spi": "x", "busy": "gpiochip0:1", "channel": 869525000,
                         "bandwidth": 125000})
    assert g3.params.frequency_hz == 869525000 and g3.params.bandwidth_hz == 125000
    with pytest.raises(LinkError):
        link.connect()
    with pytest.raises(RadioConfigError):
        open_lora_link({"chip": "sx1262"})
    with pytest.raises(RadioConfigError):
        open_lora_link({"chip": "cc1101"})
