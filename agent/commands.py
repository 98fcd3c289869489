"""Signed commands on the concentrator: reception, verification, the durable
command log, refusals, and results kept until the HES acknowledges them.

Owns the order of checks (docs/command-format.md, "What is refused"): open
the kind-2 envelope under the downlink key with a persisted replay window,
verify the command (``agent.command.verify``), tell a redelivery (same
counter, same body digest: its stored result is sent again) from a replay,
**commit the counter durably before anything runs**, then decide what needs
no meter (expired, over the disconnect rate limit) and hand the rest to the
executor. Every refusal is logged with its reason and counted; every command
that verified ends with exactly one stored result.

Must not know meters or transports: ``dispatch`` (the executor) and the
delivery loop (``agent.commands_link``) are injected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from agent.archive import Archive
from agent.clock import SystemClock
from agent.command import Command, CommandError, verify
from agent.config import CommandsConfig
from agent.envelope import KIND_COMMAND, EnvelopeError, Keyring, ReplayWindow, open_envelope

log = logging.getLogger(__name__)

WINDOW_KEY = "downlink_window"
LAST_KEY = "command_last_counter"
KEEP_REFUSALS = 200
HOUR = 3600
# states of the command table
ACCEPTED, RUNNING, EXECUTED, FAILED = "accepted", "running", "executed", "failed"


def result_doc(row: sqlite3.Row | tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
    """The result JSON of a finished command row (docs/command-format.md, *Results*)."""
    r = dict(row) if not isinstance(row, tuple) else dict(zip(
        ("counter", "id", "op", "state", "reason", "result", "finished"), row, strict=True))
    return {"id": r["id"], "counter": r["counter"], "op": r["op"], "state": r["state"],
            "reason": r["reason"], "result": json.loads(r["result"]) if r["result"] else None,
            "ts": int(r["finished"] or 0)}


class CommandLog:
    """The archive's command tables (schema 2). Every method takes the archive
    lock itself; writes are single transactions (durable on return)."""

    def __init__(self, archive: Archive, lock: threading.Lock) -> None:
        self.archive = archive
        self.lock = lock

    def _db(self) -> sqlite3.Connection:
        return self.archive.conn

    def last_counter(self) -> int:
        with self.lock:
            raw = self.archive.meta(LAST_KEY)
        return int(raw.decode()) if raw else 0

    def lookup(self, counter: int) -> dict[str, Any] | None:
        with self.lock:
            cur = self._db().execute(
                "SELECT counter, digest, state, acked FROM command WHERE counter=?", (counter,))
            r = cur.fetchone()
        return None if r is None else {"counter": r[0], "digest": bytes(r[1]), "state": r[2],
                                       "acked": r[3]}

    def window(self) -> ReplayWindow:
        with self.lock:
            raw = self.archive.meta(WINDOW_KEY)
        try:
            return ReplayWindow.from_bytes(raw) if raw else ReplayWindow()
        except EnvelopeError:
            log.warning("stored downlink replay window unreadable: starting a fresh one")
            return ReplayWindow()

    def save_window(self, w: ReplayWindow) -> None:
        with self.lock:
            self.archive.set_meta(WINDOW_KEY, w.to_bytes())

    def commit(self, cmd: Command, digest: bytes, now: float,
               max_disconnects: int) -> tuple[str, str | None]:
        """Record an authentic command and its counter in one transaction, and
        decide what needs no meter. Returns (state, reason): ``accepted`` (to
        execute) or ``failed`` with ``expired``/``rate_limited`` (result ready)."""
        def tx(db: sqlite3.Connection) -> tuple[str, str | None]:
            state, reason, throttled = ACCEPTED, None, 0
            if now > cmd.expires:
                state, reason = FAILED, "expired"
            elif cmd.op == "disconnect":
                n = db.execute("SELECT COUNT(*) FROM command WHERE op='disconnect' AND "
                               "throttled=1 AND received>?", (now - HOUR,)).fetchone()[0]
                if n >= max_disconnects:
                    state, reason = FAILED, "rate_limited"
                else:
                    throttled = 1
            db.execute("INSERT INTO command(counter, id, op, meter, digest, body, received, state,"
                       " reason, throttled, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (cmd.counter, cmd.id, cmd.op, cmd.meter, digest, cmd.to_body(), now,
                        state, reason, throttled, now if state == FAILED else None))
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                       (LAST_KEY, str(cmd.counter).encode()))
            _bump(db, "accepted")
            if state == FAILED:
                _bump(db, FAILED)
            return state, reason
        with self.lock:
            out: tuple[str, str | None] = self.archive.write(tx)
        return out

    def mark_running(self, counter: int, now: float) -> None:
        """Durably, before the first byte goes to the meter: a crash after this
        is ``interrupted``, never a second execution."""
        with self.lock:
            self.archive.write(lambda db: db.execute(
                "UPDATE command SET state=?, started=? WHERE counter=? AND state=?",
                (RUNNING, now, counter, ACCEPTED)))

    def finish(self, counter: int, state: str, reason: str | None,
               result: dict[str, Any] | None, now: float) -> dict[str, Any]:
        def tx(db: sqlite3.Connection) -> None:
            db.execute("UPDATE command SET state=?, reason=?, result=?, finished=? "
                       "WHERE counter=? AND state IN (?, ?)",
                       (state, reason, None if result is None else json.dumps(result, sort_keys=True),
                        now, counter, ACCEPTED, RUNNING))
            _bump(db, state)
        with self.lock:
            self.archive.write(tx)
            r = self._db().execute(
                "SELECT counter, id, op, state, reason, result, finished FROM command "
                "WHERE counter=?", (counter,)).fetchone()
        return result_doc(tuple(r))

    def unfinished(self) -> list[tuple[int, str, bytes]]:
        with self.lock:
            return [(int(c), str(s), bytes(b)) for c, s, b in self._db().execute(
                "SELECT counter, state, body FROM command WHERE state IN (?, ?) ORDER BY counter",
                (ACCEPTED, RUNNING))]

    def pending_results(self, limit: int = 16) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._db().execute(
                "SELECT counter, id, op, state, reason, result, finished FROM command "
                "WHERE acked IS NULL AND state IN (?, ?) ORDER BY counter LIMIT ?",
                (EXECUTED, FAILED, limit)).fetchall()
        return [result_doc(tuple(r)) for r in rows]

    def ack_result(self, counter: int, now: float) -> None:
        with self.lock:
            self.archive.write(lambda db: db.execute(
                "UPDATE command SET acked=? WHERE counter=? AND acked IS NULL", (now, counter)))

    def resend(self, counter: int) -> None:
        """The HES asked again for a command we finished: send its result again."""
        with self.lock:
            self.archive.write(lambda db: db.execute(
                "UPDATE command SET acked=NULL WHERE counter=? AND state IN (?, ?)",
                (counter, EXECUTED, FAILED)))

    def refuse(self, reason: str, detail: str, now: float) -> None:
        def tx(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO command_refusal(ts, reason, detail) VALUES (?, ?, ?)",
                       (now, reason, detail[:300]))
            db.execute("DELETE FROM command_refusal WHERE id <= "
                       "(SELECT MAX(id) FROM command_refusal) - ?", (KEEP_REFUSALS,))
            _bump(db, "refused:" + reason)
        with self.lock:
            self.archive.write(tx)

    def count(self, key: str) -> None:
        with self.lock:
            self.archive.write(lambda db: _bump(db, key))

    def status(self, now: float, recent: int = 10) -> dict[str, Any]:
        """The ``commands`` object of ``wum status --json``."""
        with self.lock:
            db = self._db()
            stats = dict(db.execute("SELECT key, n FROM command_stat").fetchall())
            rows = db.execute("SELECT counter, id, op, meter, state, reason, result, finished "
                              "FROM command ORDER BY counter DESC LIMIT ?", (recent,)).fetchall()
            refusals = db.execute("SELECT ts, reason, detail FROM command_refusal "
                                  "ORDER BY id DESC LIMIT ?", (recent,)).fetchall()
            pending = db.execute("SELECT COUNT(*) FROM command WHERE acked IS NULL AND "
                                 "state IN (?, ?)", (EXECUTED, FAILED)).fetchone()[0]
            running = db.execute("SELECT COUNT(*) FROM command WHERE state IN (?, ?)",
                                 (ACCEPTED, RUNNING)).fetchone()[0]
            hour = db.execute("SELECT COUNT(*) FROM command WHERE op='disconnect' AND "
                              "throttled=1 AND received>?", (now - HOUR,)).fetchone()[0]
            last = self.archive.meta(LAST_KEY)
        refused = {k[8:]: v for k, v in stats.items() if k.startswith("refused:")}
        return {
            "received": stats.get("received", 0), "accepted": stats.get("accepted", 0),
            "duplicates": stats.get("duplicate", 0), "executed": stats.get(EXECUTED, 0),
            "failed": stats.get(FAILED, 0), "refused": refused,
            "refused_total": sum(refused.values()), "in_progress": running,
            "results_pending": pending, "disconnects_last_hour": hour,
            "last_counter": int(last.decode()) if last else 0,
            "last_results": [{"counter": c, "id": i, "op": o, "meter": m, "state": s,
                              "reason": r, "result": json.loads(res) if res else None,
                              "ts": f} for c, i, o, m, s, r, res, f in rows],
            "last_refusals": [{"ts": t, "reason": r, "detail": d} for t, r, d in refusals],
        }


def _bump(db: sqlite3.Connection, key: str) -> None:
    db.execute("INSERT INTO command_stat(key, n) VALUES (?, 1) "
               "ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,))


class Inbox:
    """Where sealed commands arrive, from any thread (batch acks, polls, MQTT
    pushes); one at a time. ``dispatch(cmd)`` queues an accepted command for
    execution; ``on_result()`` is called when a result is ready to send."""

    def __init__(self, device: str, root_key: bytes, settings: CommandsConfig, log_: CommandLog,
                 clock: SystemClock, dispatch: Callable[[Command], None],
                 on_result: Callable[[], None] = lambda: None) -> None:
        self.device = device
        self.settings = settings
        self.log = log_
        self.clock = clock
        self.dispatch = dispatch
        self.on_result = on_result
        self._keyring = Keyring(purpose="downlink")
        self._keyring.add(device, root_key)
        self._lock = threading.Lock()
        self._window: ReplayWindow | None = None

    def __repr__(self) -> str:
        return "Inbox(device=%r, %d verify keys)" % (self.device, len(self.settings.verify_keys))

    def receive(self, sealed: bytes) -> str:
        """Take one sealed command. Returns what became of it: ``accepted``,
        ``failed`` (verified, but expired or rate-limited: result ready),
        ``duplicate`` (a redelivery), or ``refused:<reason>``. Never raises for
        bad input."""
        with self._lock:
            self.log.count("received")
            try:
                return self._receive(bytes(sealed))
            except CommandError as e:
                return self._refused(e.reason, str(e))

    def _receive(self, sealed: bytes) -> str:
        now = self.clock.now()
        try:
            opened = open_envelope(sealed, self._keyring)
        except EnvelopeError as e:
            raise CommandError("bad_envelope", envelope=getattr(e, "reason", "?")) from None
        h = opened.header
        if h.kind != KIND_COMMAND:
            raise CommandError("bad_envelope", kind=h.kind)
        if self._window is None:
            self._window = self.log.window()
        try:
            self._window.check(h.boot, h.counter, h.device)
            replay = False
        except EnvelopeError:
            replay = True           # the same sealed bytes again: at most a redelivery
        cmd = verify(opened.payload, self.settings.verify_keys, self.device,
                     self.settings.revoked_keys)
        if not replay:
            self._window.accept(h.boot, h.counter)
            self.log.save_window(self._window)
        digest = hashlib.sha256(cmd.to_body()).digest()
        known = self.log.lookup(cmd.counter)
        if known is not None:
            if known["digest"] != digest:
                raise CommandError("replayed", counter=cmd.counter, id=cmd.id)
            self.log.count("duplicate")
            if known["state"] in ("executed", "failed"):
                self.log.resend(cmd.counter)
                self.on_result()
            log.info("command %s (counter %d) delivered again: not executed again",
                     cmd.id, cmd.counter)
            return "duplicate"
        if replay:
            raise CommandError("bad_envelope", envelope="replay", counter=cmd.counter)
        last = self.log.last_counter()
        if cmd.counter <= last:
            raise CommandError("replayed", counter=cmd.counter, last=last, id=cmd.id)
        state, reason = self.log.commit(cmd, digest, now, self.settings.max_disconnects_per_hour)
        if state == ACCEPTED:
            log.info("command %s accepted: %s %s (counter %d)", cmd.id, cmd.op,
                     cmd.meter or "-", cmd.counter)
            self.dispatch(cmd)
        else:
            log.warning("command %s (%s %s, counter %d) not executed: %s", cmd.id, cmd.op,
                        cmd.meter or "-", cmd.counter, reason)
            self.on_result()
        return state

    def _refused(self, reason: str, detail: str) -> str:
        log.warning("%s", detail)
        self.log.refuse(reason, detail, self.clock.now())
        return "refused:" + reason

    def resume(self, keep: Callable[[int], bool] = lambda counter: False) -> list[Command]:
        """After a restart: commands committed but never started are executed
        now (they never touched a meter); one that was running when the agent
        stopped fails as ``interrupted`` — it is never run twice — unless
        ``keep(counter)`` says its outcome is still to come (an update on
        trial, ``agent.update``)."""
        out = []
        for counter, state, body in self.log.unfinished():
            if state == RUNNING and keep(counter):
                continue
            if state == RUNNING:
                self.log.finish(counter, FAILED, "interrupted", None, self.clock.now())
                log.warning("command counter %d was running when the agent stopped: "
                            "failed as interrupted, not run again", counter)
                continue
            out.append(Command.from_body(body))
        if out:
            log.info("%d accepted command(s) resumed after a restart", len(out))
        for cmd in out:
            self.dispatch(cmd)
        return out
