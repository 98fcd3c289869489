"""The board side of the firmware: builds the real hardware handles from
``machine`` and the provisioned config, reports the archive's retention at
boot and runs the hourly loop. ``main.py`` (the bundle's boot stub) calls
``run()``.

Needs board hardware (``machine.UART``, ``machine.Pin``): it is the module
the build lists as hardware-only. Must not know protocols (``firmware.loop``
and ``firmware.meters`` do).

Paths are relative to the board's working directory at boot (``/`` on most
ports, ``/flash`` on the simulated board): ``config/device.json`` (the
provisioned config, docs/firmware.md), ``data/`` (archive, codec state, boot
epoch, outbox).
"""

import json
import os
import time

import machine

from agent.envelope import FileBootStore, Sealer
from firmware.archive import Archive, FileFlash
from firmware.loop import AgentLoop, Files, HttpUplink, OutboxUplink
from firmware.rs485 import Rs485

CONFIG = "config/device.json"
DATA = "data"
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0   # ports counting from 2000


def utc_now():
    return time.time() + _EPOCH_OFFSET


def _mkdirs(path):
    here = ""
    for part in path.split("/"):
        here = here + "/" + part if here else part
        try:
            os.mkdir(here)
        except OSError:
            pass


def load_config(path=CONFIG):
    with open(path) as f:
        return json.load(f)


def make_port(bus):
    kw = {"baudrate": int(bus.get("baud", 9600))}
    for k in ("tx", "rx"):
        if k in bus:
            kw[k] = bus[k]
    uart = machine.UART(bus.get("uart", 1), **kw)
    de = machine.Pin(bus["de"], machine.Pin.OUT) if "de" in bus else None
    return Rs485(uart, de, kw["baudrate"], idle=machine.idle)


def make_uplink(spec):
    kind = spec.get("kind", "outbox")
    if kind == "outbox":
        folder = spec.get("dir", DATA + "/outbox")
        _mkdirs(folder)
        up = OutboxUplink(folder, spec.get("inbox"))
        _mkdirs(up.inbox)
        return up
    if kind == "http":
        return HttpUplink(spec["url"])
    raise ValueError("unknown uplink kind %r" % kind)


def build(config, log=print):
    _mkdirs(DATA)
    arch_cfg = config.get("archive", {})
    size = int(arch_cfg.get("kb", 64)) * 1024
    archive = Archive(FileFlash(DATA + "/archive.bin", size), int(arch_cfg.get("sector", 4096)))
    log("wum: retention " + json.dumps(archive.retention()))
    sealer = Sealer(config["device_id"], bytes.fromhex(config["root_key"]),
                    FileBootStore(DATA + "/boot_epoch"), int(config.get("key_epoch", 0)))
    return AgentLoop(config, make_port(config.get("bus", {})), archive, sealer,
                     make_uplink(config.get("uplink", {})), utc_now, Files(DATA), log)


def sleep_until(ts, watch=None):
    """Wait for the next cycle in light sleep (a minute at a time), calling
    ``watch()`` at every wake."""
    while True:
        left = ts - utc_now()
        if left <= 0:
            return
        machine.lightsleep(int(min(left, 60) * 1000))
        if watch is not None:
            watch()


def updater(cfg, loop, log=print):
    """Signed commands and updates (firmware.board_commands,
    firmware.board_update) when the config has verify keys and the uplink
    can carry commands; else None."""
    if not cfg.get("verify_keys") or not hasattr(loop.uplink, "commands"):
        return None
    # imported only here: a board without commands never loads them (build.CORE ships them)
    from firmware.board_commands import BoardCommands
    from firmware.board_update import BoardUpdater
    cmds = BoardCommands(cfg, loop.sealer, loop.uplink, loop.files, utc_now, log)
    return BoardUpdater(cfg, cmds, loop.uplink, loop.files, DATA, utc_now, machine.reset,
                        log=log)


def run(cycles=None, config=None, log=print):
    """Boot: build, then cycle at every full period (``cycles`` bounds it)."""
    cfg = config or load_config()
    loop = build(cfg, log)
    upd = updater(cfg, loop, log)
    if upd is not None:
        upd.boot(loop.next_seq)
    period = int(cfg.get("period", 3600))
    n = 0
    while cycles is None or n < cycles:
        if upd is not None:
            upd.commands.take()
            upd.step()
        summary = loop.cycle()
        log("wum: cycle " + json.dumps(summary))
        if upd is not None:
            upd.commands.take()
            upd.after_cycle(summary["meters"] > 0, loop.last_acked)
            upd.step()
        n += 1
        if cycles is not None and n >= cycles:
            break
        sleep_until((int(utc_now()) // period + 1) * period,
                    upd.watch if upd is not None else None)
    return loop
