"""``wum flash --ssh``: the helpers the Linux tests share, and a bundle
that does not verify refused before anything leaves this machine. The
install itself — provision -> build -> flash -> the service runs the agent
from an A/B slot and it uploads to the real ``hes-lite serve`` — is the
first test of tests/test_update_linux.py, whose concentrator the update
tests then use (one flash for both).

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
import subprocess
from pathlib import Path

import pytest

from tests import update_rig as rig


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rig.linux_bundle(tmp_path_factory.mktemp("bundle"))


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
