"""``wum flash --ssh user@host``: the Linux bundle and a provisioned config
onto a concentrator, the service enabled and started, and everything
verified.

Owns the local side: verifying the bundle against its manifest before
anything leaves (a bundle that does not verify is refused), sending bundle
and config as one tar stream over ``ssh`` to a staging folder, running the
installer there from the wheel itself (``firmware.remote_install``: the
concentrator needs only ssh and Python 3), ``systemctl daemon-reload``,
``enable``, ``restart``, ``is-active``, and comparing the SHA-256 of every
installed bundle and config file with the local ones. Only the ``ssh`` and
``systemctl`` commands are external (taken from PATH). CPython only. Must
not know the agent's insides.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from firmware import FirmwareError
from firmware.flash import verify_bundle


def _tar(bundle: Path, manifest: dict[str, Any], config: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for rel in sorted(list(manifest["files"]) + ["manifest.json"]):
            t.add(bundle / rel, "bundle/" + rel, recursive=False)
        for p in sorted(config.iterdir()):
            if p.is_file():
                t.add(p, "config/" + p.name, recursive=False)
    return buf.getvalue()


class Remote:
    def __init__(self, target: str, ssh: Sequence[str], log: Callable[[str], None]) -> None:
        self.target = target
        self.ssh = list(ssh)
        self.log = log

    def run(self, command: str, stdin: bytes | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        r = subprocess.run([*self.ssh, self.target, command], input=stdin, capture_output=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise FirmwareError("on %s, `%s` failed (%d): %s" % (
                self.target, command, r.returncode,
                (r.stderr or r.stdout).decode(errors="replace").strip()[-600:]),
                target=self.target, status=r.returncode)
        return r


def _json_line(r: subprocess.CompletedProcess[bytes], what: str) -> dict[str, Any]:
    lines = r.stdout.decode(errors="replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise FirmwareError("%s printed no result: %s" % (what, r.stderr.decode(
            errors="replace")[-600:])) from None
    if not isinstance(doc, dict) or "error" in doc:
        raise FirmwareError("%s failed: %s" % (what, doc.get("error") if isinstance(doc, dict)
                                               else doc))
    return doc


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def flash_ssh(target: str, bundle: Path, config: Path, root: str = "/", python: str = "python3",
              service: str = "wum", ssh: Sequence[str] = ("ssh",),
              log: Callable[[str], None] = print, active_wait: float = 15.0,
              user: str | None = None) -> dict[str, Any]:
    manifest = verify_bundle(bundle, target="linux")
    if not (config / "agent.toml").is_file():
        raise FirmwareError("%s has no agent.toml (a provisioned config folder: wum provision)"
                            % config)
    remote = Remote(target, ssh, log)
    q = shlex.quote
    wheel = str(manifest["wheel"])
    r = remote.run('set -e; umask 077; d=$(mktemp -d /tmp/wum-flash.XXXXXX); '
                   'trap \'rm -rf "$d"\' EXIT; tar -x -C "$d"; '
                   'PYTHONPATH="$d/bundle/"%s %s -m firmware.remote_install --staging "$d" '
                   '--root %s --python %s --service %s%s' % (
                       q(wheel), q(python), q(root), q(python), q(service),
                       " --user " + q(user) if user else ""),
                   stdin=_tar(bundle, manifest, config), check=False)
    done = _json_line(r, "the installer on %s" % target)
    log("installed %s into slot %s on %s" % (done.get("version"), done.get("slot"), target))
    if done.get("warning"):
        log("warning: " + str(done["warning"]))
    unit = service + ".service"
    if root not in ("", "/"):
        remote.run("systemctl link %s" % q(str(done["unit"])))
    remote.run("systemctl daemon-reload")
    remote.run("systemctl enable %s" % q(unit))
    remote.run("systemctl restart %s" % q(unit))
    state, deadline = "", time.monotonic() + active_wait
    while time.monotonic() < deadline:
        state = remote.run("systemctl is-active %s" % q(unit), check=False).stdout.decode(
        ).strip()
        if state == "active":
            break
        time.sleep(0.5)         # polling a service manager, not protocol timing
    if state != "active":
        raise FirmwareError("%s is %s on %s after the install" % (unit, state or "unknown",
                                                                  target))
    slot_lib = "%s/opt/wum/slots/%s/lib" % (root.rstrip("/"), done["slot"])
    seen = _json_line(remote.run("PYTHONPATH=%s %s -m firmware.remote_install --verify "
                                 "--root %s" % (q(slot_lib), q(python), q(root)), check=False),
                      "verifying on %s" % target)
    bad = [rel for rel in list(manifest["files"]) + ["manifest.json"]
           if seen["files"].get(rel) != _sha(bundle / rel)]
    bad += ["config/" + p.name for p in config.iterdir()
            if p.is_file() and seen["config"].get(p.name) != _sha(p)]
    if seen.get("problem") or bad or seen.get("slot") != done["slot"]:
        raise FirmwareError("verification on %s failed: %s" % (
            target, seen.get("problem") or "hash differs: " + ", ".join(sorted(bad))))
    log("%s active on %s; %d bundle and %d config files verified by SHA-256" % (
        unit, target, len(manifest["files"]) + 1, len(seen["config"])))
    return {"target": target, "slot": done["slot"], "version": done.get("version"),
            "unit": done["unit"], "service": state, "owner": done.get("owner"),
            "verified": len(manifest["files"]) + 1 + len(seen["config"])}
