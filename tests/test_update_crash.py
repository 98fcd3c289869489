"""kill -9 at any point of an update: nothing is half-installed, the device
boots a complete version.

A child process (os.fork) runs the update's disk work exactly as the agent
does after verification — install the package into the inactive slot
(``agent.update_linux.install``), switch to it on trial
(``agent.slots.Slots.switch``) — and SIGKILLs itself before its N-th file
operation (create, write, rename, remove, mkdir), for every N until it
finishes. After each kill, the launcher's boot decision and whole-slot check
(``firmware.launcher.Launcher.choose``) must give the old version or the
complete new one, every file of it matching its hash. The same for the
launcher's own writes while it rolls a trial back, and for the agent
committing one. The bundles are small real Linux bundles (a wheel with a
few modules): the point is the order of operations, not their size.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import update_package as pkg
from agent.slots import Disk, Slots
from agent.update_linux import bundle_entries, install, package_entries, verify_slot
from firmware.build import write_manifest
from firmware.launcher import Launcher
from firmware.package_tools import keygen, load_secret, pack, sign


def linux_bundle(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("agent/__init__.py", "VERSION = %r\n" % version)
        z.writestr("agent/cli.py", "import sys\nsys.exit(0)\n")
        z.writestr("wum-%s.dist-info/METADATA" % version, "Name: wum\nVersion: %s\n" % version)
    (folder / ("wum-%s-py3-none-any.whl" % version)).write_bytes(buf.getvalue())
    (folder / "wum.service").write_text("[Service]\nExecStart=/bin/true\n")
    write_manifest(folder, {"target": "linux", "board": "linux", "version": version,
                            "wheel": "wum-%s-py3-none-any.whl" % version,
                            "unit": "wum.service"})
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("crash")
    old = linux_bundle(d / "b1", "1.0.0")
    new = linux_bundle(d / "b2", "2.0.0")
    keygen(d / "release.key")
    p = d / "p2.wup"
    pack(new, p)
    sign(p, load_secret(d / "release.key"))
    pristine = d / "pristine"
    s = Slots(str(pristine))
    s.switch(install(s, bundle_entries(old, json.loads((old / "manifest.json").read_text()))))
    return {"dir": d, "pristine": pristine, "package": p}


def killing_disk(n: int) -> Disk:
    count = [0]

    def step(what: str) -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    return Disk(step)


def in_child(work: Callable[[], None]) -> bool:
    """Run ``work`` in a forked child; True if it was killed, False if it finished."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the update failed by itself"
    return False


def boots_whole(base: Path) -> str:
    """What the launcher would boot: a whole slot; its version."""
    slots = Slots(str(base))
    slot = Launcher(slots, "python3", []).choose()
    assert verify_slot(base / slot) is None
    v = slots.version(slot)
    assert v in ("1.0.0", "2.0.0")
    st = slots.state()
    if v == "2.0.0" and st["trial"]:
        assert st["previous"] and verify_slot(base / st["previous"]) is None
        assert slots.version(st["previous"]) == "1.0.0"
    return str(v)


def sweep(world: dict[str, Path], start: Path, work: Callable[[Slots], None]
          ) -> dict[str, int]:
    """Kill ``work`` before its 1st, 2nd, ... file operation, each time from a
    copy of ``start``, until it finishes; -> versions booted, and how many points."""
    seen: dict[str, int] = {}
    base = world["dir"] / "slots"
    n = 1
    while True:
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(start, base)
        killed = in_child(lambda n=n: work(Slots(str(base), killing_disk(n))))
        v = boots_whole(base)
        seen[v] = seen.get(v, 0) + 1
        if not killed:
            return dict(seen, points=n)
        n += 1
        assert n < 2000


def test_kill_anywhere_in_install_and_switch(world: dict[str, Path]) -> None:
    def update(slots: Slots) -> None:
        with open(world["package"], "rb") as f:
            header, sig, _ = pkg.read_head(f)
            slot = install(slots, package_entries(f, header))
        slots.switch(slot, trial={"counter": 7, "deadline": 0})

    seen = sweep(world, world["pristine"], update)
    # every point was tried: killed anywhere before the state file names the new slot the
    # old version boots whole; once it does (the run that finishes), the new one
    assert seen["points"] > 15 and seen["1.0.0"] == seen["points"] - 1 and seen["2.0.0"] == 1, seen


def test_kill_anywhere_while_the_launcher_rolls_back_or_the_agent_commits(
        world: dict[str, Path]) -> None:
    trial = world["dir"] / "on-trial"
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(world["pristine"], trial)
    s = Slots(str(trial))
    with open(world["package"], "rb") as f:
        header, _, _ = pkg.read_head(f)
        slot = install(s, package_entries(f, header))
    s.switch(slot, trial={"counter": 7, "deadline": 1, "max_boots": 3})  # deadline passed

    def rollback(slots: Slots) -> None:
        assert slots.boot(now=1000.0) != slot
    seen = sweep(world, trial, rollback)
    assert seen["1.0.0"] >= 1 and seen["points"] > 3, seen

    def commit(slots: Slots) -> None:
        slots.commit(5.0)
    seen = sweep(world, trial, commit)
    # a cut commit leaves the trial on (rolled back at its deadline) or committed: never mixed
    assert seen["points"] > 2, seen
