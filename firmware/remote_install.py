"""The concentrator's half of ``wum flash --ssh``: run there, from the wheel
being installed (``PYTHONPATH=<wheel> python3 -m firmware.remote_install``),
on a staging folder holding ``bundle/`` and ``config/``.

Owns the Linux layout (docs/firmware.md, "A concentrator's filesystem"),
all under ``--root`` (``/`` normally; another folder for a staged image or a
test)::

    opt/wum/slots/{a,b}/      A/B slots (agent.slots), boot.json
    opt/wum/boot/             the launcher and the few modules it needs; wum-boot
    etc/wum/                  the provisioned config (0700; files 0600)
    var/lib/wum/              the agent's data (archive, downloads)
    etc/systemd/system/wum.service

Install: verify the staged bundle against its manifest, install it into a
slot and make that slot active (a field flash is authoritative: no trial),
install the launcher, the config and the unit. ``--verify``: the active
slot's files and the config files with their SHA-256 (the local side
compares them with what it sent). Prints one JSON line. CPython, standard
library only. Must not know ssh or systemctl (the local side runs those).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

from agent import AgentError
from agent.slots import Slots
from agent.update_linux import bundle_entries, install, verify_slot
from firmware import FirmwareError
from firmware.flash import verify_bundle

BOOT_MODULES = ("agent/__init__.py", "agent/slots.py", "agent/update_linux.py",
                "agent/update_package.py", "agent/ed25519.py", "firmware/__init__.py",
                "firmware/launcher.py")
BOOT_SCRIPT = """#!/usr/bin/env python3
# wum-boot: boots the active A/B slot of the wum agent and watches a new version
# on trial (firmware/launcher.py). Installed by `wum flash --ssh`; updates never
# replace it.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from firmware.launcher import main  # noqa: E402

sys.exit(main())
"""


class Layout:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.slots = self.root / "opt/wum/slots"
        self.boot = self.root / "opt/wum/boot"
        self.config = self.root / "etc/wum"
        self.data = self.root / "var/lib/wum"
        self.units = self.root / "etc/systemd/system"


def _replace_dir(new: Path, dest: Path) -> None:
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def _atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install_boot(lay: Layout, wheel: Path) -> None:
    new = lay.boot.with_name("boot.new")
    shutil.rmtree(new, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        for rel in BOOT_MODULES:
            dest = new / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(rel))
    script = new / "wum-boot"
    script.write_text(BOOT_SCRIPT)
    script.chmod(0o755)
    _replace_dir(new, lay.boot)


def install_config(lay: Layout, src: Path) -> list[str]:
    lay.config.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(lay.config, 0o700)
    names = []
    for p in sorted(src.iterdir()):
        if p.is_file():
            _atomic(lay.config / p.name, p.read_bytes(), 0o600)
            names.append(p.name)
    return names


def render_unit(template: str, lay: Layout, python: str, user: str | None = None) -> str:
    """The bundle's unit with the launcher as ExecStart, this layout's paths
    and (given) the service's user."""
    out = []
    for line in template.splitlines():
        if line.startswith("User=") and user:
            line = "User=" + user
        elif line.startswith("ExecStart="):
            line = ("ExecStart=%s %s/wum-boot --slots %s -- run --config %s/agent.toml "
                    "--log-json" % (python, lay.boot, lay.slots, lay.config))
        elif line.startswith("ReadWritePaths="):
            line = "ReadWritePaths=%s %s" % (lay.data, lay.slots)
        out.append(line)
    return "\n".join(out) + "\n"


def unit_user(unit: str) -> str | None:
    for line in unit.splitlines():
        if line.startswith("User="):
            return line[5:].strip() or None
    return None


def give_to(user: str | None, paths: list[Path]) -> tuple[str | None, str | None]:
    """The service's user gets what it reads and writes (its config, the
    slots an update rewrites, its data): -> (owner, warning)."""
    if user is None:
        return None, None
    try:
        import pwd
        pw = pwd.getpwnam(user)
    except (ImportError, KeyError):
        return None, ("user %s does not exist here: create it (useradd --system %s) or flash "
                      "with --user; the files stay root's and the service cannot start" %
                      (user, user))
    if os.geteuid() != 0:
        return None, "not root: the files stay %s's" % os.getuid()
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.chown(name, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    return user, None


def run_install(staging: Path, root: str, python: str, service: str,
                user: str | None = None) -> dict[str, object]:
    lay = Layout(root)
    bundle = staging / "bundle"
    manifest = verify_bundle(bundle, target="linux")
    slots = Slots(str(lay.slots))
    lay.slots.mkdir(parents=True, exist_ok=True)
    st = slots.state()
    if st["trial"]:                 # a field flash overrides an update on trial
        st.update(trial=None, previous=None)
        slots.save(st)
    slot = install(slots, bundle_entries(bundle, manifest))
    slots.switch(slot)
    install_boot(lay, bundle / str(manifest["wheel"]))
    names = install_config(lay, staging / "config")
    lay.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    lay.units.mkdir(parents=True, exist_ok=True)
    unit = lay.units / (service + ".service")
    text = render_unit((bundle / str(manifest["unit"])).read_text(), lay, python, user)
    _atomic(unit, text.encode(), 0o644)
    owner, warning = give_to(unit_user(text), [lay.config, lay.slots, lay.data])
    return {"slot": slot, "version": manifest.get("version"), "root": str(lay.root),
            "unit": str(unit), "config": names, "owner": owner, "warning": warning}


def run_verify(root: str) -> dict[str, object]:
    lay = Layout(root)
    slots = Slots(str(lay.slots))
    slot = slots.state()["active"]
    folder = lay.slots / slot
    try:
        files = json.loads((folder / "installed.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        files = {}
    config = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted(lay.config.iterdir()) if p.is_file()} if lay.config.is_dir() else {}
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in lay.config.iterdir()} \
        if lay.config.is_dir() else {}
    return {"slot": slot, "version": slots.version(slot), "problem": verify_slot(folder),
            "files": files, "config": config, "config_modes": modes,
            "config_dir_mode": oct(lay.config.stat().st_mode & 0o777)
            if lay.config.is_dir() else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware.remote_install")
    p.add_argument("--staging", type=Path, help="folder with bundle/ and config/")
    p.add_argument("--root", default="/")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--service", default="wum")
    p.add_argument("--user", default=None, help="the service's user (default: the unit's)")
    p.add_argument("--verify", action="store_true")
    a = p.parse_args(argv)
    try:
        out = run_verify(a.root) if a.verify else run_install(a.staging, a.root, a.python,
                                                              a.service, a.user)
    except (FirmwareError, AgentError, OSError) as e:
        print(json.dumps({"error": str(e)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
