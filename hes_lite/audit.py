"""The audit log: who did what, when, from where, and how it ended.

Owns turning an event (a failed authentication, a token or key change, a
command queued and its outcome) into an ``AuditEntry`` written to the store
and, when configured, appended as one JSON line to a file (for a SIEM or
log shipper). A file that cannot be written is logged, never fatal: the
store's copy is the record.

Actions (``action``, ``outcome``):
    auth            unauthenticated | forbidden   (detail: route, method, role needed)
    token.add       ok                            (target: token name; detail: role)
    token.revoke    ok | absent
    key.add / key.rotate / key.revoke             (target: device; detail: epoch, fingerprint)
    command_key.create  ok                        (target: key id)
    command.queue   queued | refused              (target: command id; detail: meter, op, ...)
    command.result  executed | failed | duplicate | refused
    command.expire  expired

Must not know HTTP, SQL or the token format.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import threading
import time
from collections.abc import Callable

from hes_lite.store import AuditEntry, Store

log = logging.getLogger(__name__)
ENV_FILE = "HES_LITE_AUDIT_FILE"


def cli_actor() -> str:
    """``cli:<user>``: the CLI acts with the HES's own authority, on behalf of
    whoever runs it on the host."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:uid%d" % os.getuid()


class Auditor:
    def __init__(self, store: Store, path: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.path = path if path is not None else (os.environ.get(ENV_FILE) or None)
        self.clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "Auditor(path=%r)" % (self.path,)

    def record(self, actor: str, action: str, target: str = "", outcome: str = "ok",
               remote: str = "", **detail: object) -> AuditEntry:
        entry = AuditEntry(self.clock(), actor, action, target, outcome, remote, dict(detail))
        self.store.add_audit([entry])
        if self.path:
            self._append(entry)
        return entry

    def _append(self, entry: AuditEntry) -> None:
        line = json.dumps(entry.as_dict(), sort_keys=True, separators=(",", ":"),
                          default=str) + "\n"
        try:
            with self._lock, open(self.path or "", "a", encoding="utf-8") as f:
                f.write(line)  # one write of one line: O_APPEND keeps writers apart
        except OSError as e:
            log.error("audit file %s cannot be written: %s", self.path, e)
