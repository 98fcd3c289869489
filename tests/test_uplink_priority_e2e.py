"""End to end over HTTP with a real ``hes-lite serve``: an agent (``wum run``,
simulated Modbus meters on a pty, accelerated clock) archives through a link
outage with ``[uplink] max_batch_bytes`` small; when the HES is back, the
energy registers of every hour arrive before any hour's instantaneous values,
every batch within the cap, and every reading exactly once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from agent.archive import Archive
from agent.envelope import peek
from agent.priority import ENERGY, INSTANT, register_tier
from hes_lite import wire
from hes_lite.store import open_store
from tests.agent_rig import (
    District,
    HesProcess,
    archived_rows,
    backlog,
    drain,
    free_port,
    hes_rows,
    start_agent,
)

T0 = 1795910400 + 1200
CAP = 700


@pytest.mark.slow
def test_outage_backlog_energy_of_every_hour_first(tmp_path):
    key = os.urandom(32).hex()
    hes = HesProcess(tmp_path / "hes.db", "DC-TEST", key, port=free_port())
    d = District([["modbus"] * 4], t0=T0, speed=7200).start()      # 2 simulated hours a second
    archive = tmp_path / "archive.db"
    try:
        cfg = d.config(tmp_path / "agent.toml", archive, uplink=hes.url, key=key,
                       transport="http")
        # no idle poll: its flush at start would race the first cycle's backfill, and
        # the order holds over what the archive holds when each batch is built
        text = cfg.read_text().replace('transport = "http"', 'transport = "http"\n'
                                       'max_batch_bytes = %d' % CAP)
        cfg.write_text(text.replace("[[bus]]", "[commands]\npoll_interval = 0\n[[bus]]", 1))
        agent = start_agent(cfg, d.clock)
        time.sleep(5)                       # the link is down: nothing listens on the port
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        waiting = backlog(archive)
        assert waiting["batches_pending"] == 1 and waiting["rows_unbatched"] > 0
        arc = Archive(str(archive)).open()
        hours = {ts // 3600 for (ts,) in arc.conn.execute(
            "SELECT ts FROM reading WHERE batch IS NULL")}
        arc.close()
        assert len(hours) >= 6, "too short an outage to show anything"
        hes.start()
        drain(cfg, d.clock, archive)
        batches = _hes_batches(tmp_path / "hes.db", bytes.fromhex(key))
        assert all(len(sealed) <= CAP for _, sealed, _ in batches)
        # after the batch that was waiting: energy of every hour, then instantaneous values
        later = batches[1:]
        energy = [s for s, _, d in later if _tiers(d) & {ENERGY}]
        instant = [s for s, _, d in later if _tiers(d) & {INSTANT}]
        assert len(energy) >= 2 and len(instant) >= 2
        assert max(energy) <= min(instant), [(s, sorted(_tiers(d))) for s, _, d in later]
        energy_hours = {ts // 3600 for s, _, d in later for _, ts, codes, _ in d.rows
                        if s <= min(instant) and any(register_tier(k) == ENERGY for k in codes)}
        assert hours <= energy_hours | {ts // 3600 for _, _, d in batches[:1]
                                        for _, ts, _, _ in d.rows}
        # every reading exactly once: no cell in two batches, all of them at the HES
        cells = [(m, ts, k) for _, _, d in batches for m, ts, codes, _ in d.rows for k in codes]
        assert len(cells) == len(set(cells))
        want = archived_rows(archive)
        got, dup = hes_rows(hes.export_jsonl())
        assert dup == 0 and got == want
        assert len(cells) == sum(len(v) for v in want.values())
    finally:
        d.stop()
        hes.stop()


def _tiers(d: wire.Decoded) -> set[int]:
    return {register_tier(k) for _, _, codes, _ in d.rows for k in codes}


def _hes_batches(db, key: bytes) -> list[tuple[int, bytes, wire.Decoded]]:
    """The batches the HES stored, in seq order, decoded along their codec chain."""
    store = open_store(str(db))
    try:
        raws = store.raw_range("DC-TEST", 0, 1 << 31)
    finally:
        store.close()
    out = []
    state = None
    for b in raws:
        sealed = bytes(b.payload)
        assert peek(sealed).device == "DC-TEST"
        dec = wire.decode(wire.open_envelope(sealed, key), state)
        state = dec.codec_state or state
        out.append((b.seq, sealed, dec))
    return out
