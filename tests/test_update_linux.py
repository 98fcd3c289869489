"""``wum flash --ssh`` and signed updates on a Linux concentrator, end to
end (the issue's "must show"): a concentrator flashed with ``wum flash --ssh`` into a folder
standing in for its root filesystem (ssh and systemctl faked at their
command lines only: tests/fakebin) runs the agent from an A/B slot under
the launcher; ``hes-lite serve`` is real, a simulated Modbus meter answers
on a pty. The utility publishes packages with ``hes-lite firmware
publish`` and announces them with ``hes-lite command update``; the
outcome comes back as the command's result.

- the flash: bundle verified, slot a whole, launcher, owner-only config,
  unit, service active, every file's hash compared, and the agent uploads;
- a good update (0.1.0 -> 0.2.0) installs in the other slot, boots on
  trial, reads a cycle, has an upload acknowledged: executed, committed;
- a failing one (0.3.0, whose uplink never uploads) is rolled back by the
  launcher at its deadline, and the old version reports ``rolled_back``;
- unsigned, tampered, foreign-key and downgrade packages are each refused
  with a clear reason and nothing changes.

The versions are relabelled copies of one build (tests/update_rig.py): the
failing one proves the slot's own code runs (the venv's would upload).
"""

from __future__ import annotations

import json
import pwd
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load
from tests import update_rig as rig
from tests.test_flash_ssh import flash, provisioned, stop_service

DEVICE = "DC-UPD-1"
DEADLINE = 8            # s (wall clock) for a new version to prove healthy
SPEED = 30.0            # simulated seconds per wall second
FAILING_UPLINK = '''

def _never_uploads(self, stop=None):     # the failing version of tests/test_update_linux.py
    return {"sent_bytes": 0, "acked": 0}


Uplink.flush = _never_uploads
'''


class Device:
    def __init__(self, hes: rig.Hes, bundle: Path, root: Path, key: Path, work: Path,
                 cfg: Path, flashed: dict[str, Any]) -> None:
        self.hes, self.bundle, self.root, self.key, self.work = hes, bundle, root, key, work
        self.cfg, self.flashed = cfg, flashed

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "opt/wum/slots/boot.json").read_text())

    def installed(self) -> str:
        folder = self.root / "opt/wum/slots" / self.state()["active"]
        return str(json.loads((folder / "manifest.json").read_text())["version"])

    def log(self) -> str:
        return (self.root / "var/log/wum.service.log").read_text()

    def publish(self, pkg: Path, *extra: str) -> str:
        r = rig.run(rig.BIN / "hes-lite", "firmware", "publish", pkg, "--db", self.hes.db, *extra)
        assert r.returncode == 0, r.stderr
        return str(json.loads(r.stdout)["id"])

    def queue(self, package_id: str, cli: bool = False) -> str:
        """An update command, with ``hes-lite command update`` or the API."""
        if cli:
            r = rig.run(rig.BIN / "hes-lite", "command", "update", "--concentrator", DEVICE,
                        "--package", package_id, "--db", self.hes.db)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()
        a = self.hes.post("/v1/commands", json={"op": "update", "concentrator": DEVICE,
                                                "args": {"package": package_id}})
        assert a.status_code == 202, a.text
        return str(a.json()["id"])

    def wait(self, command_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            cmd = self.hes.get("/v1/commands/" + command_id, "viewer").json()
            if cmd["state"] in ("executed", "failed", "expired"):
                return dict(cmd)
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.3)

    def version(self, label: str, patch: dict[str, str] | None = None, sign: bool = True
                ) -> Path:
        b = rig.relabel(self.bundle, self.work / ("b-" + label), label, patch)
        return rig.package(b, self.work / ("p-%s.wup" % label), self.key if sign else None)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    work = tmp_path_factory.mktemp("upd")
    hes = rig.Hes(work)
    bundle = rig.linux_bundle(work)
    # agent and meter share an accelerated clock: with a 60 s period a cycle every 2 s, so a
    # new version has fresh readings to upload soon after it boots
    clock = "%r,%r,%r" % (float(int(time.time())), time.time(), SPEED)
    sim = subprocess.Popen([str(rig.BIN / "wum-hil"), "simulate", "--port", "pty", "--meters",
                            "1", "--protocol", "modbus", "--clock", clock],
                           stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    port = sim.stdout.readline().strip()
    sim.stdout.readline()
    root = work / "rootfs"
    root.mkdir()
    key = work / "release.key"
    public = rig.release_key(key).hex()
    try:
        cfg = provisioned(hes, work, DEVICE, port, root, release=public)
        toml = (cfg / "agent.toml").read_text()
        toml = toml.replace("[commands]\n", "[commands]\npoll_interval = 1\n").replace(
            "[update]\n", "[update]\nhealth_deadline = %d\n" % DEADLINE)
        (cfg / "agent.toml").write_text(toml + "\n[schedule]\nperiod = 60\n")
        r = flash(bundle, cfg, root, "--user", "nobody", clock=clock)
        assert r.returncode == 0, r.stderr
        dev = Device(hes, bundle, root, key, work, cfg, json.loads(r.stdout))
        deadline = time.monotonic() + 60          # it has uploaded: the HES knows it
        while not any(c["device"] == DEVICE and c["batches"]
                      for c in hes.get("/v1/concentrators", "viewer").json()):
            assert time.monotonic() < deadline, dev.log()
            time.sleep(0.3)
        yield dev
    finally:
        stop_service(root)
        sim.terminate()
        sim.wait(10)
        hes.stop()


def test_flash_installs_enables_verifies_and_the_agent_uploads(device: Device) -> None:
    out, root, cfg, bundle = device.flashed, device.root, device.cfg, device.bundle
    assert out["service"] == "active" and out["slot"] == "a" and out["version"] == "0.1.0"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert out["verified"] == len(manifest["files"]) + 1 + len(list(cfg.iterdir()))
    # the layout: slot a whole, the launcher, owner-only config, the unit
    slots = root / "opt/wum/slots"
    assert device.state()["active"] == "a" and (slots / "a/lib/agent/daemon.py").is_file()
    assert (root / "opt/wum/boot/wum-boot").stat().st_mode & stat.S_IXUSR
    conf = root / "etc/wum"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in conf.iterdir()} == {
        p.name: 0o600 for p in cfg.iterdir()}
    unit = (root / "etc/systemd/system/wum.service").read_text()
    assert "ExecStart=%s %s/opt/wum/boot/wum-boot --slots %s/opt/wum/slots -- run " \
           "--config %s/etc/wum/agent.toml" % (rig.BIN / "python", root, root, root) in unit
    # the service's user owns what it reads and writes (the fake systemctl runs it as root)
    nobody = pwd.getpwnam("nobody").pw_uid
    assert "\nUser=nobody\n" in unit and out["owner"] == "nobody"
    assert {p.stat().st_uid for p in [conf, slots, slots / "a", root / "var/lib/wum",
                                      *conf.iterdir()]} == {nobody}
    assert load(conf / "agent.toml").concentrator_id == DEVICE
    calls = (root / "ssh.log").read_text()
    assert "systemctl enable wum.service" in calls and "systemctl restart" in calls
    # the service runs the launcher, which runs the agent from slot a: it uploaded (the
    # fixture waited for it)
    assert "wum-boot: booting slot a (version 0.1.0)" in device.log()
    assert rig.run(rig.FAKEBIN / "systemctl", "is-active", "wum.service",
                   env=rig.fake_env(root)).stdout.strip() == "active"


