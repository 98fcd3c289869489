"""A/B slots: two complete versions side by side, the state file naming the
one to boot, installing into the other, switching to it on trial,
committing or rolling back, and the boot decision.

Portable (CPython and MicroPython): the agent executing an ``update``
(``agent.update``), the Linux launcher (``firmware.launcher``) and a board
(``main.py``, ``firmware.board_update``) share these rules. Must not
know package signatures (``firmware.package`` checks them before anything
here runs) or how a version proves healthy (the agent decides and calls
``commit``). Layout under ``base`` (``/opt/wum/slots`` on Linux, ``wum`` on
a board)::

    a/  b/          a complete version each: the bundle's files, manifest.json
    boot.json       the state (below)
    a.new/ b.new/   an install in progress: never booted, removed by the next install
    a.old/ b.old/   a replaced slot being deleted

    {"active": "a", "previous": "b" | null,
     "trial": null | {"version", "from", "counter", "command", "started",
                      "deadline", "boots", "max_boots"},
     "last": null | {"outcome": "healthy" | "rolled_back", "reason", "version",
                     "from", "counter", "command", "ts"}}

What makes a kill -9 or a power cut at any point harmless: (1) a slot folder
gets its name only when complete (written as ``<slot>.new``, then renamed);
(2) the state file is replaced whole (write ``boot.json.tmp``, sync, rename);
(3) the inactive slot is rewritten only after the state stopped naming it
``previous``; (4) the boot decision picks only a slot whose
``manifest.json`` is there, and falls back to the other complete one. So a
device boots the old version or the complete new one, never a mix.

A trial: the new version boots with ``trial`` set; every boot counts; past
``max_boots`` boots or past ``deadline`` (epoch s, 0: none) without a
``commit`` the boot decision rolls back to ``previous`` by itself and
records why in ``last`` (the old version reports it as the update
command's result).
"""

import json
import os

from agent import AgentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATE = "boot.json"
SLOTS = ("a", "b")
MAX_BOOTS = 3
CHUNK = 2048


class SlotError(AgentError):
    """A slot operation failed (``slot``, ``why``)."""


class Disk:
    """The file operations slots need, each announced to ``step(what)``
    before it mutates anything (a test hook for cutting power between any
    two; a no-op otherwise)."""

    def __init__(self, step: "Any" = None) -> None:
        self.step = step or (lambda what: None)

    def exists(self, path: str) -> bool:
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def isdir(self, path: str) -> bool:
        try:
            return os.stat(path)[0] & 0x4000 != 0
        except OSError:
            return False

    def listdir(self, path: str) -> "list[str]":
        try:
            return os.listdir(path)
        except OSError:
            return []

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def mkdirs(self, path: str) -> None:
        here = "/" if path.startswith("/") else ""
        for part in path.split("/"):
            if not part:
                continue
            here = here + part if here in ("", "/") else here + "/" + part
            if not self.isdir(here):
                self.step("mkdir " + here)
                os.mkdir(here)

    def write(self, path: str, chunks: "Any") -> None:
        """Write a file from an iterable of byte strings and sync it."""
        self.step("create " + path)
        with open(path, "wb") as f:
            for data in chunks:
                self.step("write " + path)
                f.write(data)
            _sync_file(f)

    def rename(self, src: str, dst: str) -> None:
        self.step("rename %s %s" % (src, dst))
        try:
            os.rename(src, dst)
        except OSError:
            if not self.exists(dst) or self.isdir(dst):
                raise
            os.remove(dst)              # a filesystem that will not rename over a file (FAT)
            os.rename(src, dst)
        _sync_dir(dst)

    def remove(self, path: str) -> None:
        self.step("remove " + path)
        os.remove(path)

    def remove_tree(self, path: str) -> None:
        if not self.exists(path):
            return
        if not self.isdir(path):
            self.remove(path)
            return
        for name in self.listdir(path):
            self.remove_tree(path + "/" + name)
        self.step("rmdir " + path)
        os.rmdir(path)


def _sync_file(f: "Any") -> None:
    f.flush()
    fsync = getattr(os, "fsync", None)
    if fsync is not None and hasattr(f, "fileno"):
        fsync(f.fileno())
    elif hasattr(os, "sync"):
        os.sync()


