"""``wum provision`` against a real ``hes-lite serve``: the device's own root
key registered through the admin route (audited), the HES's command key
fetched through the API, owner-only files, keys never printed unless
asked; a non-admin or unknown token, or a device registered already, is
refused clearly and leaves nothing behind; a district shares one mesh key."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load
from hes_lite.store import fingerprint
from tests import update_rig as rig


@pytest.fixture(scope="module")
def hes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.Hes]:
    h = rig.Hes(tmp_path_factory.mktemp("hes"))
    yield h
    h.stop()


def provision(hes: rig.Hes, out: Path, device: str, *extra: object, role: str = "admin",
              token: str | None = None) -> tuple[int, str, str]:
    r = rig.run(rig.BIN / "wum", "provision", "--device-id", device, "--hes", hes.url,
                "--token", token or hes.tokens[role], "--out", out, *extra)
    return r.returncode, r.stdout, r.stderr


def test_provision_registers_the_device_and_writes_owner_only_config(
        hes: rig.Hes, tmp_path: Path) -> None:
    release = "5e" * 32
    out = tmp_path / "dev1"
    rc, stdout, stderr = provision(hes, out, "DC-PROV-1", "--board", "sim", "--meter",
                                   "modbus:3:generic", "--meter", "dlms:1",
                                   "--release-key", release, "--mesh-key-file",
                                   tmp_path / "district" / "mesh.key")
    assert rc == 0, stderr
    summary = json.loads(stdout)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        n: 0o600 for n in ("agent.toml", "device.key", "device.json", "identity.json",
                           "mesh.key")}
    root = bytes.fromhex((out / "device.key").read_text())
    mesh = (out / "mesh.key").read_text().strip()
    for secret in (root.hex(), mesh):                 # never printed
        assert secret not in stdout and secret not in stderr
    # registered at the HES under the device's own key, by the admin token, audited
    store = hes.store()
    keys = store.keys("DC-PROV-1")
    assert [(k.epoch, k.root_key) for k in keys] == [(0, root)]
    assert summary["fingerprint"] == fingerprint(root)
    audit = [e for e in store.audit_log() if e.action == "device.register"]
    assert audit[-1].actor == "token:admin" and audit[-1].target == "DC-PROV-1" and \
        audit[-1].outcome == "ok" and root.hex() not in json.dumps(audit[-1].as_dict())
    command_key = store.command_key()
    assert command_key is not None
    # the Linux config loads as the agent reads it
    cfg = load(out / "agent.toml")
    assert cfg.concentrator_id == "DC-PROV-1" and bytes.fromhex(cfg.key_hex) == root
    assert cfg.url == hes.url and cfg.commands.verify_keys == (command_key.public,)
    assert cfg.update is not None and cfg.update.release_keys == (bytes.fromhex(release),)
    assert [(m.protocol, m.address, m.profile) for m in cfg.buses[0].meters] == [
        ("modbus", "3", "generic"), ("dlms", "1", "")]
    # the board's form
    board = json.loads((out / "device.json").read_text())
    assert board["device_id"] == "DC-PROV-1" and board["root_key"] == root.hex()
    assert board["verify_keys"] == [command_key.public.hex()] and board["release_keys"] == [
        release] and board["mesh_key"] == mesh
    assert board["bus"] == {"uart": 1, "baud": 9600, "de": 4}     # firmware/boards/sim.json
    # --show-keys prints them
    rc, stdout, _ = provision(hes, tmp_path / "dev2", "DC-PROV-2", "--show-keys",
                              "--mesh-key-file", tmp_path / "district" / "mesh.key")
    shown = json.loads(stdout)
    assert rc == 0 and shown["root_key"] == (tmp_path / "dev2" / "device.key").read_text(
    ).strip() and shown["mesh_key_hex"] == mesh      # the district's key, read, not new
    assert json.loads((tmp_path / "dev2" / "identity.json").read_text())["mesh_key"] == "read"
    assert summary["mesh_key"] == "created"
    assert stat.S_IMODE((tmp_path / "district" / "mesh.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("role, token, want", [
    ("viewer", None, "the token is not an admin token"),
    ("operator", None, "the token is not an admin token"),
    ("admin", "wumhes_" + "x" * 43, "the HES does not accept this token"),
])
def test_a_non_admin_token_is_refused_and_nothing_is_left(
        hes: rig.Hes, tmp_path: Path, role: str, token: str | None, want: str) -> None:
    out = tmp_path / "dev"
    device = "DC-NOPE-" + role
    rc, stdout, stderr = provision(hes, out, device, role=role, token=token)
    assert rc == 1 and want in stderr and stdout == "", stderr
    assert not out.exists() and not list(tmp_path.iterdir())      # no temporary left either
    assert hes.store().keys(device) == []


def test_a_registered_device_is_refused(hes: rig.Hes, tmp_path: Path) -> None:
    assert provision(hes, tmp_path / "a", "DC-TWICE")[0] == 0
    rc, _, stderr = provision(hes, tmp_path / "b", "DC-TWICE")
    assert rc == 1 and "DC-TWICE has a key already" in stderr, stderr
    assert not (tmp_path / "b").exists()
    rc, _, stderr = provision(hes, tmp_path / "a", "DC-OTHER")
    assert rc == 1 and "not empty: refusing to overwrite" in stderr
