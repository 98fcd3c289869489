"""A real Mosquitto broker for tests and bench scripts.

Starts ``mosquitto`` on a free loopback port with a generated config in a
temporary directory, waits until it accepts connections, and kills it.
``kill()`` is ``kill -9`` (a crash: in-memory messages are lost);
``restart()`` starts it again on the same port. Installs nothing: ``make
test`` gets mosquitto through scripts/sysdeps.sh; without it the pytest
fixture skips with the reason.

    with MosquittoBroker() as broker:
        url = broker.url          # "mqtt://127.0.0.1:<port>"

In pytest: wrap ``running_broker()`` in a fixture (see its docstring). From a bench script: put the repository root on
``sys.path`` and ``from tests.mqtt_broker import MosquittoBroker``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous {anonymous}
persistence false
set_tcp_nodelay true
log_dest file {log}
log_type error
log_type warning
log_type notice
"""


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerError(RuntimeError):
    pass


class MosquittoBroker:
    """``tls=(certfile, keyfile)`` makes the listener TLS-only (``mqtts``);
    ``users={name: password}`` turns anonymous access off."""

    def __init__(self, port: int | None = None, tls: tuple[str, str] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.binary = mosquitto_binary()
        self.port = port or free_port()
        self.tls = tls
        self.users = users
        self.dir = ""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("mqtts" if self.tls else "mqtt", self.port)

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        if not self.dir:
            self.dir = tempfile.mkdtemp(prefix="wum-mosquitto-")
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(port=self.port, log=os.path.join(self.dir, "mosquitto.log"),
                                  anonymous="false" if self.users else "true"))
            if self.tls:
                f.write("certfile %s\nkeyfile %s\n" % self._readable_tls())
            if self.users:
                f.write("password_file %s\n" % self._password_file())
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen([self.binary, "-c", conf], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if self._wait_ready(deadline):
                return self
            self._reap()
            if time.monotonic() >= deadline:   # e.g. the port is still held
                raise BrokerError("mosquitto did not start on port %d: %s" % (
                    self.port, self.log_tail()))
            time.sleep(0.2)

    def _readable_tls(self) -> tuple[str, str]:
        """Copies of the cert and key that the broker can read after it drops
        root privileges to the ``mosquitto`` user (a temp dir is 0700)."""
        assert self.tls is not None
        os.chmod(self.dir, 0o755)
        out = []
        for src, name in zip(self.tls, ("server-cert.pem", "server-key.pem"), strict=True):
            dst = os.path.join(self.dir, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
            out.append(dst)
        return out[0], out[1]

    def _password_file(self) -> str:
        assert self.users is not None
        os.chmod(self.dir, 0o755)
        path = os.path.join(self.dir, "passwd")
        open(path, "w").close()
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for name, password in self.users.items():
            subprocess.run([tool, "-b", path, name, password], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(path, 0o644)
        return path

    def _wait_ready(self, deadline: float) -> bool:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """``kill -9``: the broker dies with whatever it held in memory."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._reap()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(os.path.join(self.dir, "mosquitto.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_cert(directory: str, ip: str = "127.0.0.1") -> tuple[str, str]:
    """A self-signed certificate for ``ip`` (IP SAN) and its key, as PEM files
    in ``directory``: ``(cert_path, key_path)``. The cert is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wum test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def running_broker():
    """Generator for a pytest fixture: a broker for one test, skipped (with
    the reason) when mosquitto is missing. In a test module::

        @pytest.fixture
        def mosquitto():
            yield from running_broker()
    """
    if mosquitto_binary() is None:
        import pytest

        if os.environ.get("CI"):
            # CI installs it (make test -> scripts/sysdeps.sh): missing is a failure.
            pytest.fail("mosquitto not installed in CI: scripts/sysdeps.sh should have")
        pytest.skip("mosquitto not installed (make sysdeps / apt-get install mosquitto)")
    broker = MosquittoBroker().start()
    try:
        yield broker
    finally:
        broker.stop()
