"""The ``update`` command on a Linux concentrator: fetch, verify, install
next to the running version, switch, and prove healthy or be rolled back.

Owns the update's life on the agent (docs/firmware.md, "Updates on Linux"):

1. the command (already committed and marked running) announces a package:
   id, version, SHA-256, size, target, board; a version not newer than the
   installed one, or another target, is refused before any byte is fetched;
2. the package is downloaded in ranges (``agent.update_fetch``: resumes a
   ``.part`` file), then verified whole BEFORE anything is installed: the
   announced digest and size, the release signature (``[update]
   release_key``, never the HES's command key), target, version, payload;
3. it is installed into the inactive slot (``agent.update_linux``), the
   slots switch to it on trial (``agent.slots``: deadline and boot count),
   and the agent exits with ``RESTART`` so the launcher boots the new slot;
4. the new version, on trial, reports healthy after a cycle that read a
   meter and had an upload acknowledged: it commits and finishes the command
   ``executed`` with ``{"version", "previous", "slot"}``; if it does not in
   time (or keeps crashing) the launcher rolls back and the old version,
   starting again, finishes the command ``failed`` with
   ``rolled_back: <why>``.

Every refusal is a ``failed`` result whose reason says what was wrong
(``refused: unsigned: …``, ``refused: foreign_key: …``, ``refused:
downgrade: …``, ``download_failed: …``). Must not know the command wire
format or transports.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.clock import SystemClock
from agent.command import Command
from agent.command_args import check_args
from agent.commands import EXECUTED, FAILED, RUNNING, CommandLog
from agent.config import Config
from agent.slots import SlotError, Slots
from agent.transport import TransportError
from agent.update_fetch import HttpFetcher, RelayFetcher, download
from agent.update_linux import install, package_entries
from agent.update_package import PackageError, UpdateRefused, newer, read_head, verify_file

log = logging.getLogger(__name__)

RESTART = 75            # exit status: "boot the active slot again" (the launcher does)
TARGET = "linux"


class UpdateFailed(Exception):
    """An update that cannot go on; ``reason`` is the result's reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deferred(Exception):
    """The command's outcome is reported later (the new version on trial)."""


def fetcher_for(cfg: Config, transport: Any = None) -> Any:
    """How this concentrator fetches packages: from ``[update] url`` (by
    default the HTTP uplink's) itself, else through its uplink transport —
    a mesh node's goes up to a gateway (``agent.update_fetch.RelayFetcher``)."""
    s = cfg.update
    assert s is not None
    os.makedirs(s.download_dir, exist_ok=True)
    boot = os.path.join(s.download_dir, "fetch_boot")
    root = bytes.fromhex(cfg.key_hex)
    if s.url:
        return HttpFetcher(s.url, cfg.concentrator_id, root, boot)
    if transport is None:
        raise UpdateFailed("unsupported: nowhere to fetch packages from ([update] url)")
    return RelayFetcher(cfg.concentrator_id, root, boot,
                        lambda pid, sealed, n: transport.fetch(pid, sealed, n, 120.0))


def running_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("wum")
    except PackageNotFoundError:
        return "0.0.0"