def test_a_good_update_installs_and_reports_healthy(device: Device) -> None:
    pid = device.publish(device.version("0.2.0"))
    cmd = device.wait(device.queue(pid, cli=True))
    assert cmd["state"] == "executed", (cmd, device.log()[-3000:])
    assert cmd["result"] == {"version": "0.2.0", "previous": "0.1.0", "slot": "b"}
    st = device.state()
    assert st["active"] == "b" and st["previous"] == "a" and st["trial"] is None
    assert st["last"]["outcome"] == "healthy"
    assert "booting slot b (version 0.2.0) on trial, boot 1 of 3" in device.log()


def test_a_failing_update_rolls_back_by_itself(device: Device) -> None:
    before = device.state()["active"]
    pkg = device.version("0.3.0", {"agent/uplink.py": (
        device.root / "opt/wum/slots" / before / "lib/agent/uplink.py").read_text() +
        FAILING_UPLINK})
    cmd = device.wait(device.queue(device.publish(pkg)), timeout=120)
    assert cmd["state"] == "failed", cmd
    assert cmd["reason"] == "rolled_back: version 0.3.0 did not report healthy within %ds" \
        % DEADLINE, cmd
    st = device.state()
    assert st["active"] == before and st["trial"] is None and st["last"]["outcome"] == \
        "rolled_back"
    log = device.log()
    assert "version 0.3.0 has not reported healthy by its deadline: stopping it" in log
    assert log.count("booting slot %s" % before) >= 2      # the old version booted again


def test_bad_packages_are_refused_with_a_clear_reason(device: Device) -> None:
    st = device.state()
    good = device.version("0.4.0")
    tampered = device.work / "tampered.wup"
    data = bytearray(good.read_bytes())
    data[-100] ^= 0x01                   # a byte of the payload (the last file)
    tampered.write_bytes(bytes(data))
    foreign = rig.foreign_sign(good, device.work / "foreign.wup")
    cases = {
        "unsigned": (device.publish(device.version("0.5.0", sign=False), "--allow-unsigned"),
                     "refused: unsigned: package 0.5.0 carries no release signature"),
        "tampered": (device.publish(tampered),
                     "refused: tampered: "),
        "foreign": (device.publish(foreign), "refused: foreign_key: package 0.4.0 is signed by "
                    "release key"),
        "downgrade": (device.publish(device.version("0.1.0")),
                      "refused: downgrade: package version 0.1.0 is not newer than the "
                      "installed %s" % device.installed()),
    }
    ids = {name: device.queue(pid) for name, (pid, _) in cases.items()}
    for name, (_, want) in cases.items():
        cmd = device.wait(ids[name])
        assert cmd["state"] == "failed" and cmd["reason"].startswith(want), (name, cmd)
    assert "which this device does not trust" in device.wait(ids["foreign"])["reason"]
    assert "differs from the hash the signature covers" in device.wait(ids["tampered"])["reason"]
    after = device.state()
    assert (after["active"], after["previous"], after["trial"]) == (st["active"],
                                                                    st["previous"], None)
