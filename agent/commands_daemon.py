"""Signed commands inside ``wum run``: the pieces wired to one daemon.

Owns building and stopping the command machinery of a running agent — the
command log (archive tables), the executor (a worker thread on the daemon's
bus locks and live configuration), the inbox (verification against
``[commands]``) and the delivery link (polls, pushes, results) — and
resuming commands a restart interrupted. Must not know the ops or the wire
(``agent.commands*`` do).
"""

from __future__ import annotations

import logging
from typing import Any

from agent.commands import CommandLog, Inbox
from agent.commands_exec import Executor
from agent.commands_link import CommandLink
from agent.update import Updater

log = logging.getLogger(__name__)


class Commands:
    """``daemon``: an opened ``agent.daemon.Daemon`` with an uplink."""

    def __init__(self, daemon: Any) -> None:
        d = daemon
        cfg = d.cfg
        self.log = CommandLog(d.archive, d.lock)
        self.archive, self.lock = d.archive, d.lock
        self.updater = Updater(cfg, d.clock, self.log, d.request_restart, d.stop,
                               transport=d.uplink.transport)
        self.executor = Executor(lambda: d.cfg, d.archive, d.lock, d.clock, self.log,
                                 d.bus_locks, apply_config=d.apply_config, stop=d.stop,
                                 update=self.updater.run)
        self.inbox = Inbox(cfg.concentrator_id, bytes.fromhex(cfg.key_hex), cfg.commands,
                           self.log, d.clock, self.executor.submit)
        self.link = CommandLink(cfg.concentrator_id, d.uplink.transport, d.uplink, self.inbox,
                                self.log, d.clock, poll_interval=cfg.commands.poll_interval,
                                retry=min(30.0, cfg.commands.poll_interval or 30.0),
                                stop=d.stop)
        self.executor.on_result = self.link.wake
        self.inbox.on_result = self.link.wake
        self.updater.on_result = self.link.wake
        if not cfg.commands.verify_keys:
            log.warning("no [commands] verify_key configured: every command will be refused "
                        "(unknown_key)")

    def start(self) -> Commands:
        with self.lock:
            first = self.archive.next_seq()
        self.updater.start(first)
        self.executor.start()
        self.inbox.resume(keep=self.updater.holds)
        self.link.start()
        return self

    def close(self) -> None:
        self.link.close()
        self.executor.close()
