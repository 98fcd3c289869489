"""Signed updates on a board: the ``update`` command, the download in
chunks, the checks, the install into the other bundle folder, the trial,
and the outcome as the command's result (docs/firmware.md, "Updates on a
board").

Portable (MicroPython; tested under CPython too). The board's bundle folders
are A/B slots (``agent.slots`` with base ``wum``: ``wum/a``, ``wum/b``,
``wum/boot.json``, the layout ``wum flash --port`` writes). Owns:

- ``start`` (the command's handler): arguments, target, board and version
  are checked before any byte is fetched; the update becomes pending
  (``update.json`` in the data folder, so a reboot goes on with it);
- ``step`` (every cycle): the package grows in ``update.part`` a chunk at a
  time — from an uplink that answers at once (HTTP: ``fetch`` returns the
  bytes) or one that answers later (an outbox or a mesh node: ``fetch``
  sends the sealed request up, ``chunks()`` gives what came down); a chunk
  that does not follow the part is dropped and asked again; once whole,
  the package is verified (announced digest and size, release signature,
  target, board, version, payload) BEFORE it is installed, installed into
  the other folder, switched to on trial, and the board resets;
- ``boot``: the outcome the slots recorded (a commit, or a rollback by
  ``main.py`` after too many boots, or by ``watch``) is reported as the
  command's result; a trial of the running version is noticed;
- ``after_cycle``: on trial, a cycle that read a meter and an upload
  acknowledged since boot commit the new version (result ``executed``);
- ``watch``: on trial past ``health_deadline`` s of running, roll back and reset.

Must not know UARTs, meters or HTTP.
"""

import json
import os

from agent.command_args import ArgsError, check_args
from agent.envelope import KIND_FETCH, PURPOSE_FETCH, FileBootStore, Sealer
from agent.slots import SlotError, Slots
from agent.update_package import (
    PackageError,
    UpdateRefused,
    newer,
    payload_entries,
    read_head,
    verify_file,
)
from firmware.board_commands import DEFERRED, Failed

PENDING = "update.json"
TARGET = "micropython"


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


