"""``wum flash --ssh``: provision -> build -> flash a Linux concentrator ->
its service runs the agent from an A/B slot and uploads to the real
``hes-lite serve``.

Faked, and only at their command lines (tests/fakebin): ``ssh`` runs the
remote command with ``sh -c`` on this machine (no network hop, no login),
and ``systemctl`` starts the unit's real ExecStart line as a detached
process group (no Restart= policy, no users or sandboxing). The "root
filesystem" is a folder (``--root``). Everything else is real: the wheel,
the installer run from it over the fake ssh, the launcher, the agent, a
simulated Modbus meter on a pty, the HES.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load
from tests import update_rig as rig


@pytest.fixture(scope="module")
def hes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.Hes]:
    h = rig.Hes(tmp_path_factory.mktemp("hes"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rig.linux_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def meter() -> Iterator[str]:
    sim = subprocess.Popen([str(rig.BIN / "wum-hil"), "simulate", "--port", "pty", "--meters",
                            "1", "--protocol", "modbus"], stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    port = sim.stdout.readline().strip()
    sim.stdout.readline()
    yield port
    sim.terminate()
    sim.wait(10)


def provisioned(hes: rig.Hes, folder: Path, device: str, port: str, root: Path,
                release: str = "") -> Path:
    out = folder / ("cfg-" + device)
    r = rig.run(rig.BIN / "wum", "provision", "--device-id", device, "--hes", hes.url,
                "--token", hes.tokens["admin"], "--out", out, "--meter", "modbus:1:generic",
                "--port", port, "--archive", root / "var/lib/wum/archive.db",
                *(("--release-key", release) if release else ()))
    assert r.returncode == 0, r.stderr
    return out


def flash(bundle: Path, config: Path, root: Path, *extra: object, clock: str = ""
          ) -> subprocess.CompletedProcess[str]:
    """``clock``: a ScaledClock spec the started agent runs on (WUM_CLOCK)."""
    env = rig.fake_env(root)
    if clock:
        env["WUM_CLOCK"] = clock
    return rig.run(rig.BIN / "wum", "flash", "--ssh", "wum@concentrator.test", "--bundle",
                   bundle, "--config", config, "--root", root, "--remote-python",
                   rig.BIN / "python", *extra, env=env)


def stop_service(root: Path) -> None:
    rig.run(rig.FAKEBIN / "systemctl", "stop", "wum.service", env=rig.fake_env(root))


def test_flash_installs_enables_verifies_and_the_agent_uploads(
        hes: rig.Hes, bundle: Path, meter: str, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    cfg = provisioned(hes, tmp_path, "DC-SSH-1", meter, root)
    try:
        r = flash(bundle, cfg, root)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["service"] == "active" and out["slot"] == "a" and out["version"] == "0.1.0"
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert out["verified"] == len(manifest["files"]) + 1 + len(list(cfg.iterdir()))
        # the layout: slot a whole, the launcher, owner-only config, the unit
        slots = root / "opt/wum/slots"
        assert json.loads((slots / "boot.json").read_text())["active"] == "a"
        assert (slots / "a/lib/agent/daemon.py").is_file()
        assert (root / "opt/wum/boot/wum-boot").stat().st_mode & stat.S_IXUSR
        conf = root / "etc/wum"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in conf.iterdir()} == {
            p.name: 0o600 for p in cfg.iterdir()}
        unit = (root / "etc/systemd/system/wum.service").read_text()
        assert "ExecStart=%s %s/opt/wum/boot/wum-boot --slots %s/opt/wum/slots -- run " \
               "--config %s/etc/wum/agent.toml" % (rig.BIN / "python", root, root, root) in unit
        assert load(conf / "agent.toml").concentrator_id == "DC-SSH-1"
        calls = (root / "ssh.log").read_text()
        assert "systemctl enable wum.service" in calls and "systemctl restart" in calls
        # the service runs the launcher, which runs the agent from slot a: it uploads
        deadline = time.monotonic() + 60
        while True:
            conc = {c["device"]: c for c in hes.get("/v1/concentrators", "viewer").json()}
            if conc.get("DC-SSH-1", {}).get("batches"):
                break
            assert time.monotonic() < deadline, (root / "var/log/wum.service.log").read_text()
            time.sleep(0.5)
        log = (root / "var/log/wum.service.log").read_text()
        assert "wum-boot: booting slot a (version 0.1.0)" in log
    finally:
        stop_service(root)
    assert rig.run(rig.FAKEBIN / "systemctl", "is-active", "wum.service",
                   env=rig.fake_env(root)).stdout.strip() == "inactive"


@pytest.mark.parametrize("damage", ["tamper", "target"])
def test_flash_refuses_a_bundle_that_does_not_verify(
        bundle: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    if damage == "tamper":
        (bad / "wum.service").write_text((bad / "wum.service").read_text() + "# extra\n")
        want = "wum.service does not match its manifest hash"
    else:
        m = json.loads((bad / "manifest.json").read_text())
        m["target"] = "micropython"
        (bad / "manifest.json").write_text(json.dumps(m))
        want = "a micropython bundle, not one for linux"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "agent.toml").write_text("")
    root = tmp_path / "rootfs"
    root.mkdir()
    r = flash(bad, cfg, root)
    assert r.returncode == 1 and "refused" in r.stderr and want in r.stderr, r.stderr
    assert not (root / "ssh.log").exists()          # nothing left this machine
