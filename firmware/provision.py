"""``wum provision``: a device's own identity and keys, registered at the
HES, and its configuration written for a Linux concentrator and a board.

Owns: generating the device's 256-bit root key (``os.urandom``: one per
device, never a fleet key), registering it through the HES API (``POST
/v1/devices``, an admin token), fetching the HES's public command key
(``GET /v1/command-key``), the district's mesh network key (read from
``--mesh-key-file``, or created there for the district's first device),
and the config folder: ``agent.toml`` + ``device.key`` (Linux), and
``device.json`` (a board's config form, docs/firmware.md), ``identity.json``
and ``mesh.key``. Every file is owner-only (0600) in an owner-only folder
(0700), written under a temporary name and renamed into place only once
the HES has registered the key, so a refused registration leaves nothing
behind and a registered key is never lost. Keys are never printed unless
``show_keys``. CPython only. Must not know HES internals (its HTTP API only).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware import FirmwareError
from firmware.build import load_board

AGENT_TOML = "agent.toml"
DEVICE_JSON = "device.json"
MESH_KEY = "mesh.key"
DEVICE_KEY = "device.key"


class ProvisionRefused(FirmwareError):
    """The HES refused (``status``), or the request could not be made."""


def _call(hes: str, token: str, method: str, path: str, doc: Any = None,
          timeout: float = 30.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        hes.rstrip("/") + path, method=method,
        data=None if doc is None else json.dumps(doc).encode(),
        headers={"authorization": "Bearer " + token, "content-type": "application/json",
                 "accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        return e.code, body
    except (OSError, ValueError) as e:
        raise ProvisionRefused("cannot reach the HES at %s: %s" % (hes, e), status=0) from None


def _refusal(status: int, body: Any, what: str) -> ProvisionRefused:
    if status == 401:
        msg = "the HES does not accept this token (unknown or revoked)"
    elif status == 403:
        msg = ("the token is not an admin token: %s needs the role %s"
               % (what, (body or {}).get("need", "admin")))
    elif status == 409:
        msg = "%s (revoke its key first: hes-lite keys revoke, or rotate it)" % (
            (body or {}).get("detail") or "the device is registered already")
    else:
        msg = "HES answered %d %s" % (status, json.dumps(body))
    return ProvisionRefused("%s refused: %s" % (what, msg), status=status)


def district_key(path: Path | None) -> tuple[bytes | None, str]:
    """The mesh network key of ``path`` (a district's), created there when
    absent -> (key, "read"|"created"|"none")."""
    if path is None:
        return None, "none"
    try:
        key = bytes.fromhex(path.read_text().strip())
        if len(key) != 32:
            raise FirmwareError("%s is not a mesh network key (64 hex digits)" % path)
        return key, "read"
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise FirmwareError("cannot read the mesh key %s: %s" % (path, e)) from None
    key = os.urandom(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key, "created"


def _q(s: str) -> str:
    return json.dumps(s)            # a TOML basic string (JSON's escapes are TOML's)


def agent_toml(device: str, url: str, archive: str, command_key: str, release: list[str],
               port: str, baud: int, meters: list[dict[str, Any]], mesh: bool) -> str:
    lines = ["# wum agent configuration of %s, written by `wum provision` %s" % (
        device, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "[concentrator]", "id = %s" % _q(device), "archive = %s" % _q(archive), "",
        "[uplink]", 'transport = "http"', "url = %s" % _q(url),
        'key_file = "%s"        # this device\'s root key: owner-only, never shared' % DEVICE_KEY,
        "", "[commands]", "verify_key = %s   # the HES's command key" % _q(command_key), "",
        "[update]", "release_key = [%s]" % ", ".join(_q(k) for k in release), ""]
    if mesh:
        lines += ["# The district's mesh network key (docs/mesh.md), for [mesh]:",
                  '# network_key_file = "%s"' % MESH_KEY, ""]
    lines += ["[[bus]]", 'name = "bus1"', "port = %s" % _q(port), "baud = %d" % baud]
    if not meters:
        lines.append("discover = true")
    for m in meters:
        lines += ["", "[[bus.meter]]", "address = %s" % _q(str(m["address"])),
                  "protocol = %s" % _q(m["protocol"])]
        if m.get("profile"):
            lines.append("profile = %s" % _q(m["profile"]))
    return "\n".join(lines) + "\n"


def parse_meter(text: str) -> dict[str, Any]:
    """``PROTOCOL:ADDRESS[:PROFILE]`` -> a meter entry."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("dlms", "iec62056-21", "modbus") or \
            not parts[1]:
        raise FirmwareError("a meter is PROTOCOL:ADDRESS[:PROFILE] (dlms, iec62056-21, "
                            "modbus), got %r" % text)
    m: dict[str, Any] = {"protocol": parts[0],
                         "address": int(parts[1]) if parts[1].isdigit() else parts[1]}
    if len(parts) == 3:
        m["profile"] = parts[2]
    return m


def _write(folder: Path, name: str, text: str) -> None:
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _check(device: str, out: Path, release_keys: Sequence[str]) -> list[str]:
    """The arguments checked before anything is asked of the HES -> release keys."""
    if not 1 <= len(device.encode()) <= 64 or not device.isprintable() or any(
            c.isspace() or c == "/" for c in device):
        raise FirmwareError("a device id is 1..64 printable characters without spaces or '/'")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FirmwareError("%s exists and is not empty: refusing to overwrite a provisioned "
                            "device's keys" % out)
    release = []
    for k in release_keys:
        try:
            if len(bytes.fromhex(k)) != 32:
                raise ValueError
        except ValueError:
            raise FirmwareError("a release key is 64 hex digits, got %r" % k[:80]) from None
        release.append(k.lower())
    return release


def provision(device: str, hes: str, token: str, out: Path, *, board: str | None = None,
              meters: Sequence[str] = (), release_keys: Sequence[str] = (),
              mesh_key_file: Path | None = None, uplink_url: str | None = None,
              archive: str = "/var/lib/wum/archive.db", port: str = "/dev/ttyUSB0",
              baud: int = 9600, show_keys: bool = False) -> dict[str, Any]:
    release = _check(device, out, release_keys)
    bus = load_board(board).get("bus", {}) if board else {}
    entries = [parse_meter(m) for m in meters]
    status, ck = _call(hes, token, "GET", "/v1/command-key")
    if status != 200 or not isinstance(ck, dict) or not isinstance(ck.get("public"), str):
        raise _refusal(status, ck, "reading the HES's command key")
    mesh, mesh_state = district_key(mesh_key_file)
    root = os.urandom(32)
    url = uplink_url or hes
    tmp = out.with_name(".%s.provisioning-%d" % (out.name, os.getpid()))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700, parents=True)
    try:
        files = {DEVICE_KEY: root.hex() + "\n",
                 AGENT_TOML: agent_toml(device, url, archive, ck["public"], release, port, baud,
                                        entries, mesh is not None),
                 DEVICE_JSON: json.dumps({
                     "device_id": device, "root_key": root.hex(), "key_epoch": 0,
                     "verify_keys": [ck["public"]], "release_keys": release,
                     "mesh_key": mesh.hex() if mesh else None, "bus": bus, "meters": entries,
                     "archive": {"kb": 64, "sector": 4096},
                     "uplink": {"kind": "http", "url": url}}, indent=1) + "\n"}
        if mesh is not None:
            files[MESH_KEY] = mesh.hex() + "\n"
        for name, text in files.items():
            _write(tmp, name, text)
        status, reg = _call(hes, token, "POST", "/v1/devices",
                            {"device": device, "root_key": root.hex()})
        if status != 201 or not isinstance(reg, dict):
            raise _refusal(status, reg, "registering %s" % device)
        ident = {"device": device, "fingerprint": reg.get("fingerprint"), "hes": hes,
                 "command_key_id": ck.get("key_id"), "board": board,
                 "release_key_ids": [_kid(k) for k in release],
                 "mesh_key": mesh_state if mesh is not None else None,
                 "provisioned": int(time.time())}
        _write(tmp, "identity.json", json.dumps(ident, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = dict(ident, out=str(out), files=sorted(p.name for p in out.iterdir()),
                   mesh_key_file=str(mesh_key_file) if mesh_key_file else None)
    if show_keys:
        summary["root_key"] = root.hex()
        summary["mesh_key_hex"] = mesh.hex() if mesh else None
    return summary


def _kid(public_hex: str) -> str:
    from agent.update_package import key_id
    return key_id(bytes.fromhex(public_hex))
