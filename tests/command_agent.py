"""The agent's side of the command wire, for HES tests: the real formats
(``agent/envelope.py``, ``agent/command.py``, the batch codec), none of the
agent's executor. Opens and verifies what the HES sends (downlink key, a
persisted-style replay window, Ed25519 under the HES's public key), and
seals batches, polls and results with one uplink Sealer, as the agent does."""

from __future__ import annotations

import json

from agent import command, envelope
from hes_lite import wire


class AgentSide:
    def __init__(self, device: str, root: bytes, verify_key: bytes | None = None,
                 epoch: int = 0, boot: int = 0) -> None:
        self.device = device
        self.root = root
        self.epoch = epoch
        self.verify_key = verify_key
        self.keyring = envelope.Keyring(purpose=envelope.PURPOSE_DOWNLINK)
        self.keyring.add(device, root, epoch)
        self.window = envelope.ReplayWindow()
        self.sealer = envelope.Sealer(device, root, envelope.MemoryBootStore(boot), epoch)
        self.state: bytes | None = None
        self.seq = 0

    def open(self, sealed: bytes | str) -> command.Command:
        """Open (kind 2, downlink key, replay window) then verify; raises the
        agent's EnvelopeError / CommandError like the agent would refuse."""
        data = bytes.fromhex(sealed) if isinstance(sealed, str) else sealed
        opened = envelope.open_envelope(data, self.keyring, self.window)
        assert opened.header.kind == envelope.KIND_COMMAND
        assert self.verify_key is not None
        return command.verify(opened.payload, [self.verify_key], self.device)

    def batch(self, rows: dict | None = None) -> tuple[int, bytes]:
        self.seq += 1
        rows = rows or {"%s-m1" % self.device: [(1780272000 + 3600 * self.seq,
                                                  {"1.0.1.8.0.255": self.seq})]}
        data, self.state = wire.encode(self.device, self.seq, rows, base=self.state)
        return self.seq, self.sealer.seal(data, envelope.KIND_BATCH)

    def poll(self, payload: bytes = b"") -> bytes:
        return self.sealer.seal(payload, envelope.KIND_POLL)

    def result(self, cmd: command.Command, state: str = "executed", reason: str | None = None,
               result: dict | None = None, **override) -> bytes:
        doc = {"id": cmd.id, "counter": cmd.counter, "op": cmd.op, "state": state,
               "reason": reason, "result": result, "ts": 1780272000}
        doc.update(override)
        return self.sealer.seal(json.dumps(doc).encode(), envelope.KIND_RESULT)


DISCONNECTED = {"output_state": False, "control_state": "disconnected"}

TARIFF = {"name": "TOU-2026", "activate": 1782864000,
          "seasons": [{"name": "all", "start": "01-01", "week": "w"}],
          "weeks": [{"name": "w", "days": [1, 1, 1, 1, 1, 2, 2]}],
          "days": [{"id": 1, "actions": [{"start": "00:00", "tariff": 2},
                                         {"start": "07:00", "tariff": 1},
                                         {"start": "23:00:00", "tariff": 2}]},
                   {"id": 2, "actions": [{"start": "00:00", "tariff": 2}]}]}

# TARIFF as the HES signs it: normalised by agent.command_args (times HH:MM:SS)
TARIFF_SIGNED = dict(TARIFF, days=[
    {"id": 1, "actions": [{"start": "00:00:00", "tariff": 2}, {"start": "07:00:00", "tariff": 1},
                          {"start": "23:00:00", "tariff": 2}]},
    {"id": 2, "actions": [{"start": "00:00:00", "tariff": 2}]}])
