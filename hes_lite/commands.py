"""Commands at the HES: queue, sign, seal for delivery, take results back.

Owns the command life cycle ``queued → delivered → executed | failed(reason)
| expired`` and its bookkeeping: the op's arguments are checked
(``command_args``), the target concentrator is the one that reports the
meter, the store hands out the per-concentrator counter and keeps the
signed command (``agent.command``'s body, signed by ``CommandSigner``);
every delivery seals it afresh (kind 2, downlink key, a nonce reserved in
the store, so none repeats across restarts); a result (kind 3) is opened,
checked against the command it answers and stored exactly once.
Everything an operator or a device does here is audited.

Must not know HTTP, MQTT or SQL: receivers call ``queue``, ``pending``,
``seal``, ``delivered``, ``submit_result``, ``open_poll``; listeners
registered with ``on_queued`` hear of new commands (the MQTT push).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent import command as wirecmd
from agent import envelope
from hes_lite import HesError, command_args, export, wire
from hes_lite.audit import Auditor
from hes_lite.ingest import Rejected
from hes_lite.signing import CommandSigner
from hes_lite.store import CommandRecord, KeyRecord, Store

log = logging.getLogger(__name__)

TTL = 3600              # s a command stays deliverable unless the request says less
MAX_TTL = TTL         # a request may ask for less, never more: a stale disconnect is a hazard
EXPIRY_GRACE = 30       # s after expiry before the HES calls it expired (a result may be in flight)
MAX_PENDING = 16        # commands per ack / poll answer
TERMINAL = ("executed", "failed", "expired")


class CommandRefused(HesError):
    """A command was not queued: ``status`` 404 (``reason`` unknown_meter) or
    422 (bad_args), ``detail`` says why."""

    status: int
    reason: str
    detail: str

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(reason, status=status, reason=reason, detail=detail)


def as_object(rec: CommandRecord) -> dict[str, Any]:
    """The contract's command object."""
    return {"id": rec.id, "meter": rec.meter, "concentrator": rec.device, "op": rec.op,
            "args": rec.args, "state": rec.state, "reason": rec.reason, "result": rec.result,
            "created": export.rfc3339(int(rec.created)),
            "updated": export.rfc3339(int(rec.updated))}


