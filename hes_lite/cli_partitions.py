"""``hes-lite partitions``: the monthly partitions of the readings table
(PostgreSQL), listed, made ahead of need, and detached for retention; and
the same upkeep as a thread inside ``hes-lite serve --retention-months``.

Owns the argument parsing, printing and the upkeep's schedule; the store
does the DDL. Retention keeps the current month and the N-1 before it:
a partition that ends on or before the first day of the oldest kept month
is detached (readers and writers go on) and kept under a new name, or
dropped with ``--drop``. Every detach is audited. Must not know SQL.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import threading
import time
from collections.abc import Callable

from hes_lite import HesError, export
from hes_lite.audit import Auditor, cli_actor
from hes_lite.store import Store, open_store

log = logging.getLogger(__name__)
AddDb = Callable[[argparse.ArgumentParser], None]
UPKEEP_INTERVAL = 3600.0   # s between two upkeeps inside serve (a housekeeping period)


def cutoff(keep_months: int, now: float) -> int:
    """Epoch second starting the oldest month kept (``keep_months`` >= 1)."""
    t = time.gmtime(now)
    month = t.tm_year * 12 + t.tm_mon - 1 - (keep_months - 1)
    return calendar.timegm((month // 12, month % 12 + 1, 1, 0, 0, 0))


def upkeep(store: Store, keep_months: int | None, drop: bool, now: float,
           auditor: Auditor | None = None, actor: str = "hes") -> list[str]:
    """Partitions for the coming months; with ``keep_months``, retention."""
    store.prepare_partitions(now)
    if keep_months is None:
        return []
    done = store.detach_partitions(cutoff(keep_months, now), drop)
    if done and auditor is not None:
        auditor.record(actor, "partitions.drop" if drop else "partitions.detach",
                       ",".join(done), keep_months=keep_months)
    return done


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db: AddDb) -> None:
    p = sub.add_parser(
        "partitions", help="readings partitions by month, and retention (PostgreSQL)",
        description="List the readings table's monthly partitions (and make the coming "
                    "months'); with --keep-months N detach every month before the last N "
                    "(the current one counts): the month's table stays in the database "
                    "under a new name, or is dropped with --drop. PostgreSQL only.")
    db(p)
    p.add_argument("--keep-months", type=int, metavar="N",
                   help="detach the partitions older than the last N months (N >= 1)")
    p.add_argument("--drop", action="store_true", help="drop detached months (data is gone)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_partitions)


def cmd_partitions(args: argparse.Namespace) -> int:
    if args.keep_months is not None and args.keep_months < 1:
        raise HesError("--keep-months must be at least 1")
    store = open_store(args.db)
    done = upkeep(store, args.keep_months, args.drop, time.time(), Auditor(store),
                  cli_actor())
    parts = store.partitions()
    if args.json:
        print(json.dumps({"partitions": parts, "detached": done}))
        return 0
    for name in done:
        print(f"{'dropped' if args.drop else 'detached'}\t{name}")
    for part in parts:
        print(f"{part['month']}\t{part['table']}\t{export.rfc3339(int(str(part['from'])))}\t"
              f"~{part['rows']} rows")
    return 0


class Upkeep:
    """``serve``'s thread: ``upkeep`` at start and every ``interval`` s."""

    def __init__(self, store: Store, keep_months: int | None, auditor: Auditor | None,
                 interval: float = UPKEEP_INTERVAL) -> None:
        self.store, self.keep_months, self.auditor = store, keep_months, auditor
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Upkeep:
        self.run_once()
        self._thread = threading.Thread(target=self._run, name="hes-upkeep", daemon=True)
        self._thread.start()
        return self

    def run_once(self) -> None:
        try:
            upkeep(self.store, self.keep_months, False, time.time(), self.auditor)
        except HesError as e:   # a busy store: next time
            log.warning("partition upkeep failed: %s", e)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
