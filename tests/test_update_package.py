"""The update package format and the utility's tools: keygen, package, sign,
inspect; the checks a device makes (signature by a trusted release key,
target, board, version, payload); any bytes give a Header or the typed
error (Hypothesis), and any single altered byte of a signed package is
refused."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import update_package as pkg
from firmware import FirmwareError, package_tools
from firmware.build import write_manifest
from tests import update_rig as rig


def small_bundle(folder: Path, version: str = "1.2.0", target: str = "micropython",
                 board: str = "sim") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text("import firmware.board\n")
    (folder / "firmware").mkdir(exist_ok=True)
    (folder / "firmware" / "loop.mpy").write_bytes(os.urandom(700))
    write_manifest(folder, {"target": target, "board": board, "version": version})
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("keys") / "release.key"
    return path, package_tools.keygen(path)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, bytes]) -> bytes:
    d = tmp_path_factory.mktemp("signed")
    return rig.package(small_bundle(d / "b"), d / "p.wup", keys[0]).read_bytes()


def test_keygen_is_owner_only_and_never_overwrites(tmp_path: Path) -> None:
    r = rig.run(rig.BIN / "wum", "firmware", "keygen", "--out", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    secret = (tmp_path / "k").read_text().strip()
    assert secret not in r.stdout and out["key_id"] == pkg.key_id(bytes.fromhex(out["public"]))
    r = rig.run(rig.BIN / "wum", "firmware", "keygen", "--out", tmp_path / "k")
    assert r.returncode == 1 and "never overwritten" in r.stderr
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(FirmwareError, match="readable by others"):
        package_tools.load_secret(tmp_path / "k")


def test_package_sign_inspect_round_trip(tmp_path: Path, keys: tuple[Path, bytes]) -> None:
    b = small_bundle(tmp_path / "b")
    p = tmp_path / "p.wup"
    r = rig.run(rig.BIN / "wum", "firmware", "package", "--bundle", b, "--out", p)
    assert r.returncode == 0 and json.loads(r.stdout)["signed"] is False, r.stderr
    r = rig.run(rig.BIN / "wum", "firmware", "inspect", p, "--release-key", keys[1].hex())
    assert r.returncode == 3 and "unsigned" in json.loads(r.stdout)["refused"]
    r = rig.run(rig.BIN / "wum", "firmware", "sign", "--key", keys[0], p)
    assert r.returncode == 0, r.stderr
    digest = json.loads(r.stdout)["sha256"]
    r = rig.run(rig.BIN / "wum", "firmware", "inspect", p, "--release-key", keys[1].hex())
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["verified"] and doc["sha256"] == digest
    assert (doc["version"], doc["target"], doc["board"], doc["files"]) == ("1.2.0",
                                                                         "micropython", "sim", 3)
    h = pkg.verify_file(str(p), [keys[1]], "micropython", "sim", "1.1.9", digest, p.stat().st_size)
    assert h.key_id == pkg.key_id(keys[1]) and [f[0] for f in h.files] == [
        "firmware/loop.mpy", "main.py", "manifest.json"]


def test_package_refuses_a_bundle_that_does_not_verify(tmp_path: Path) -> None:
    b = small_bundle(tmp_path / "b")
    (b / "main.py").write_text("altered\n")
    r = rig.run(rig.BIN / "wum", "firmware", "package", "--bundle", b, "--out", tmp_path / "p")
    assert r.returncode == 1 and "main.py does not match its manifest hash" in r.stderr
    b2 = small_bundle(tmp_path / "b2", version="1.2.0-rc1")
    with pytest.raises(FirmwareError, match="dotted integers"):
        package_tools.pack(b2, tmp_path / "p2")


@pytest.mark.parametrize("installed, target, board, reason", [
    ("1.2.0", "micropython", "sim", "downgrade"),       # a reinstall is refused too
    ("1.10.0", "micropython", "sim", "downgrade"),      # versions compare as numbers
    ("1.1.99", "linux", None, "wrong_target"),
    ("1.1.99", "micropython", "esp32-rs485", "wrong_board"),
])
def test_fit_checks(signed: bytes, keys: tuple[Path, bytes], tmp_path: Path, installed: str,
                    target: str, board: str | None, reason: str) -> None:
    (tmp_path / "p").write_bytes(signed)
    with pytest.raises(pkg.UpdateRefused) as e:
        pkg.verify_file(str(tmp_path / "p"), [keys[1]], target, board, installed)
    assert e.value.fields["reason"] == reason


def test_signature_checks(signed: bytes, keys: tuple[Path, bytes], tmp_path: Path) -> None:
    p = tmp_path / "p"
    p.write_bytes(signed)
    for trusted, revoked, reason in (([os.urandom(32)], (), "foreign_key"),
                                     ([keys[1]], (pkg.key_id(keys[1]),), "revoked_key"),
                                     ([], (), "foreign_key")):
        with pytest.raises(pkg.UpdateRefused) as e:
            pkg.verify_file(str(p), trusted, "micropython", "sim", "1.0.0", revoked=revoked)
        assert e.value.fields["reason"] == reason
    with pytest.raises(pkg.UpdateRefused) as e:
        pkg.verify_file(str(p), [keys[1]], "micropython", "sim", "1.0.0", "0" * 64)
    assert e.value.fields["reason"] == "corrupt_download"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_any_bytes_give_a_header_or_the_typed_error(data: bytes) -> None:
    for blob in (data, pkg.MAGIC + data, pkg.MAGIC + len(data).to_bytes(4, "big") + data):
        try:
            pkg.read_head(io.BytesIO(blob))
        except pkg.PackageError as e:
            assert e.fields["reason"] == "malformed"


@settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(where=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_altered_byte_is_refused(signed: bytes, keys: tuple[Path, bytes], tmp_path: Path,
                                     where: int, flip: int) -> None:
    data = bytearray(signed)
    data[where % len(data)] ^= flip
    p = tmp_path / "altered"
    p.write_bytes(bytes(data))
    with pytest.raises((pkg.UpdateRefused, pkg.PackageError)):
        pkg.verify_file(str(p), [keys[1]], "micropython", "sim", "1.0.0")


@given(a=st.lists(st.integers(0, 30), min_size=1, max_size=4),
       b=st.lists(st.integers(0, 30), min_size=1, max_size=4))
def test_version_order_is_numeric(a: list[int], b: list[int]) -> None:
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    pad = max(len(a), len(b))
    want = a + [0] * (pad - len(a)) > b + [0] * (pad - len(b))
    assert pkg.newer(va, vb) == want