class CommandService:
    def __init__(self, store: Store, signer: CommandSigner, auditor: Auditor,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.signer = signer
        self.auditor = auditor
        self.clock = clock
        self._listeners: list[Callable[[CommandRecord], None]] = []

    def on_queued(self, listener: Callable[[CommandRecord], None]) -> None:
        self._listeners.append(listener)

    # -- queueing ----------------------------------------------------------------
    def queue(self, op: Any, args: Any = None, meter: str | None = None,
              concentrator: str | None = None, expires_in: Any = None,
              actor: str = "", remote: str = "") -> CommandRecord:
        """Check, resolve, sign and queue; ``CommandRefused`` (audited) if not."""
        try:
            rec = self._queue(op, args, meter, concentrator, expires_in, actor)
        except CommandRefused as e:
            target = next((t for t in (meter, concentrator) if isinstance(t, str) and t), "")
            self.auditor.record(actor, "command.queue", target, "refused", remote,
                                op=op if isinstance(op, str) else repr(op)[:64],
                                reason=e.reason, detail=e.detail)
            raise
        self.auditor.record(actor, "command.queue", rec.id, "queued", remote, op=op,
                            meter=rec.meter, concentrator=rec.device, counter=rec.counter)
        log.info("command %s queued: %s %s on %s #%d by %s", rec.id, op, rec.meter,
                 rec.device, rec.counter, actor)
        for listener in self._listeners:
            try:
                listener(rec)
            except HesError as e:   # delivery is retried; queueing already succeeded
                log.warning("command %s: push failed: %s", rec.id, e)
        return rec

    def _queue(self, op: Any, args: Any, meter: str | None, concentrator: str | None,
               expires_in: Any, actor: str) -> CommandRecord:
        if not isinstance(op, str):
            raise CommandRefused(422, "unknown_op", "op must be one of " + ", ".join(
                command_args.OPS))
        if op == "update":          # the operator names a package; the HES announces its facts
            from hes_lite.firmware import FirmwareRefused, announce
            try:
                args = announce(self.store, args)
            except FirmwareRefused as e:
                raise CommandRefused(e.status, e.reason, e.detail) from None
        try:
            args = command_args.check(op, args)
            wirecmd.canonical_args(args)   # integers only, ≤ 4096 bytes
        except command_args.BadArgs as e:
            raise CommandRefused(422, "unknown_op" if op not in command_args.OPS
                                 else "bad_args", e.detail) from None
        except wirecmd.CommandError as e:
            raise CommandRefused(422, "bad_args", str(e.fields.get("why", e))) from None
        ttl = TTL if expires_in is None else expires_in
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
            raise CommandRefused(422, "bad_args", "expires_in must be 1..%d s" % MAX_TTL)
        device = self._target(op, meter, concentrator)
        now = self.clock()
        cid = "c-" + secrets.token_hex(8)
        key_id = self.signer.key_id

        def build(counter: int) -> CommandRecord:
            cmd = wirecmd.Command(op, cid, device, (meter or "") if op in command_args.METER_OPS
                                  else "", counter, int(now), int(now) + ttl, key_id, args)
            body = cmd.to_body()
            return CommandRecord(cid, device, counter, meter, op, args, now, int(now) + ttl,
                                 wirecmd.signed(body, self.signer.sign(wirecmd.DOMAIN + body)),
                                 actor)

        return self.store.queue_command(device, build)

    def _target(self, op: str, meter: str | None, concentrator: str | None) -> str:
        if meter is not None and (not isinstance(meter, str) or not meter):
            raise CommandRefused(422, "bad_args", "meter must be a non-empty string")
        if op in command_args.METER_OPS:
            if meter is None:
                raise CommandRefused(422, "bad_args", "%s needs a meter" % op)
        elif concentrator is not None:
            if not isinstance(concentrator, str) or not any(
                    c.device == concentrator for c in self.store.concentrators()):
                raise CommandRefused(404, "unknown_concentrator", str(concentrator))
            return concentrator
        elif meter is None:
            raise CommandRefused(422, "bad_args", "%s needs a meter or a concentrator" % op)
        device = self.store.meter_concentrator(meter)
        if device is None:
            raise CommandRefused(404, "unknown_meter", meter)
        return device

    # -- delivery ----------------------------------------------------------------
    def pending(self, device: str) -> list[CommandRecord]:
        """What ``device`` should get now: open, unexpired, oldest first, ≤ 16."""
        return self.store.open_commands(device, self.clock(), MAX_PENDING)

    def seal(self, device: str, recs: Sequence[CommandRecord]) -> list[bytes]:
        """Each signed command sealed afresh for ``device`` (new nonces, so a
        redelivery is a new envelope the agent's replay window accepts)."""
        if not recs:
            return []
        root = self._downlink_key(device)
        if root is None:
            log.warning("no active key for %s: %d command(s) cannot be sealed", device,
                        len(recs))
            return []
        boot, first = self.store.reserve_nonces(device, len(recs))
        return [wire.seal_command(root.root_key, device, root.epoch, boot, first + i, r.signed)
                for i, r in enumerate(recs)]

    def _downlink_key(self, device: str) -> KeyRecord | None:
        """The device's newest active key epoch it has used (a replay window
        exists for it), else its newest active one."""
        live = [k for k in self.store.keys(device) if not k.revoked]
        used = [k for k in live if self.store.replay_state(device, k.epoch) is not None]
        pick = used or live
        return max(pick, key=lambda k: k.epoch) if pick else None

    def delivered(self, ids: Sequence[str]) -> None:
        for i in self.store.mark_delivered(ids, self.clock()):
            log.info("command %s delivered", i)

    # -- the uplink: polls and results ---------------------------------------------
    def _open(self, sealed: bytes, device: str, kind: int) -> bytes:
        try:
            h = wire.header(sealed, kind)
        except wire.WireError as e:
            raise Rejected(e.reason, device) from None
        if h.device != device:
            raise Rejected("device_mismatch", device)
        rec = self.store.key(h.device, h.epoch)
        if rec is None:
            raise Rejected("unknown_key", device)
        if rec.revoked:
            raise Rejected("revoked_key", device)
        try:
            return wire.open_envelope(sealed, rec.root_key)
        except wire.WireError as e:
            raise Rejected(e.reason, device) from None

    def open_poll(self, sealed: bytes, device: str) -> None:
        """Check an idle poll (kind 4); ``Rejected`` (counted) if not authentic."""
        try:
            self._open(sealed, device, envelope.KIND_POLL)
        except Rejected as r:
            self.store.count_reject(device, r.reason, self.clock())
            raise

    def submit_result(self, sealed: bytes, device: str, counter: int | None = None,
                      ) -> dict[str, Any]:
        """Open a result (kind 3), store it once; the answer document, or
        ``Rejected`` (counted) if it is not an authentic result of a command."""
        try:
            status, rec, result = self._result(sealed, device, counter)
        except Rejected as r:
            self.store.count_reject(device, r.reason, self.clock())
            log.warning("result refused: reason=%s device=%r counter=%s", r.reason, device,
                        counter)
            raise
        self.auditor.record("device:" + device, "command.result", rec.id,
                            result["state"] if status == "accepted" else status,
                            counter=rec.counter, reason=result.get("reason"))
        return {"device": device, "counter": rec.counter, "status": status}

    def _result(self, sealed: bytes, device: str, counter: int | None,
                ) -> tuple[str, CommandRecord, dict[str, Any]]:
        payload = self._open(sealed, device, envelope.KIND_RESULT)
        try:
            doc = json.loads(payload.decode())
        except (UnicodeError, ValueError):
            raise Rejected("bad_result", device, counter) from None
        if not isinstance(doc, dict) or doc.get("state") not in ("executed", "failed") or \
                not isinstance(doc.get("counter"), int) or isinstance(doc["counter"], bool) or \
                (counter is not None and doc["counter"] != counter) or \
                not isinstance(doc.get("reason"), str | None) or \
                not isinstance(doc.get("result"), dict | None):
            raise Rejected("bad_result", device, counter)
        rec = self.store.command_at(device, doc["counter"])
        if rec is None:
            raise Rejected("unknown_command", device, doc["counter"])
        if doc.get("id") != rec.id or doc.get("op") != rec.op:
            raise Rejected("bad_result", device, doc["counter"])
        was = rec.state
        status, after = self.store.finish_command(device, rec.counter, doc["state"],
                                                  doc.get("reason"), doc.get("result"),
                                                  self.clock())
        if after is None:
            raise Rejected("unknown_command", device, doc["counter"])
        if status == "accepted" and was == "expired":
            log.warning("command %s: result arrived after the HES marked it expired; "
                        "stored (%s): the meter did what it says", rec.id, doc["state"])
        return status, after, doc

    # -- expiry --------------------------------------------------------------------
    def expire(self) -> list[CommandRecord]:
        now = self.clock()
        gone = self.store.expire_commands(now - EXPIRY_GRACE, now)
        for r in gone:
            self.auditor.record("hes", "command.expire", r.id, "expired", op=r.op,
                                meter=r.meter, concentrator=r.device, counter=r.counter)
            log.info("command %s expired undelivered or unanswered", r.id)
        return gone