def _sync_dir(path: str) -> None:
    """Make a rename durable: fsync the folder on CPython, os.sync() where that is all."""
    fsync = getattr(os, "fsync", None)
    if fsync is not None and hasattr(os, "O_RDONLY"):
        d = os.open(path.rsplit("/", 1)[0] if "/" in path else ".", os.O_RDONLY)
        try:
            fsync(d)
        finally:
            os.close(d)
    elif hasattr(os, "sync"):
        os.sync()


class _Hashed:
    """The chunks of one file, hashed and counted as they are written."""

    def __init__(self, chunks: "Any") -> None:
        import hashlib
        self.chunks = chunks
        self.sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> "Any":
        for data in self.chunks:
            self.sha.update(data)
            self.size += len(data)
            yield data


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def _fresh() -> "dict[str, Any]":
    return {"active": "a", "previous": None, "trial": None, "last": None}


class Slots:
    def __init__(self, base: str, disk: "Disk | None" = None) -> None:
        self.base = base.rstrip("/") if base not in ("", "/") else base
        self.disk = disk or Disk()

    def __repr__(self) -> str:
        return "Slots(%r)" % self.base

    def path(self, name: str) -> str:
        return self.base + "/" + name if self.base else name

    # -- the state ---------------------------------------------------------------
    def state(self) -> "dict[str, Any]":
        """The state; a missing or unreadable file (a cut during its first
        write) reads as the copy being written, then as the default."""
        for name in (STATE, STATE + ".tmp"):
            try:
                doc = json.loads(self.disk.read(self.path(name)).decode())
            except (OSError, ValueError, UnicodeError):
                continue
            if isinstance(doc, dict) and doc.get("active") in SLOTS:
                st = _fresh()
                for k in st:
                    if k in doc:
                        st[k] = doc[k]
                if st["previous"] not in SLOTS:
                    st["previous"] = None
                if not isinstance(st["trial"], dict):
                    st["trial"] = None
                return st
        return _fresh()

    def save(self, st: "dict[str, Any]") -> None:
        if self.base not in ("", "/"):
            self.disk.mkdirs(self.base)
        raw = json.dumps(st).encode()
        self.disk.write(self.path(STATE + ".tmp"), [raw])
        self.disk.rename(self.path(STATE + ".tmp"), self.path(STATE))

    def complete(self, slot: str) -> bool:
        return self.disk.exists(self.path(slot) + "/manifest.json")

    def manifest(self, slot: str) -> "dict[str, Any] | None":
        try:
            doc = json.loads(self.disk.read(self.path(slot) + "/manifest.json").decode())
        except (OSError, ValueError, UnicodeError):
            return None
        return doc if isinstance(doc, dict) else None

    def version(self, slot: "str | None" = None) -> "str | None":
        m = self.manifest(slot or self.state()["active"])
        v = m.get("version") if m else None
        return v if isinstance(v, str) else None

    # -- installing ----------------------------------------------------------------
    def begin(self) -> "tuple[str, str]":
        """Prepare the inactive slot for writing -> (slot, folder to write).
        The state stops naming it ``previous`` first."""
        st = self.state()
        if st["trial"]:
            raise SlotError("an update is on trial (version %s): commit or roll back first"
                            % st["trial"].get("version"), why="trial")
        # the other slot; the named one itself while it holds no version (a first install)
        slot = other(st["active"]) if self.complete(st["active"]) else st["active"]
        if st["previous"] == slot:
            st["previous"] = None
            self.save(st)
        tmp = self.path(slot + ".new")
        self.disk.remove_tree(tmp)
        self.disk.remove_tree(self.path(slot + ".old"))
        self.disk.mkdirs(tmp)
        return slot, tmp

    def write_file(self, folder: str, rel: str, chunks: "Any") -> None:
        dest = folder + "/" + rel
        if "/" in rel:
            self.disk.mkdirs(dest.rsplit("/", 1)[0])
        self.disk.write(dest, chunks)

    def finish(self, slot: str) -> None:
        """The written ``<slot>.new`` becomes ``<slot>`` (manifest.json must be in it)."""
        tmp = self.path(slot + ".new")
        if not self.disk.exists(tmp + "/manifest.json"):
            raise SlotError("%s has no manifest.json: not a complete version" % tmp,
                            slot=slot, why="incomplete")
        dest = self.path(slot)
        if self.disk.exists(dest):
            self.disk.rename(dest, self.path(slot + ".old"))
            self.disk.remove_tree(self.path(slot + ".old"))
        self.disk.rename(tmp, dest)

    def abandon(self, slot: str) -> None:
        """Remove a half-written ``<slot>.new`` (after a refused payload)."""
        self.disk.remove_tree(self.path(slot + ".new"))

    def install(self, entries: "Any", prepare: "Any" = None) -> str:
        """Write ``entries`` — (path, size, sha256 hex, chunks) — into the
        inactive slot, each file's size and SHA-256 checked as it is written;
        ``prepare(folder)`` may add files; the slot gets its name only when
        all of it is there. -> the slot (not yet active). A file that does
        not match raises ``agent.update_package.UpdateRefused(tampered)``."""
        from agent.update_package import UpdateRefused, check_path
        slot, tmp = self.begin()
        try:
            for rel, size, sha, chunks in entries:
                check_path(rel)
                h = _Hashed(chunks)
                self.write_file(tmp, rel, h)
                if h.size != size or h.sha.digest().hex() != sha:
                    raise UpdateRefused("tampered", "%s differs from its listed hash" % rel,
                                        file=rel)
            if prepare is not None:
                prepare(tmp)
            self.finish(slot)
        except BaseException:
            self.abandon(slot)
            raise
        return slot

    # -- switching -----------------------------------------------------------------
    def switch(self, slot: str, trial: "dict[str, Any] | None" = None) -> None:
        """Boot ``slot`` from now on; with ``trial`` (a dict, see the module
        doc) it must ``commit`` before the deadline or it is rolled back."""
        if not self.complete(slot):
            raise SlotError("slot %s is not a complete version" % slot, slot=slot,
                            why="incomplete")
        st = self.state()
        if trial is not None:
            t = {"version": self.version(slot), "from": self.version(st["active"]),
                 "counter": 0, "command": "", "started": 0, "deadline": 0, "boots": 0,
                 "max_boots": MAX_BOOTS}
            t.update(trial)
            trial = t
        self.save({"active": slot, "previous": st["active"] if st["active"] != slot else
                   st["previous"], "trial": trial, "last": st["last"]})

    def commit(self, now: float = 0) -> "dict[str, Any] | None":
        """The trial version reported healthy: it stays. -> the outcome record."""
        st = self.state()
        t = st["trial"]
        if not t:
            return None
        last = {"outcome": "healthy", "reason": None, "version": t.get("version"),
                "from": t.get("from"), "counter": t.get("counter", 0),
                "command": t.get("command", ""), "ts": int(now)}
        st["trial"] = None
        st["last"] = last
        self.save(st)
        return last

    def rollback(self, reason: str, now: float = 0) -> "dict[str, Any]":
        """Back to ``previous`` (the failed slot stays on disk, never booted
        again unless installed anew). -> the outcome record."""
        st = self.state()
        t = st["trial"] or {}
        back = st["previous"]
        if back is None or not self.complete(back):
            raise SlotError("no complete previous version to roll back to", why="no_previous")
        last = {"outcome": "rolled_back", "reason": reason,
                "version": t.get("version") or self.version(st["active"]),
                "from": t.get("from") or self.version(back),
                "counter": t.get("counter", 0), "command": t.get("command", ""),
                "ts": int(now)}
        self.save({"active": back, "previous": None, "trial": None, "last": last})
        return last

    def boot(self, now: "float | None" = None) -> str:
        """The slot to boot now, after counting this boot of a trial and
        rolling back a trial past its boots or deadline (``now``: epoch s,
        None where there is no trustworthy clock)."""
        st = self.state()
        t = st["trial"]
        if t:
            t["boots"] = int(t.get("boots", 0)) + 1
            deadline = t.get("deadline") or 0
            if t["boots"] > int(t.get("max_boots", MAX_BOOTS)):
                why = "version %s did not report healthy in %d boots" % (
                    t.get("version"), t["boots"] - 1)
            elif now is not None and deadline and now > deadline:
                why = "version %s did not report healthy before its deadline" % t.get("version")
            else:
                why = None
            if why is not None and st["previous"] is not None and self.complete(st["previous"]):
                self.rollback(why, now or 0)
                return str(self.state()["active"])
            self.save(st)
        slot = str(st["active"])
        if self.complete(slot):
            return slot
        for s in (st["previous"], other(slot)):
            if s is not None and self.complete(s):
                st2 = self.state()
                st2.update({"active": s, "previous": None, "trial": None})
                self.save(st2)
                return s
        raise SlotError("no complete version in %s" % self.base, why="empty")
