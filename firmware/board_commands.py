"""Signed commands on a board: open, verify, commit, hand to the op, answer.

Portable (MicroPython; tested under CPython too). Owns the order of checks
of docs/command-format.md on a board: open the kind-2 envelope under the
device's downlink key with a persisted replay window, verify the command
(``agent.command.verify``: the provisioned ``verify_keys``, this device
only), refuse a counter at or below the last one accepted (a redelivery of
a finished command gets its result again), **commit the counter durably
before anything runs**, fail an expired command, then hand it to the op's
handler. Every command that verified ends with exactly one result (kind 3,
sealed with the board's uplink sealer) handed to the uplink's
``send_result``; results wait in the state file until it takes them.

A board executes ``update`` (``firmware.board_update`` registers it); every
other op fails ``unsupported`` (a board reads meters; relays, calendars and
limiters stay with Linux concentrators for now). A handler returns the
result, raises ``Failed(reason)``, or returns ``DEFERRED`` and calls
``finish`` later (an update proves itself after a reboot).

State: ``commands.json`` in the data folder (``{"last", "window",
"results": {counter: doc}, "sent": {counter: doc}}``: results waiting, and
the last few handed over, sent again when the HES delivers their command
again — it had not got them), replaced atomically.
Must not know meters, packages or how bytes travel.
"""

import json

from agent.command import CommandError, verify
from agent.envelope import (
    KIND_COMMAND,
    KIND_RESULT,
    PURPOSE_DOWNLINK,
    EnvelopeError,
    Keyring,
    ReplayWindow,
    open_envelope,
)
from firmware import FirmwareError

STATE = "commands.json"
DEFERRED = "deferred"
KEEP_DONE = 16


class Failed(FirmwareError):
    """The command cannot be executed; ``reason`` is its result's reason."""

    def __init__(self, reason):
        super().__init__(reason, reason=reason)


class BoardCommands:
    """``config``: the provisioned device.json; ``sealer``: the board's
    uplink sealer; ``files``: the loop's ``Files`` (atomic small files);
    ``clock()``: UTC epoch seconds."""

    def __init__(self, config, sealer, uplink, files, clock, log=None):
        self.device = config["device_id"]
        self.keyring = Keyring(purpose=PURPOSE_DOWNLINK)
        self.keyring.add(self.device, bytes.fromhex(config["root_key"]),
                         int(config.get("key_epoch", 0)))
        self.verify_keys = [bytes.fromhex(k) for k in config.get("verify_keys", [])]
        self.revoked = [bytes.fromhex(k) for k in config.get("revoked_keys", [])]
        self.sealer = sealer
        self.uplink = uplink
        self.files = files
        self.clock = clock
        self.log = log or (lambda *a: None)
        self.handlers = {}
        self.refused = {}
        self.state = {"last": 0, "window": None, "results": {}, "sent": {}, "running": None}
        raw = files.load(STATE)
        if raw:
            try:
                doc = json.loads(raw)
                if isinstance(doc, dict):
                    self.state.update(doc)
            except ValueError:
                self.log("commands: state unreadable, starting afresh")

    def save(self):
        self.files.save(STATE, json.dumps(self.state).encode())

    def known(self, counter):
        """The command ``counter`` has a result (sent or waiting)."""
        return str(counter) in self.state["results"] or str(counter) in self.state["sent"]

    # -- arriving -------------------------------------------------------------
    def take(self):
        """Receive what the uplink brought, then send waiting results."""
        get = getattr(self.uplink, "commands", None)
        if get is not None:
            for sealed in get():
                self.receive(sealed)
        self.flush()

    def _refuse(self, reason, detail):
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.log("command refused: %s (%s)" % (reason, detail))
        return "refused:" + reason

    def receive(self, sealed):
        """One sealed command -> ``accepted``, ``executed``, ``failed``,
        ``duplicate`` or ``refused:<reason>``; never raises on bad input."""
        try:
            opened = open_envelope(sealed, self.keyring)
        except EnvelopeError as e:
            return self._refuse("bad_envelope", str(e))
        h = opened.header
        if h.kind != KIND_COMMAND:
            return self._refuse("bad_envelope", "kind %d" % h.kind)
        try:
            window = ReplayWindow.from_bytes(bytes.fromhex(self.state["window"])) \
                if self.state["window"] else ReplayWindow()
        except (EnvelopeError, ValueError):
            window = ReplayWindow()
        try:
            window.check(h.boot, h.counter, h.device)
            replay = False
        except EnvelopeError:
            replay = True
        try:
            cmd = verify(opened.payload, self.verify_keys, self.device, self.revoked)
        except CommandError as e:
            return self._refuse(e.fields.get("reason", "malformed"), str(e))
        if not replay:
            window.accept(h.boot, h.counter)
            self.state["window"] = window.to_bytes().hex()
        if cmd.counter <= self.state["last"]:
            done = self.state["results"].get(str(cmd.counter)) or \
                self.state["sent"].get(str(cmd.counter))
            if (done is not None and done["id"] == cmd.id and done["op"] == cmd.op) or \
                    (done is None and cmd.counter == self.state.get("running")):
                if done is not None:            # delivered again: the HES lacks the result
                    self.state["results"][str(cmd.counter)] = done
                self.save()
                self.flush()
                return "duplicate"
            self.save()
            return self._refuse("replayed", "counter %d" % cmd.counter)
        if replay:
            return self._refuse("bad_envelope", "replayed envelope")
        self.state["last"] = cmd.counter
        self.state["running"] = cmd.counter
        self.save()                         # committed before anything runs
        self.log("command %s accepted: %s (counter %d)" % (cmd.id, cmd.op, cmd.counter))
        if self.clock() > cmd.expires:
            return self.finish(cmd.counter, cmd.id, cmd.op, "failed", "expired")
        handler = self.handlers.get(cmd.op)
        if handler is None:
            return self.finish(cmd.counter, cmd.id, cmd.op, "failed",
                               "unsupported: a board executes update only")
        try:
            result = handler(cmd)
        except Failed as e:
            return self.finish(cmd.counter, cmd.id, cmd.op, "failed", e.reason)
        if result == DEFERRED:
            return "accepted"
        return self.finish(cmd.counter, cmd.id, cmd.op, "executed", None, result)

    # -- results --------------------------------------------------------------
    def finish(self, counter, cid, op, state, reason=None, result=None):
        """Record the one result of command ``counter`` and try to send it."""
        if self.known(counter):
            return "duplicate"
        self.state["results"][str(counter)] = {
            "id": cid, "counter": counter, "op": op, "state": state, "reason": reason,
            "result": result, "ts": int(self.clock())}
        if self.state.get("running") == counter:
            self.state["running"] = None
        self.save()
        self.log("command %s (counter %d) %s%s" % (cid, counter, state,
                                                    ": " + reason if reason else ""))
        self.flush()
        return state

    def flush(self):
        send = getattr(self.uplink, "send_result", None)
        if send is None:
            return
        for key in sorted(self.state["results"], key=int):
            doc = self.state["results"][key]
            sealed = self.sealer.seal(json.dumps(doc).encode(), KIND_RESULT)
            try:
                if not send(self.device, doc["counter"], sealed):
                    break
            except OSError as e:
                self.log("result of command %s not sent: %s" % (doc["id"], e))
                break
            del self.state["results"][key]
            self.state["sent"][key] = doc
            for old in sorted(self.state["sent"], key=int)[:-KEEP_DONE]:
                del self.state["sent"][old]
            self.save()
