"""The simulated MicroPython board, Python side: opens the two pseudo-terminal
pairs (the board's REPL, which ``mpremote`` opens like a USB serial port, and
the board's RS-485 UART, where ``wum-hil simulate`` serves meters) and runs
the interpreter under Node.js (hil/board.mjs) with the master ends.

Owns the ptys, starting and stopping the Node process and finding the
MicroPython WebAssembly package. Must not know the REPL protocol (board.mjs
does) or the firmware.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import termios
import tty
from pathlib import Path
from typing import Any

from hil import HilError

HERE = Path(__file__).resolve().parent
PKG = "@micropython/micropython-webassembly-pyscript"


def mpy_package() -> Path:
    """micropython.mjs of the npm package (``WUM_MPY_NODE_MODULES`` or the
    repo's ``.cache/node/node_modules``, as tests/mpy/runner.mjs finds it)."""
    base = os.environ.get("WUM_MPY_NODE_MODULES") or str(HERE.parent / ".cache" / "node" /
                                                         "node_modules")
    return Path(base) / PKG / "micropython.mjs"


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SimBoard:
    """``start()`` -> the board is up; ``repl`` and ``uart`` are the paths to
    open; ``stop()`` ends it. Usable as a context manager."""

    def __init__(self, flash_kb: int = 1024, heap_kb: int = 512, de_pin: str | None = "4",
                 cryptolib: bool = False) -> None:
        self.flash_kb, self.heap_kb = flash_kb, heap_kb
        self.de_pin, self.cryptolib = de_pin, cryptolib
        self.repl = self.uart = ""
        self._fds: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> SimBoard:
        node = shutil.which("node")
        pkg = mpy_package()
        if node is None or not pkg.exists():
            raise HilError("the simulated board needs Node.js and %s (run `make mpy`): %s"
                           % (PKG, "node not on PATH" if node is None else "missing " + str(pkg)))
        rm, rs, self.repl = _pty()
        um, us, self.uart = _pty()
        self._fds = [rm, rs, um, us]
        cmd = [node, str(HERE / "board.mjs"), "--repl-fd", str(rm), "--uart-fd", str(um),
               "--pkg", str(pkg), "--flash-kb", str(self.flash_kb), "--heap-kb",
               str(self.heap_kb), "--de-pin", self.de_pin or "none"]
        if self.cryptolib:
            cmd.append("--cryptolib")
        self._proc = subprocess.Popen(cmd, pass_fds=(rm, um), stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        import select
        r, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if r else b""
        if not line.startswith(b"{"):
            self.stop()
            raise HilError("the simulated board did not start: %r" % line[:200])
        json.loads(line)
        return self

    def describe(self) -> dict[str, Any]:
        return {"repl": self.repl, "uart": self.uart, "flash_kb": self.flash_kb,
                "heap_kb": self.heap_kb, "de_pin": self.de_pin, "cryptolib": self.cryptolib}

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