class BoardUpdater:
    """``data``: the data folder; ``files``: the loop's ``Files`` on it;
    ``reset()``: reboot the board (``machine.reset``); ``clock()``: seconds
    (only differences are used)."""

    def __init__(self, config, commands, uplink, files, data, clock, reset, slots=None,
                 log=None):
        self.config = config
        self.commands = commands
        self.uplink = uplink
        self.files = files
        self.data = data
        self.clock = clock
        self.reset = reset
        self.slots = slots or Slots("wum")
        self.log = log or (lambda *a: None)
        up = config.get("update", {})
        self.chunk = int(up.get("chunk", 16384))
        self.window = int(up.get("window", 8))
        self.max_boots = int(up.get("max_boots", 3))
        self.deadline = int(up.get("health_deadline", 2 * int(config.get("period", 3600)) + 300))
        self.release_keys = [bytes.fromhex(k) for k in config.get("release_keys", [])]
        self.revoked = config.get("revoked_release_keys", [])
        self.trial = None
        self.booted = clock()
        self._fetcher = None
        commands.handlers["update"] = self.start

    def installed(self):
        return self.slots.version(self.slots.state()["active"]) or "0"

    def board(self):
        m = self.slots.manifest(self.slots.state()["active"]) or {}
        return m.get("board")

    # -- the command ----------------------------------------------------------
    def start(self, cmd):
        try:
            args = check_args("update", cmd.args)
        except ArgsError as e:
            raise Failed("bad_args: %s" % e) from None
        if not self.release_keys:
            raise Failed("unsupported: no release_keys in the device config: every package "
                         "would be refused")
        installed = self.installed()
        if args["target"] != TARGET:
            raise Failed("refused: wrong_target: package %s is for %s, this device runs %s"
                         % (args["version"], args["target"], TARGET))
        board = self.board()
        if board is not None and args["board"] != board:
            raise Failed("refused: wrong_board: package %s is built for board %s, this is %s"
                         % (args["version"], args["board"], board))
        try:
            if not newer(args["version"], installed):
                raise Failed("refused: downgrade: package version %s is not newer than the "
                             "installed %s" % (args["version"], installed))
        except PackageError as e:
            raise Failed("refused: malformed: %s" % e) from None
        if self.slots.state()["trial"]:
            raise Failed("refused: busy: an update is on trial")
        p = self.pending()
        if p:
            raise Failed("refused: busy: the update to %s is being fetched"
                         % p["args"]["version"])
        _remove(self._path("update.part"))
        self.files.save(PENDING, json.dumps({"counter": cmd.counter, "id": cmd.id,
                                             "args": args}).encode())
        self.log("update %s -> %s: fetching %d bytes" % (installed, args["version"],
                                                         args["size"]))
        return DEFERRED

    def _path(self, name):
        return self.data + "/" + name

    def pending(self):
        raw = self.files.load(PENDING)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _fail(self, p, reason):
        self.files.save(PENDING, b"null")
        _remove(self._path("update.part"))
        _remove(self._path("update.wup"))
        self.commands.finish(p["counter"], p["id"], "update", "failed", reason)

    # -- downloading and installing ----------------------------------------------
    def _request(self, package, offset, length):
        if self._fetcher is None:
            c = self.config
            self._fetcher = Sealer(c["device_id"], bytes.fromhex(c["root_key"]),
                                   FileBootStore(self._path("fetch_boot")),
                                   int(c.get("key_epoch", 0)), purpose=PURPOSE_FETCH)
        doc = {"length": length, "offset": offset, "package": package}
        return self._fetcher.seal(json.dumps(doc).encode(), KIND_FETCH)

    def step(self):
        """Move a pending update on: fetch, then verify, install, switch, reset."""
        p = self.pending()
        if not p:
            return
        a = p["args"]
        part = self._path("update.part")
        have = _size(part)
        if have > a["size"]:
            _remove(part)
            have = 0
        came = getattr(self.uplink, "chunks", lambda: [])()
        came = sorted([c for c in came if c[0] == a["package"]], key=lambda c: c[1])
        with open(part, "ab") as f:
            for _, offset, data in came:
                if offset == have:
                    f.write(data)
                    have += len(data)
            ask = have
            for _ in range(self.window):
                if ask >= a["size"]:
                    break
                n = min(self.chunk, a["size"] - ask)
                try:
                    data = self.uplink.fetch(a["package"], ask, n,
                                             self._request(a["package"], ask, n))
                except OSError as e:
                    self.log("update: fetch at %d failed (%s): again next cycle" % (ask, e))
                    break
                if data is None:            # asked: the bytes come down later
                    ask += n
                    continue
                if ask == have:
                    f.write(data)
                    have += len(data)
                ask = have
        if have >= a["size"]:
            self._install(p)

    def _install(self, p):
        a = p["args"]
        pkg = self._path("update.wup")
        os.rename(self._path("update.part"), pkg)
        installed = self.installed()
        try:
            header = verify_file(pkg, self.release_keys, TARGET, self.board(), installed,
                                 a["sha256"], a["size"], self.revoked)
            with open(pkg, "rb") as f:
                read_head(f)
                slot = self.slots.install(payload_entries(f, header))
        except UpdateRefused as e:
            return self._fail(p, "refused: %s" % e)
        except PackageError as e:
            return self._fail(p, "refused: malformed: %s" % e)
        except (OSError, SlotError) as e:
            return self._fail(p, "install_failed: %s" % e)
        self.slots.switch(slot, trial={"counter": p["counter"], "command": p["id"],
                                       "max_boots": self.max_boots, "deadline": 0,
                                       "health_deadline": self.deadline, "from": installed})
        self.files.save(PENDING, b"null")
        _remove(pkg)
        self.log("update %s -> %s installed in wum/%s: resetting into it on trial"
                 % (installed, header.version, slot))
        self.reset()

    # -- proving healthy ------------------------------------------------------------
    def boot(self, next_seq=0):
        """At boot: report a recorded outcome; notice our own trial (its
        first boot notes ``next_seq``: only an acknowledgement of a batch the
        new version sealed proves it healthy)."""
        st = self.slots.state()
        last = st["last"] or {}
        counter = int(last.get("counter") or 0)
        if counter and not self.commands.known(counter):
            self._report(last)
        if st["trial"]:
            if "first_seq" not in st["trial"]:
                st["trial"]["first_seq"] = next_seq
                self.slots.save(st)
            self.trial = st["trial"]
            self.booted = self.clock()
            self.log("wum: version %s on trial, boot %s of %s" % (
                self.trial.get("version"), self.trial.get("boots"), self.trial.get("max_boots")))

    def _report(self, last):
        counter = int(last.get("counter") or 0)
        cid = last.get("command") or ""
        if last.get("outcome") == "healthy":
            self.commands.finish(counter, cid, "update", "executed", None, {
                "version": last.get("version"), "previous": last.get("from"),
                "slot": self.slots.state()["active"]})
        else:
            self.commands.finish(counter, cid, "update", "failed", "rolled_back: %s"
                                 % last.get("reason"), {"version": last.get("from"),
                                                        "refused_version": last.get("version")})

    def after_cycle(self, read_ok, last_acked):
        """After a cycle: ``last_acked`` is the highest batch seq acknowledged."""
        if self.trial is None or not read_ok or last_acked < self.trial.get("first_seq", 0):
            return
        last = self.slots.commit(int(self.clock()))
        self.trial = None
        if last:
            self.log("wum: version %s reported healthy: committed" % last.get("version"))
            if last.get("counter"):
                self._report(last)

    def watch(self):
        """On trial past the health deadline: roll back and reset."""
        if self.trial is None:
            return
        limit = int(self.trial.get("health_deadline") or self.deadline)
        if self.clock() - self.booted > limit:
            self.slots.rollback("version %s did not report healthy within %ds"
                                % (self.trial.get("version"), limit), int(self.clock()))
            self.trial = None
            self.reset()
