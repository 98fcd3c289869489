"""The launcher on a Linux concentrator: what systemd starts (``wum-boot``),
which boots the active A/B slot and watches a new version on trial.

Owns, on each boot of the agent: the boot decision (``agent.slots.Slots.boot``:
count a trial's boots, roll back past ``max_boots`` or the deadline),
checking that the slot is whole before running it (``installed.json``
hashes; a damaged slot is rolled back from), running the slot's agent as a
child process (``python -P -m agent.cli …`` with ``PYTHONPATH`` = the slot's
``lib``, ``WUM_SLOTS``, ``WUM_SLOT``; ``-P`` keeps the working directory off
the import path), and while a trial lasts, stopping
the child at the deadline and rolling back if the version has not
committed. Exit status ``agent.update.RESTART`` from the child means "boot
again" (an update switched slots). SIGTERM is passed on to the child.

Installed once by ``wum flash --ssh`` into ``/opt/wum/boot`` with the
modules it needs (it never runs code from a slot it has not checked);
updates never replace it — like a board's ``main.py``. CPython, standard
library only. Must not know packages, signatures or the agent's insides.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent.slots import SlotError, Slots
from agent.update_linux import verify_slot

RESTART = 75            # agent.update.RESTART (not imported: the launcher stays small)
STOP_GRACE = 30.0       # s between SIGTERM and SIGKILL of a child past its deadline
RESPAWN_PAUSE = 1.0     # s before booting a trial version that exited


def say(msg: str) -> None:
    print("wum-boot: " + msg, file=sys.stderr, flush=True)


class Launcher:
    def __init__(self, slots: Slots, python: str, args: list[str]) -> None:
        self.slots = slots
        self.python = python
        self.args = args
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def on_signal(self, signum: int, frame: object = None) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def choose(self) -> str:
        """The slot to run: the boot decision, then a whole-slot check."""
        for _ in range(3):
            slot = self.slots.boot(time.time())
            problem = verify_slot(Path(self.slots.path(slot)))
            if problem is None:
                return slot
            say("slot %s is damaged: %s" % (slot, problem))
            st = self.slots.state()
            if st["previous"] is None:
                raise SlotError(problem, why="damaged")
            self.slots.rollback("slot %s damaged: %s" % (slot, problem), time.time())
        raise SlotError("no whole slot to boot", why="damaged")

    def run_once(self) -> int:
        slot = self.choose()
        st = self.slots.state()
        trial = st["trial"]
        folder = self.slots.path(slot)
        env = dict(os.environ, PYTHONPATH=folder + "/lib", WUM_SLOTS=self.slots.base,
                   WUM_SLOT=slot)
        say("booting slot %s (version %s)%s" % (
            slot, self.slots.version(slot),
            " on trial, boot %s of %s" % (trial["boots"], trial["max_boots"]) if trial else ""))
        # -P: nothing but the slot (PYTHONPATH) and the system's site-packages on the path,
        # never the working directory (Python >= 3.11)
        self.child = subprocess.Popen([self.python, "-P", "-m", "agent.cli", *self.args],
                                      env=env)
        deadline = float(trial.get("deadline") or 0) if trial else 0.0
        while True:
            wait = 5.0 if not deadline else max(0.1, min(5.0, deadline - time.time()))
            try:
                return self.child.wait(wait)
            except subprocess.TimeoutExpired:
                pass
            if trial and deadline and time.time() > deadline and self.slots.state()["trial"]:
                version = trial.get("version")
                say("version %s has not reported healthy by its deadline: stopping it"
                    % version)
                self._stop_child()
                if self.slots.state()["trial"]:      # it may have committed while stopping
                    allowed = int(deadline - float(trial.get("started") or deadline))
                    self.slots.rollback("version %s did not report healthy within %ds"
                                        % (version, allowed), time.time())
                return RESTART

    def _stop_child(self) -> None:
        assert self.child is not None
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def loop(self) -> int:
        while not self.stopping.is_set():
            rc = self.run_once()
            st = self.slots.state()
            if self.stopping.is_set():
                return 0
            if rc == RESTART:
                continue
            if st["trial"]:
                say("version %s exited with status %d on trial" % (st["trial"].get("version"),
                                                                    rc))
                self.stopping.wait(RESPAWN_PAUSE)
                continue
            say("agent exited with status %d" % rc)
            return rc
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wum-boot", description="Boot the active A/B slot of the "
                                "wum agent, watch a new version on trial, roll back by itself.")
    p.add_argument("--slots", required=True, help="the slots folder (/opt/wum/slots)")
    p.add_argument("--python", default=sys.executable, help="the Python that runs the agent")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then the wum arguments (run ...)")
    a = p.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    launcher = Launcher(Slots(a.slots), a.python, args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, launcher.on_signal)
    try:
        return launcher.loop()
    except SlotError as e:
        say("cannot boot: %s" % e)
        return 1
