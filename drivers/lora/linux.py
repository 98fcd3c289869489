"""Linux handles for the LoRa drivers: SPI through spidev and GPIO lines
through the GPIO character device, both by python-periphery (MIT, pure
Python: the ``lora`` extra), and ``open_lora_link`` building a ready link
from a ``[[mesh.link]] kind = "lora"`` table.

Owns the thin adapters only (``transfer(bytes) -> bytes``, ``value()`` /
``value(v)``, ``fileno()`` on an interrupt line). Must not know the chips'
protocols. Linux/CPython; the module imports periphery lazily, so the rest of
``drivers.lora`` needs nothing installed.

Configuration keys (docs/radio.md): ``chip`` ("sx1262", "sx1261", "sx1268",
"llcc68", "sx1276"...), ``spi`` ("/dev/spidev0.0"), ``spi_hz``, ``busy``,
``dio1``/``dio0``, ``reset`` as "gpiochip0:23" (or "/dev/gpiochip0:23"),
``tcxo_voltage``, ``dio2_rf_switch``, ``regulator`` ("dcdc"|"ldo"),
``pa_boost`` (SX127x), and the radio keys of ``drivers.lora.params_from_config``.
"""

from __future__ import annotations

from typing import Any

from drivers.link import LinkError, RadioConfigError
from drivers.lora import params_from_config
from drivers.lora.link import LoRaLink

SX126X = ("sx1261", "sx1262", "sx1268", "llcc68")
SX127X = ("sx1276", "sx1277", "sx1278", "sx1279", "rfm95", "rfm96", "rfm98")


def _periphery() -> Any:
    try:
        import periphery
    except ImportError as e:
        raise LinkError("python-periphery is not installed (pip install 'wum[lora]')",
                        link="lora", reason="dependency") from e
    return periphery


class SpiDevice:
    """One spidev device: ``transfer`` is one chip-select framed transaction."""

    def __init__(self, path: str = "/dev/spidev0.0", speed_hz: int = 8000000,
                 mode: int = 0) -> None:
        self.path = path
        self.speed_hz = speed_hz
        self.mode = mode
        self._spi: Any = None

    def open(self) -> SpiDevice:
        periphery = _periphery()
        try:
            self._spi = periphery.SPI(self.path, self.mode, self.speed_hz)
        except (OSError, periphery.SPIError) as e:
            raise LinkError("cannot open SPI %s: %s" % (self.path, e), link="lora",
                            reason="spi_open", path=self.path) from e
        return self

    def transfer(self, data: bytes) -> bytes:
        if self._spi is None:
            self.open()
        return bytes(self._spi.transfer(bytes(data)))

    def close(self) -> None:
        if self._spi is not None:
            self._spi.close()
            self._spi = None


def parse_line(spec: str) -> tuple[str, int]:
    """"gpiochip0:23" or "/dev/gpiochip0:23" -> ("/dev/gpiochip0", 23)."""
    chip, sep, line = spec.rpartition(":")
    if not sep or not line.isdigit() or not chip:
        raise RadioConfigError("a GPIO line is chip:line", param="gpio", value=spec)
    return (chip if chip.startswith("/") else "/dev/" + chip), int(line)


class GpioLine:
    """One GPIO line. An input with ``edge`` ("rising") offers ``fileno()``,
    readable after an edge: ``value()`` drains the pending edge events, so the
    descriptor turns readable again only on the next interrupt."""

    def __init__(self, spec: str, direction: str = "in", edge: str = "none") -> None:
        self.path, self.line = parse_line(spec)
        self.direction = direction
        self.edge = edge
        self._gpio: Any = None

    def open(self) -> GpioLine:
        periphery = _periphery()
        try:
            if self.direction == "in":
                self._gpio = periphery.CdevGPIO(self.path, self.line, "in", edge=self.edge)
            else:
                self._gpio = periphery.CdevGPIO(self.path, self.line, "high")
        except (OSError, periphery.GPIOError) as e:
            raise LinkError("cannot open GPIO %s:%d: %s" % (self.path, self.line, e),
                            link="lora", reason="gpio_open", path=self.path,
                            line=self.line) from e
        return self

    def value(self, v: int | None = None) -> int | None:
        if self._gpio is None:
            self.open()
        if v is not None:
            self._gpio.write(bool(v))
            return None
        if self.edge != "none":
            while self._gpio.poll(0):
                self._gpio.read_event()
        return 1 if self._gpio.read() else 0

    def fileno(self) -> int | None:
        if self.edge == "none":
            return None
        if self._gpio is None:
            self.open()
        return int(self._gpio.fd)

    def close(self) -> None:
        if self._gpio is not None:
            self._gpio.close()
            self._gpio = None


def open_lora_link(table: dict[str, Any]) -> LoRaLink:
    """A LoRaLink for one ``[[mesh.link]] kind = "lora"`` table; call its
    ``connect()`` to reset and configure the chip."""
    chip = str(table.get("chip", "sx1262")).lower()
    params = params_from_config(table)
    spi = SpiDevice(table.get("spi", "/dev/spidev0.0"), int(table.get("spi_hz", 8000000)))
    reset = GpioLine(table["reset"], "out") if table.get("reset") else None
    radio: Any
    if chip in SX126X:
        from drivers.lora.sx126x import Sx126x
        if not table.get("busy"):
            raise RadioConfigError("an SX126x needs its BUSY line", param="busy", value=None)
        dio1 = GpioLine(table["dio1"], "in", "rising") if table.get("dio1") else None
        radio = Sx126x(spi, GpioLine(table["busy"]), dio1, reset, variant=chip,
                       tcxo_voltage=table.get("tcxo_voltage"),
                       regulator=table.get("regulator", "dcdc"),
                       dio2_rf_switch=bool(table.get("dio2_rf_switch", False)))
    elif chip in SX127X:
        from drivers.lora.sx127x import Sx127x
        dio0 = GpioLine(table["dio0"], "in", "rising") if table.get("dio0") else None
        radio = Sx127x(spi, dio0, reset, pa_boost=bool(table.get("pa_boost", True)))
    else:
        raise RadioConfigError("unknown LoRa chip", param="chip", value=chip)
    return LoRaLink(radio, params)