class Updater:
    """``restart()`` stops the daemon with ``RESTART``; ``on_result()`` is
    told when a result is ready (the command link sends it)."""

    def __init__(self, cfg: Config, clock: SystemClock, log_: CommandLog,
                 restart: Callable[[], None], stop: threading.Event | None = None,
                 fetcher: Any = None, transport: Any = None) -> None:
        self.cfg = cfg
        self.settings = cfg.update
        self.clock = clock
        self.log = log_
        self.restart = restart
        self.stop = stop or threading.Event()
        self.on_result: Callable[[], None] = lambda: None
        self.slots = Slots(self.settings.slots) if self.settings and self.settings.slots \
            else None
        self.slot = os.environ.get("WUM_SLOT", "")
        self.trial: dict[str, Any] | None = None
        self._fetcher = fetcher
        self.transport = transport      # the uplink's: fetches through it without [update] url
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "Updater(slots=%r, slot=%r, trial=%s)" % (self.slots, self.slot,
                                                         bool(self.trial))

    @property
    def installed(self) -> str:
        v = self.slots.version(self.slot) if self.slots and self.slot else None
        return v or running_version()

    def unsupported(self) -> str | None:
        if self.slots is None:
            return "this agent has no A/B slots ([update] slots, or install with wum flash --ssh)"
        if self.slot not in ("a", "b"):
            return "this agent was not started by the wum launcher (WUM_SLOT unset)"
        if not self.settings or not self.settings.release_keys:
            return "no [update] release_key configured: every package would be refused"
        return None

    # -- at start ----------------------------------------------------------------
    def start(self, next_seq: int = 0) -> None:
        """Report an outcome the slots recorded (a rollback, or a commit whose
        result was not written), and notice a trial of our own version; its
        first boot notes ``next_seq``, the first batch it seals: only an
        acknowledgement of that batch or a later one proves it healthy."""
        if self.slots is None:
            return
        st = self.slots.state()
        last = st.get("last") or {}
        counter = int(last.get("counter") or 0)
        if counter and (self.log.lookup(counter) or {}).get("state") == RUNNING:
            self._report(counter, last)
        t = st.get("trial")
        if t and st.get("active") == self.slot:
            if "first_seq" not in t:
                t["first_seq"] = next_seq
                self.slots.save(st)
            self.trial = t
            log.warning("version %s on trial (boot %s of %s, from %s): reports healthy after a "
                        "cycle with a meter read and an upload acknowledged", t.get("version"),
                        t.get("boots"), t.get("max_boots"), t.get("from"))

    def holds(self, counter: int) -> bool:
        """The command ``counter`` is ours to finish (a trial in progress)."""
        return bool(self.trial and int(self.trial.get("counter") or 0) == counter)

    def _report(self, counter: int, last: dict[str, Any]) -> None:
        if last.get("outcome") == "healthy":
            self.log.finish(counter, EXECUTED, None, {
                "version": last.get("version"), "previous": last.get("from"),
                "slot": self.slot}, self.clock.now())
            log.info("update to %s (command counter %d) executed", last.get("version"), counter)
        else:
            reason = "rolled_back: %s" % (last.get("reason") or "the new version failed")
            self.log.finish(counter, FAILED, reason, {"version": last.get("from"),
                                                      "refused_version": last.get("version")},
                            self.clock.now())
            log.error("update to %s rolled back: %s", last.get("version"), last.get("reason"))
        self.on_result()

    # -- health --------------------------------------------------------------------
    def after_cycle(self, read_ok: bool, last_acked: int) -> None:
        """Called after every cycle with the highest batch seq the HES has
        acknowledged; on trial, a meter read and the acknowledgement of a
        batch this version sealed commit the new version."""
        if self.trial is None or self.slots is None or not read_ok or \
                last_acked < int(self.trial.get("first_seq") or 0):
            return
        with self._lock:
            if self.trial is None:
                return
            try:
                last = self.slots.commit(time.time())
            except (OSError, SlotError) as e:
                log.error("could not commit the new version: %s", e)
                return
            self.trial = None
        if last is not None:
            log.info("version %s reported healthy: committed", last.get("version"))
            counter = int(last.get("counter") or 0)
            if counter:
                self._report(counter, last)

    # -- the command ---------------------------------------------------------------
    def run(self, cmd: Command) -> dict[str, Any]:
        """Execute an update command (marked running). Raises ``UpdateFailed``
        or, once the new version is switched to, ``Deferred``."""
        why = self.unsupported()
        if why is not None:
            raise UpdateFailed("unsupported: " + why)
        args = check_args("update", cmd.args)
        installed = self.installed
        if args["target"] != TARGET:
            raise UpdateFailed("refused: wrong_target: package %s is for %s, this device runs "
                               "%s" % (args["version"], args["target"], TARGET))
        try:
            if not newer(str(args["version"]), installed):
                raise UpdateFailed("refused: downgrade: package version %s is not newer than "
                                   "the installed %s" % (args["version"], installed))
        except PackageError as e:
            raise UpdateFailed("refused: malformed: %s" % e) from None
        path = self._download(args)
        assert self.slots is not None and self.settings is not None
        try:
            header = verify_file(path, self.settings.release_keys, TARGET, None, installed,
                                 str(args["sha256"]), int(str(args["size"])),
                                 self.settings.revoked)
            with open(path, "rb") as f:
                _, _, offset = read_head(f)
                slot = install(self.slots, package_entries(f, header))
        except UpdateRefused as e:
            os.remove(path)
            raise UpdateFailed("refused: %s" % e) from None
        except PackageError as e:
            os.remove(path)
            raise UpdateFailed("refused: malformed: %s" % e) from None
        except (OSError, SlotError) as e:
            raise UpdateFailed("install_failed: %s" % e) from None
        now = time.time()           # wall clock: the launcher enforces the deadline by it
        self.slots.switch(slot, trial={
            "counter": cmd.counter, "command": cmd.id, "started": int(now),
            "deadline": int(now + self.settings.health_deadline),
            "max_boots": self.settings.max_boots, "from": installed})
        os.remove(path)
        log.warning("update %s -> %s installed in slot %s: restarting into it on trial "
                    "(%ds to report healthy)", installed, header.version, slot,
                    self.settings.health_deadline)
        self.restart()
        raise Deferred()

    def _download(self, args: dict[str, Any]) -> str:
        s = self.settings
        assert s is not None
        os.makedirs(s.download_dir, exist_ok=True)
        fetcher = self._fetcher or fetcher_for(self.cfg, self.transport)
        try:
            return download(fetcher, str(args["package"]), int(args["size"]),
                            str(args["sha256"]), s.download_dir, s.chunk, self.stop)
        except UpdateRefused as e:
            raise UpdateFailed("refused: %s" % e) from None
        except (TransportError, OSError) as e:
            raise UpdateFailed("download_failed: %s (it resumes where it stopped when the "
                               "update is sent again)" % e) from None
