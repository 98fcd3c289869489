"""Shared pieces of the provisioning, flashing and update tests: a real
``hes-lite serve`` on a free port, release keys, bundles relabelled with
another version, and packages made from them.

Relabelling: a package's version is what its bundle's manifest says, and
the installed version is what the active slot's manifest says
(docs/firmware.md). The tests build the code once and give copies of the
bundle other version labels (the code is the same; what is tested is
the update machinery), and a "failing" version whose wheel has one module
changed so the agent never reports healthy.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx

from agent import ed25519
from firmware import package_tools
from firmware.build import write_manifest
from hes_lite import auth
from hes_lite.store import open_store
from tests.mqtt_broker import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FAKEBIN = Path(__file__).resolve().parent / "fakebin"


class Hes:
    """``hes-lite serve`` on 127.0.0.1:<free port> with an admin, an operator
    and a viewer token."""

    def __init__(self, folder: Path) -> None:
        self.db = str(folder / "hes.db")
        s = open_store(self.db)
        self.tokens = {r: auth.create(s, r, r, time.time()) for r in auth.ROLES}
        s.close()
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(self.db + ".log", "w+")
        self.proc = subprocess.Popen(
            [str(BIN / "hes-lite"), "serve", "--db", self.db, "--http",
             "127.0.0.1:%d" % self.port], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError("hes-lite serve did not start: " + self.log.read())
            time.sleep(0.1)

    def get(self, path: str, role: str = "admin", **kw: object) -> httpx.Response:
        return httpx.get(self.url + path, headers={"authorization": "Bearer " +
                                                   self.tokens[role]}, timeout=10, **kw)

    def post(self, path: str, role: str = "operator", **kw: object) -> httpx.Response:
        return httpx.post(self.url + path, headers={"authorization": "Bearer " +
                                                    self.tokens[role]}, timeout=10, **kw)

    def put_raw(self, path: str, body: bytes) -> httpx.Response:
        """An envelope-authenticated request (no token): what a device sends."""
        return httpx.put(self.url + path, content=body, timeout=30)

    def post_raw(self, path: str, body: bytes) -> httpx.Response:
        return httpx.post(self.url + path, content=body, timeout=30)

    def store(self):  # noqa: ANN201 - a fresh handle on the same database
        return open_store(self.db)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run(*cmd: object, timeout: float = 120, env: dict[str, str] | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=input is None,
                          timeout=timeout, cwd=ROOT, env=env, input=input)


def release_key(path: Path) -> bytes:
    """A release key file (0600) -> its public key."""
    return package_tools.keygen(path)


def relabel(bundle: Path, out: Path, version: str, wheel_patch: dict[str, str] | None = None
            ) -> Path:
    """A copy of ``bundle`` labelled ``version`` (its manifest rewritten);
    ``wheel_patch`` replaces files inside a Linux bundle's wheel."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    if wheel_patch:
        wheel = out / manifest["wheel"]
        buf = io.BytesIO()
        with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(buf, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item)
                if item.filename in wheel_patch:
                    data = wheel_patch[item.filename].encode()
                zout.writestr(item, data)
        wheel.write_bytes(buf.getvalue())
    (out / "manifest.json").unlink()
    info = {k: v for k, v in manifest.items() if k not in ("files", "total_size", "format")}
    info["version"] = version
    write_manifest(out, info)
    return out


def package(bundle: Path, out: Path, key_file: Path | None) -> Path:
    """A package of ``bundle``, signed with ``key_file`` when given."""
    package_tools.pack(bundle, out)
    if key_file is not None:
        package_tools.sign(out, package_tools.load_secret(key_file))
    return out


def foreign_sign(pkg: Path, out: Path) -> Path:
    """``pkg`` signed by a key no device trusts."""
    package_tools.sign(pkg, os.urandom(32), out)
    return out


_BUILT: dict[str, Path] = {}


def linux_bundle(folder: Path) -> Path:
    """``wum firmware build --target linux`` once per test session."""
    if "linux" in _BUILT and _BUILT["linux"].is_dir():
        return _BUILT["linux"]
    out = folder / "linux-bundle"
    r = run(BIN / "wum", "firmware", "build", "--target", "linux", "--out", out, timeout=300)
    assert r.returncode == 0, r.stderr
    _BUILT["linux"] = out
    return out


def public_hex(secret_file: Path) -> str:
    return ed25519.public_key(bytes.fromhex(secret_file.read_text().strip())).hex()


def fake_env(root: Path) -> dict[str, str]:
    """The environment for the fake ssh and systemctl (tests/fakebin)."""
    return dict(os.environ, PATH="%s:%s" % (FAKEBIN, os.environ.get("PATH", "")),
                WUM_FAKE_ROOT=str(root))
