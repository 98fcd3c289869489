"""`wum-hil board`: the JSON line with both ptys, and a flash that is as
large as --flash-kb (a write beyond it fails with ENOSPC, as on a board)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hil.board import mpy_package

BIN = Path(sys.executable).parent


def test_board_prints_its_ptys_and_caps_its_flash() -> None:
    if shutil.which("node") is None or not mpy_package().exists():
        if os.environ.get("CI"):
            pytest.fail("simulated board unavailable")
        pytest.skip("simulated board unavailable")
    p = subprocess.Popen([str(BIN / "wum-hil"), "board", "--port", "pty", "--flash-kb", "16"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        assert os.path.exists(info["repl"]) and os.path.exists(info["uart"])
        assert info["flash_kb"] == 16
        code = ("import errno\nf = open('big.bin', 'wb')\ntry:\n for i in range(40):\n"
                "  f.write(bytes(1024))\nexcept OSError as e:\n print('full', e.args[0] == "
                "errno.ENOSPC if hasattr(errno, 'ENOSPC') else e.args[0] == 28, i)\n")
        r = subprocess.run([str(BIN / "mpremote"), "connect", info["repl"], "exec", code],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        words = r.stdout.split()
        assert words[:2] == ["full", "True"] and 10 <= int(words[2]) <= 16, r.stdout
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


# One exchange on the simulated board's RS-485 UART: DE high, write a Modbus request,
# flush, then either drop DE and listen (as firmware.rs485 does) or listen with DE
# still high (a firmware that forgets the transceiver). Prints the reply and the stats.
EXCHANGE = """
import machine, time, _board
u = machine.UART(1, baudrate=1200)
de = machine.Pin(4, machine.Pin.OUT)
def exchange(lower):
    de.value(1)
    u.write(b'\\x01\\x03\\x00\\x00\\x00\\x02\\xc4\\x0b')
    u.flush()
    if lower:
        de.value(0)
    got, t = b'', time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < 1500 and len(got) < 9:
        n = u.any()
        if n:
            got += u.read(n)
        else:
            machine.idle()
    de.value(0)
    print('reply', got.hex() if got else '-', _board.stats())
exchange(True)
exchange(False)
"""
REPLY = bytes.fromhex("010304000100022a32")


def test_the_de_rule_loses_what_is_read_while_driving_not_what_a_late_board_finds(
        ) -> None:
    """A meter answers after the request's last bit; this host stops the board's
    process meanwhile (SIGSTOP, as a loaded machine does), so the board finds the
    reply only once its flush wakes up late: a firmware that drops DE after
    flushing still gets it; one that listens with DE high loses it."""
    import threading
    import time

    import serial

    from hil.board import SimBoard
    if shutil.which("node") is None or not mpy_package().exists():
        if os.environ.get("CI"):
            pytest.fail("simulated board unavailable")
        pytest.skip("simulated board unavailable")
    with SimBoard(flash_kb=64) as board:
        assert board._proc is not None
        pid = board._proc.pid
        errors: list[BaseException] = []

        def meter() -> None:
            try:
                with serial.Serial(board.uart, 1200, timeout=10) as line:
                    for _ in range(2):
                        assert line.read(8) == bytes.fromhex("010300000002c40b")
                        os.kill(pid, signal.SIGSTOP)     # the board is in its flush (67 ms)
                        try:
                            time.sleep(0.08)            # the reply starts after the last bit
                            line.write(REPLY)
                            line.flush()
                            time.sleep(0.2)
                        finally:
                            os.kill(pid, signal.SIGCONT)
            except BaseException as e:                   # reported by the test below
                errors.append(e)

        t = threading.Thread(target=meter, daemon=True)
        t.start()
        r = subprocess.run([str(BIN / "mpremote"), "connect", board.repl, "exec", EXCHANGE],
                           capture_output=True, text=True, timeout=60)
        t.join(10)
    assert r.returncode == 0 and not errors, (r.stderr, errors)
    first, second = [line.split(" ", 2) for line in r.stdout.splitlines()
                     if line.startswith("reply")]
    assert first[1] == REPLY.hex() and json.loads(first[2])["dropped_rx"] == 0, r.stdout
    assert second[1] == "-" and json.loads(second[2])["dropped_rx"] == len(REPLY), r.stdout
