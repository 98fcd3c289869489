"""IEC 62056-21 against an independent mode C meter (``tests/iec_oracle_meter``),
written from the standard and sharing no code with our client or simulator.

First a plain pyserial client proves the emulation itself (so it is not
shaped to our client); then ``wum read`` in its own process, and the agent's
cycle, read it. Expected values are computed here from the text the
emulation serves, never from our parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import serial

from tests.iec_oracle_meter import ACK, NAK, SOH, STX, OracleMeter, bcc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEVICE = "70010203"
PASSWORD = "4711"
SERVED = [
    ("C.1.0", DEVICE),                       # the meter's serial number: its id, not a register
    ("1.8.0", "0012345.678*kWh"),
    ("1.8.1", "0008000.125*kWh"),
    ("2.8.0", "0000012.500*kWh"),
    ("32.7.0", "230.4*V"),
    ("31.7.0", "4.25*A"),
    ("14.7.0", "50.01*Hz"),
    ("0-0:96.3.10", "1"),
]
SCALE = {"kWh": ("Wh", 3), "V": ("V", 0), "A": ("A", 0), "Hz": ("Hz", 0), "": ("", 0)}


def expected_registers() -> dict[str, tuple[float | int, str]]:
    """{OBIS: (value in the base unit, unit)} of the measuring data sets served."""
    out = {}
    for address, text in SERVED[1:]:
        if "-" in address:                                   # A-B:C.D.E
            ab, cde = address.split(":")
            obis = ab.replace("-", ".") + "." + cde + ".255"
        else:
            obis = "1.0." + address + ".255"
        value, _, unit = text.partition("*")
        base, shift = SCALE[unit]
        d = Decimal(value).scaleb(shift)
        out[obis] = (int(d) if d == d.to_integral_value() else float(d), base)
    return out


def served_text() -> str:
    return "".join("%s(%s)\r\n" % ds for ds in SERVED) + "!\r\n"


@pytest.fixture
def oracle():
    meters = []

    def start(**kw) -> OracleMeter:
        kw.setdefault("address", DEVICE)
        kw.setdefault("serial", DEVICE)
        kw.setdefault("password", PASSWORD)
        m = OracleMeter(SERVED, **kw).start()
        meters.append(m)
        return m

    yield start
    for m in meters:
        m.stop()


# -- the emulation, proven by a plain pyserial client --------------------------------
def _plain(path: str) -> serial.Serial:
    # A pty carries bytes, not 7E1 frames: the kernel keeps CS8 (see the
    # oracle's docstring), so a 7-bit character goes as a byte with bit 7 clear.
    return serial.Serial(path, 300, timeout=3)


def _read_block(ser: serial.Serial) -> bytes:
    msg = ser.read_until(b"\x03")
    return msg + ser.read(1)


def _sign_on(ser: serial.Serial, option: bytes) -> bytes:
    ser.write(b"/?!\r\n")
    ident = ser.read_until(b"\n")
    time.sleep(0.25)                      # t_r: at least 200 ms before we answer
    ser.write(option)
    ser.flush()
    ser.baudrate = 9600                   # both sides switch after the option select
    return ident


def test_oracle_readout_with_a_plain_pyserial_client(oracle) -> None:
    meter = oracle()
    with _plain(meter.path) as ser:
        assert _sign_on(ser, bytes([ACK]) + b"050\r\n") == b"/ORC5ORACLE-C1\r\n"
        msg = _read_block(ser)
    assert msg[0] == STX and msg[-2] == 0x03 and bcc(msg[1:-1]) == msg[-1]
    assert msg[1:-2].decode() == served_text()
    assert [b for b, _ in meter.sent] == [300, 9600]     # identification, then the readout
    assert meter.kept == (8, False)                       # the pty kept no 7E1 framing


def test_oracle_programming_mode_with_a_plain_pyserial_client(oracle) -> None:
    meter = oracle()

    def cmd(c: bytes, data: bytes | None = None) -> bytes:
        body = c + ((bytes([STX]) + data) if data is not None else b"") + b"\x03"
        return bytes([SOH]) + body + bytes([bcc(body)])

    with _plain(meter.path) as ser:
        _sign_on(ser, bytes([ACK]) + b"051\r\n")
        p0 = _read_block(ser)
        assert p0 == cmd(b"P0", b"(%s)" % DEVICE.encode())
        time.sleep(0.25)
        ser.write(cmd(b"P1", b"(%s)" % PASSWORD.encode()))
        assert ser.read(1) == bytes([ACK])
        time.sleep(0.25)
        ser.write(cmd(b"R1", b"1.8.0()"))
        r1 = _read_block(ser)
        time.sleep(0.25)
        bad = bytearray(cmd(b"R1", b"2.8.0()"))
        bad[-1] ^= 0x55
        ser.write(bytes(bad))                             # a wrong BCC is NAKed
        assert ser.read(1) == bytes([NAK])
        time.sleep(0.25)
        ser.write(cmd(b"B0"))
        ser.flush()
        deadline = time.monotonic() + 3
        while meter.heard[-1] != cmd(b"B0") and time.monotonic() < deadline:
            time.sleep(0.02)
    assert r1[1:-2] == b"1.8.0(0012345.678*kWh)" and bcc(r1[1:-1]) == r1[-1]
    assert meter.heard[-1] == cmd(b"B0") and meter.sign_ons == 1
    assert [b for b, _ in meter.sent] == [300] + [9600] * 4   # ident; P0, ACK, R1 data, NAK


def test_oracle_hears_only_7bit_characters(oracle) -> None:
    """The request with even parity carried in bit 7 (what an 8N1 port sends for
    7E1) is not a request on a line without framing: no answer."""
    meter = oracle()
    parity = bytes(b | (bin(b).count("1") & 1) << 7 for b in b"/?!\r\n")
    with _plain(meter.path) as ser:
        ser.timeout = 1.5                                  # the answer would start by 0.3 s
        ser.write(parity)
        assert ser.read_until(b"\n", 16) == b""
        ser.timeout = 3
        ser.write(b"/?!\r\n")                             # the same request, 7-bit
        assert ser.read_until(b"\n") == b"/ORC5ORACLE-C1\r\n"
    assert meter.line_errors == 2 and meter.sign_ons == 1     # '/' and CR carry a parity 1


def test_oracle_does_not_hear_an_option_select_sent_within_200_ms(oracle) -> None:
    meter = oracle()
    with _plain(meter.path) as ser:
        ser.write(b"/?!\r\n")
        assert ser.read_until(b"\n") == b"/ORC5ORACLE-C1\r\n"
        ser.write(bytes([ACK]) + b"000\r\n")              # at once: the meter is not listening
        ser.timeout = 1.0
        assert ser.read(1) == b""
    assert meter.deaf_drops == 6 and len(meter.sent) == 1


# -- wum read, in its own process --------------------------------------------------
def _wum_read(path: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "wum"), "read", "--protocol", "iec62056-21", "--port", path,
                           "--address", address, "--json"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _check_document(out: subprocess.CompletedProcess[str], address: str) -> None:
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["meter"] == {"protocol": "iec62056-21", "address": address, "id": DEVICE}
    got = {r["obis"]: (r["value"], r["unit"]) for r in doc["registers"]}
    assert got == expected_registers()
    assert doc["profile"] == []


def test_wum_read_empty_address(oracle) -> None:
    """Issue 9, failure 2: ``/?!`` to the one meter of a point-to-point line."""
    meter = oracle()
    _check_document(_wum_read(meter.path, ""), "")
    assert meter.line_errors == 0 and meter.deaf_drops == 0


def test_wum_read_device_address(oracle) -> None:
    meter = oracle()
    _check_document(_wum_read(meter.path, DEVICE), DEVICE)
    assert b"/?%s!\r\n" % DEVICE.encode() in meter.heard


def test_client_waits_out_the_slowest_meter_the_standard_allows(oracle) -> None:
    """t_r up to 1500 ms before each answer, a pause of up to 1500 ms between
    characters (§6: t_r, t_a); our 2 s silence limit sits inside t_t."""
    from drivers.iec62056_21 import open_client

    meter = oracle(reaction=1.4, line_gaps={1: 1.4})
    client = open_client(meter.path, address="", retries=0)
    try:
        regs = client.read_registers()
    finally:
        client.close()
    assert {r.obis: (r.value, r.unit) for r in regs} == expected_registers()
    assert meter.sign_ons == 1


# -- the agent's cycle -------------------------------------------------------------
def test_agent_cycle_archives_the_oracle_meter(oracle, tmp_path) -> None:
    meter = oracle()
    archive = tmp_path / "archive.db"
    cfg = tmp_path / "agent.toml"
    cfg.write_text("\n".join([
        "[concentrator]", 'id = "DC-ORACLE"', 'archive = "%s"' % archive,
        "[schedule]", "period = 3600", "jitter = 0", "meter_budget = 60", "retries = 1",
        "[uplink]", 'transport = "none"',
        # The real clock, corrected by the HES offset (read from the archive):
        # the agent as it runs in the field, not the tests' scaled clock.
        "[time]", 'source = "hes"',
        "[[bus]]", 'name = "optical"', 'port = "%s"' % meter.path, "baud = 9600",
        "timeout = 2.0",
        "[[bus.meter]]", 'address = ""', 'protocol = "iec62056-21"',
        'password = "%s"' % PASSWORD]) + "\n")
    out = subprocess.run([str(BIN / "wum"), "run", "--config", str(cfg), "--cycles", "0"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    from agent.archive import Archive

    arc = Archive(str(archive)).open()
    try:
        results = [(r["serial"], r["status"], r["error"]) for r in arc.last_results()]
    finally:
        arc.close()
    assert results == [(DEVICE, "read", None)]
    from tests.agent_rig import archived_rows

    rows = archived_rows(archive)
    assert [serial for serial, _ in rows] == [DEVICE]
    values = next(iter(rows.values()))
    assert {o: v for o, (v, _) in expected_registers().items()} == {
        o: values[o] for o in expected_registers()}
    # Programming mode too (load profile, log book, clock): P1, R1 of the clock, B0.
    assert {m[1:3] for m in meter.heard if m[:1] == bytes([SOH])} >= {b"P1", b"R1", b"B0"}
    assert meter.line_errors == 0 and meter.deaf_drops == 0


# -- our simulator, read by the iec62056-21 package (pwitab, BSD-3-Clause) ---------
def test_pwitab_client_reads_our_simulator() -> None:
    """pwitab's client re-opens its port 0.5 s after the option select (flushing
    input), so the simulated meter answers 1.2 s late — inside t_r's 1500 ms."""
    pw = pytest.importorskip("iec62056_21.client")
    from hil.bus import Bus
    from hil.iec_meter import IecMeter
    from hil.model import ORIGIN, UNITS, MeterModel
    from hil.ports import open_port

    t = ORIGIN + 20 * 86400 + 9 * 3600
    model = MeterModel(7, seed=2)
    port = open_port("pty")
    bus = Bus(port, [IecMeter(model, "7", lambda: t)], baud=9600, bits=10, latency=1.2).start()
    try:
        client = pw.Iec6205621Client.with_serial_transport(port.agent_path)
        client.connect()
        try:
            answer = client.standard_readout()
        finally:
            client.disconnect()
    finally:
        bus.stop()
        port.close()
    scale = {"kWh": ("Wh", 3), "kvarh": ("varh", 3), "kW": ("W", 3), "kvar": ("var", 3)}
    regs = model.registers(t)
    got, serial = {}, None
    for ds in answer.data:
        if ds.address == "0.0.0":
            serial = ds.value
            continue
        ab, _, cde = (ds.address or "").rpartition(":")
        obis = (ab.replace("-", ".") if ab else "1.0") + "." + cde + ".255"
        if obis not in regs:                                # 0.9.1, 0.9.2: the clock
            continue
        unit, shift = scale.get(ds.unit or "", (ds.unit or "", 0))
        d = Decimal(ds.value).scaleb(shift)
        got[obis] = (int(d) if d == d.to_integral_value() else float(d), unit)
    assert got == {o: (v, UNITS[o]) for o, v in regs.items()}
    assert serial == model.serial
