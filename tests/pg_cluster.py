"""A PostgreSQL cluster of its own for tests and bench scripts.

``initdb`` + ``pg_ctl`` in a temporary directory, listening on a free
loopback port, trust authentication for the superuser ``postgres``. When the
tests run as root (CI, fresh Debian machines) the server runs as ``nobody``
(initdb and postgres refuse root): the data directory is handed to that
user and the binaries are started through ``subprocess``'s ``user=``.
Installs nothing: ``make test`` gets Debian's ``postgresql`` through
scripts/sysdeps.sh; without it the pytest fixtures skip with the reason.

    with PgCluster() as pg:
        url = pg.create_database("hes")   # postgresql://postgres@127.0.0.1:<port>/hes

``fsync=False`` (the tests' default) runs the server without fsync: nothing
in the tests crashes the server itself, and the disk is shared. Bench
scripts keep fsync on (``PgCluster(fsync=True)``) so that a commit costs what
it costs. ``settings`` adds ``postgresql.conf`` lines.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

BASE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "100",
    "shared_buffers": "'128MB'",
    "max_wal_size": "'2GB'",
    "checkpoint_timeout": "'15min'",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "jit": "off",
}


def pg_bindir() -> str | None:
    """The newest /usr/lib/postgresql/<v>/bin, or the directory of an
    ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("initdb")
    return os.path.dirname(on_path) if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgError(RuntimeError):
    pass


class PgCluster:
    def __init__(self, fsync: bool = False, settings: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.bindir = pg_bindir()
        self.port = port or free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.dir = ""
        self.user: str | None = "nobody" if os.geteuid() == 0 else None
        self._made: int = 0

    # -- urls ----------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, database)

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")

    # -- lifecycle -------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> None:
        kw: dict[str, Any] = {"user": self.user} if self.user else {}
        out = subprocess.run([os.path.join(self.bindir or "", args[0]), *args[1:]],
                             capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                             **kw)
        if check and out.returncode != 0:
            raise PgError("%s failed: %s%s" % (args[0], out.stdout[-2000:], out.stderr[-2000:]))

    def start(self, timeout: float = 30.0) -> PgCluster:
        if self.bindir is None:
            raise PgError("PostgreSQL is not installed (apt-get install postgresql)")
        if not self.dir:
            # as root the server runs as nobody, who must reach the directory:
            # /tmp rather than a $TMPDIR that may sit in root's home
            where = "/tmp" if self.user and os.path.isdir("/tmp") else None
            self.dir = tempfile.mkdtemp(prefix="wum-pg-", dir=where)
            os.chmod(self.dir, 0o700)
            if self.user:
                pw = pwd.getpwnam(self.user)
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync", "--no-instructions")
            conf = dict(BASE_SETTINGS, port=str(self.port),
                        unix_socket_directories="'%s'" % self.dir,
                        fsync="on" if self.fsync else "off",
                        full_page_writes="on" if self.fsync else "off",
                        synchronous_commit="on")
            conf.update(self.settings)
            with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
                f.writelines("%s = %s\n" % kv for kv in conf.items())
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                  "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.dir and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # -- databases ---------------------------------------------------------------
    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database (copied from ``template`` when given); its URL."""
        import psycopg
        if name is None:
            self._made += 1
            name = "t%d_%d" % (os.getpid(), self._made)
        sql = 'CREATE DATABASE "%s"' % name + (' TEMPLATE "%s"' % template if template else "")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(sql)
                return self.url(name)
            except psycopg.errors.ObjectInUse:  # the template has a session open: wait for it
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def drop_database(self, name: str) -> None:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def running_cluster(**kw: Any):  # type: ignore[no-untyped-def]
    """Generator for a pytest fixture: a started cluster, skipped (or failed
    in CI, where scripts/sysdeps.sh must have installed PostgreSQL) when the
    binaries are missing or psycopg is not installed."""
    import pytest
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("psycopg not installed in CI: the postgresql extra should be")
        pytest.skip("psycopg not installed (pip install -e '.[postgresql]')")
    if pg_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL not installed in CI: scripts/sysdeps.sh should have")
        pytest.skip("PostgreSQL not installed (make sysdeps / apt-get install postgresql)")
    pg = PgCluster(**kw)
    try:
        pg.start()
    except PgError as e:
        pg.destroy()
        pytest.fail(str(e))
    try:
        yield pg
    finally:
        pg.destroy()
