"""``hes-lite serve`` as a real process: it listens on loopback unless told
otherwise, serves TLS itself with --tls-cert/--tls-key, and the API answers
only a valid bearer token over the wire."""

import datetime
import os
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hes_lite import auth
from hes_lite.store import open_store
from tests.mqtt_broker import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def serve(db, *extra):
    log = open(db + ".log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "hes_lite.cli", "serve", "--db", db, *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, log


def listening(port):
    """Local addresses (hex, as /proc/net/tcp shows them) listening on ``port``."""
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            addr, p = f[1].rsplit(":", 1)
            if int(p, 16) == port and f[3] == "0A":  # LISTEN
                out.add(addr)
    return out


def wait(proc, log, fn, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (httpx.TransportError, AssertionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("server did not come up: " + log.read()) from None
            time.sleep(0.1)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_binds_loopback_unless_told(tmp_path):
    db = str(tmp_path / "hes.db")
    port = free_port()
    proc, log = serve(db, "--http", f":{port}")
    try:
        def up():
            assert listening(port)
            return listening(port)
        assert wait(proc, log, up) == {"0100007F"}   # 127.0.0.1 only
    finally:
        stop(proc)


def test_tls_served_and_tokens_required(tmp_path):
    cert, key = self_signed(tmp_path)
    db = str(tmp_path / "hes.db")
    s = open_store(db)
    token = auth.create(s, "reader", "viewer", 0.0)
    s.close()
    port = free_port()
    proc, log = serve(db, "--http", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key)
    base = f"https://localhost:{port}"
    try:
        with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=cert),
                          timeout=5) as c:
            assert wait(proc, log, lambda: c.get("/v1/health")).json()["status"] == "ok"
            r = c.get("/v1/meters")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert c.get("/v1/meters", headers={"authorization": "Bearer " + token}).json() == []
        with pytest.raises(httpx.TransportError):   # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=3)
    finally:
        stop(proc)
    assert serve(db, "--tls-cert", cert)[0].wait(20) == 2  # a certificate needs its key
