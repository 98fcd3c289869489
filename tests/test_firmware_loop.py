"""The board's agent loop (firmware.loop, portable) on CPython fakes: a fake
``machine.UART`` + DE pin wired to the real hil meter simulators (DLMS and
Modbus), a RAM flash, a fixed clock. The sealed batch opens at the HES side
with the meters' exact values; the DE pin matters; the chain of deltas
decodes in order; the archive keeps what the uplink did not get through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.batch import CodecState, decode_batch
from agent.envelope import Keyring, MemoryBootStore, Sealer, open_envelope
from firmware.archive import Archive, MemoryFlash
from firmware.loop import AgentLoop, Files, OutboxUplink
from firmware.rs485 import Rs485
from hil.dlms_meter import DlmsMeter
from hil.modbus_meter import ModbusMeter
from hil.model import MeterModel

T = 1780272000 + 86400 * 3 + 1800
KEY = bytes(range(32))


class FakePin:
    def __init__(self) -> None:
        self.level = 0
        self.toggles = 0

    def value(self, v: int) -> None:
        self.toggles += v != self.level
        self.level = v


class FakeUart:
    """Half-duplex bus: bytes written while DE is low never reach the meters."""

    def __init__(self, meters: list[Any], de: FakePin) -> None:
        self.meters, self.de, self.rx = meters, de, bytearray()
        self.dropped = 0

    def write(self, data: bytes) -> int:
        if not self.de.level:
            self.dropped += len(data)
            return len(data)
        for m in self.meters:
            for reply, _ in m.feed(bytes(data), T):
                self.rx += reply
        return len(data)

    def any(self) -> int:
        return len(self.rx)

    def read(self, n: int) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


class ListUplink:
    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.ok = ok

    def send(self, device: str, seq: int, sealed: bytes) -> bool:
        if not self.ok:
            raise OSError("link down")
        self.sent.append((seq, sealed))
        return True


def make_loop(tmp: Path, meters: list[Any], specs: list[dict[str, Any]], uplink: Any,
              de: FakePin | None = None, flash: MemoryFlash | None = None
              ) -> tuple[AgentLoop, FakeUart]:
    de = de or FakePin()
    uart = FakeUart(meters, de)
    ticks = iter(range(0, 10**9, 5))
    port = Rs485(uart, de, 9600, ticks_ms=lambda: next(ticks), ticks_diff=lambda a, b: a - b,
                 idle=lambda: None)
    cfg = {"device_id": "board-1", "meters": specs}
    arch = Archive(flash or MemoryFlash(32 * 1024), 4096)
    loop = AgentLoop(cfg, port, arch, Sealer("board-1", KEY, MemoryBootStore()), uplink,
                     lambda: T, Files(str(tmp)))
    return loop, uart


def opened(sealed: bytes, base: CodecState | None) -> Any:
    ring = Keyring()
    ring.add("board-1", KEY)
    return decode_batch(open_envelope(sealed, ring).payload, base)


@pytest.fixture()
def meters() -> tuple[list[Any], list[dict[str, Any]]]:
    ms = [DlmsMeter(MeterModel(1, 5), "1", lambda: T),
          ModbusMeter(MeterModel(2, 5), "2", lambda: T, profile="generic")]
    return ms, [{"protocol": "dlms", "address": 1}, {"protocol": "modbus", "address": 2}]


def test_a_cycle_seals_the_meters_exact_values(tmp_path: Path, meters: Any) -> None:
    up = ListUplink()
    loop, _ = make_loop(tmp_path, *meters, up)
    out = loop.cycle()
    assert out["meters"] == 2 and out["failed"] == 0 and out["keyframe"]
    (seq, sealed), = up.sent
    batch = opened(sealed, None)
    assert batch.seq == seq == 1
    got = {m: vals for m, _, vals in batch.readings}
    for index in (1, 2):
        model = MeterModel(index, 5)
        want = model.registers(T)
        vals = got[model.serial]
        assert set(vals) == set(want)
        for obis, v in want.items():
            assert vals[obis] == pytest.approx(v, abs=1e-9), obis
    assert loop.archive.unacked() == []


def test_without_the_de_pin_the_meters_never_hear(tmp_path: Path, meters: Any) -> None:
    up = ListUplink()
    de = FakePin()
    loop, uart = make_loop(tmp_path, *meters, up, de)
    loop.port.de = None                     # a loop that forgets the transceiver direction
    out = loop.cycle()
    assert out["meters"] == 0 and out["failed"] == 2 and uart.dropped > 0
    statuses = {m: s for m, s, _ in opened(up.sent[0][1], None).statuses}
    assert statuses == {"rs485:dlms:1": "failed", "rs485:modbus:2": "failed"}


def test_deltas_chain_and_unsent_batches_stay_archived(tmp_path: Path, meters: Any) -> None:
    up = ListUplink(ok=False)
    flash = MemoryFlash(32 * 1024)
    loop, _ = make_loop(tmp_path, *meters, up, flash=flash)
    loop.cycle()
    loop.cycle()
    assert loop.archive.unacked() == [1, 2]
    # reboot: a new loop over the same flash and files continues the chain
    up.ok = True
    loop2, _ = make_loop(tmp_path, *meters, up, flash=flash)
    assert loop2.next_seq == 3
    loop2.cycle()
    assert [s for s, _ in up.sent] == [1, 2, 3] and loop2.archive.unacked() == []
    state = None
    for _, sealed in up.sent:
        b = opened(sealed, state)
        state = state or CodecState("board-1")
        state.advance(b)
    assert state is not None and state.seq == 3


def test_outbox_uplink_keeps_batches_until_acked(tmp_path: Path, meters: Any) -> None:
    box = tmp_path / "outbox"
    box.mkdir()
    loop, _ = make_loop(tmp_path, *meters, OutboxUplink(str(box)))
    loop.cycle()
    assert (box / "board-1-1.bin").exists() and loop.archive.unacked() == [1]
    (box / "acked").write_text("1\n")
    loop.flush()
    assert loop.archive.unacked() == [] and not (box / "board-1-1.bin").exists()
