"""The IEC 62056-21 meter simulator on its own (no bus): it never raises on
any input (hil.bus contract), answers only its address, serves the model in
EDIS form, and its UART speed-mismatch model behaves like a UART."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.iec62056_21.dataset import Readout, registers
from drivers.iec62056_21.framer import Framer
from drivers.iec62056_21.frames import Ack, Block, Command, Identification, OptionSelect, Request
from hil.iec_meter import IecMeter, edis, uart_view
from hil.model import ORIGIN, UNITS, MeterModel

T = ORIGIN + 3 * 86400 + 555


def _meter(**kw) -> IecMeter:
    return IecMeter(MeterModel(1, seed=2), "42", lambda: T, **kw)


def _replies(meter: IecMeter, *msgs) -> list:
    out = []
    for m in msgs:
        out.extend(meter.feed(m.to_bytes() if hasattr(m, "to_bytes") else m, 0.0))
    f = Framer("client")
    frames = []
    for reply, _baud in out:
        f.feed(reply)
        while (x := f.next_frame()) is not None:
            frames.append(x)
    return frames


SESSIONS = st.lists(st.sampled_from([
    b"/?42!\r\n", b"/?!\r\n", b"/?43!\r\n", OptionSelect("5", "0").to_bytes(),
    OptionSelect("5", "1").to_bytes(), Command("P", "1", "(00000000)").to_bytes(),
    Command("R", "1", "1.8.0()").to_bytes(), Command("R", "5", "P.01(;)").to_bytes(),
    Command("W", "1", "0.9.1(25:61:00)").to_bytes(), Command("B", "0").to_bytes(),
    b"\x06", b"\x15", b"\x02", b"\x01", b"/", b"(", b")", b"\r\n"]) | st.binary(max_size=12),
    max_size=25)


@settings(max_examples=300, deadline=None)
@given(SESSIONS, st.integers(1, 6), st.booleans(), st.booleans())
def test_feed_never_raises(pieces: list, step: int, honour: bool, wire: bool) -> None:
    meter = _meter(honour_baud=honour, wire_parity=wire)
    data = b"".join(pieces)
    for i in range(0, len(data), step):
        for reply, baud in meter.feed(data[i:i + step], float(i)):
            assert isinstance(reply, bytes) and (baud is None or baud > 0)


def test_answers_only_its_address() -> None:
    meter = _meter(answer_empty=False)
    assert _replies(meter, Request("43")) == []
    assert _replies(meter, Request("")) == []
    assert _replies(meter, Request("42")) == [Identification("WUM", "5", "IEC-SIM")]
    assert _replies(_meter(), Request("")) == [Identification("WUM", "5", "IEC-SIM")]
    assert _replies(_meter(), Request("0042")) == [Identification("WUM", "5", "IEC-SIM")]


def test_readout_serves_the_model_in_edis_form() -> None:
    meter = _meter()
    frames = _replies(meter, Request("42"), OptionSelect("5", "0"))
    block = frames[-1]
    assert isinstance(block, Block)
    ro = Readout.from_text(block.data)
    assert ro.complete
    addresses = [d.address for d in ro.datasets()]
    assert "1.8.0" in addresses and "32.7.0" in addresses and "0-0:96.3.10" in addresses
    regs = {o: (v, u) for o, v, u in registers(ro.datasets())}
    assert regs == {o: (v, UNITS[o]) for o, v in meter.model.registers(T).items()}
    assert meter.state == "IDLE"


def test_programming_errors_and_break() -> None:
    meter = _meter()
    frames = _replies(meter, Request("42"), OptionSelect("5", "1"))
    assert frames[-1] == Command("P", "0", "(%s)" % meter.model.serial)
    assert _replies(meter, Command("W", "1", "0.9.1(10:00:00)")) == [Block("(ERROR)")]
    assert _replies(meter, Command("R", "1", "9.9.9()")) == [Block("(ERROR)")]
    assert _replies(meter, Command("P", "1", "(00000000)")) == [Ack()]
    assert _replies(meter, b"\x15") == [Ack()]                 # NAK: repeat the last answer
    assert _replies(meter, Command("B", "0")) == []
    assert meter.state == "IDLE"


def _with_parity(data: bytes) -> bytes:
    return bytes(b | (bin(b).count("1") & 1) << 7 for b in data)


def test_framing_on_a_pty_and_on_a_wire() -> None:
    """IEC 62056-21 §5: 7 data bits + even parity. On a pty a character is a
    byte with bit 7 clear (a parity bit there makes it noise); on a real 8N1
    port bit 7 is the parity bit, stripped on receive and set on send."""
    request = Request("42").to_bytes()
    assert _meter().feed(_with_parity(request), 0.0) == []
    ((ident, _),) = _meter(wire_parity=True).feed(_with_parity(request), 0.0)
    plain = Identification("WUM", "5", "IEC-SIM").to_bytes()
    assert ident == _with_parity(plain) != plain


def test_edis_forms() -> None:
    assert edis("1.0.1.8.0.255") == "1.8.0"
    assert edis("0.0.96.3.10.255") == "0-0:96.3.10"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40).map(lambda b: bytes(c & 0x7F for c in b)))
def test_uart_view(data: bytes) -> None:
    assert uart_view(data, 9600, 9600) == data
    slow = uart_view(data, 300, 9600)           # a 300 Bd talker heard at 9600: breaks
    assert slow and set(slow) == {0x00}
    assert len(uart_view(data, 9600, 300)) <= len(data)
