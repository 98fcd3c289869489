"""The ``wum firmware`` and ``wum flash`` subcommands (registered by
agent/cli.py): build device bundles, flash a MicroPython board.

Owns the command lines only; the work is in ``firmware.build`` and
``firmware.flash``. Provisioning, ``--ssh`` and the update-package actions
are in ``firmware.update_cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firmware import FirmwareError, update_cli


def register(sub: Any) -> None:
    fw = sub.add_parser("firmware", help="build device bundles",
                        description="Device images: MicroPython bundles (.mpy) and Linux "
                                    "bundles (wheel, config template, systemd unit).")
    fs = fw.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    b = fs.add_parser("build", help="build a bundle with its manifest.json",
                      description="micropython: the board definition's modules compiled with "
                                  "mpy-cross into package folders, main.py and manifest.json "
                                  "(version, per-file SHA-256, total size). linux: the wheel, "
                                  "agent.toml.example, wum.service and manifest.json. Prints "
                                  'one JSON line {"out", "target", "board", "files", "total_size"}.')
    b.add_argument("--target", required=True, choices=("micropython", "linux"))
    b.add_argument("--board", default=None,
                   help="board definition (firmware/boards/NAME.json or a path); "
                        "micropython only")
    b.add_argument("--out", required=True, type=Path, help="bundle folder (replaced)")
    b.add_argument("--source", type=Path, default=None,
                   help="project source to build the wheel from (linux; default: this checkout)")
    b.set_defaults(func=cmd_build)

    f = sub.add_parser("flash", help="copy a bundle and a config onto a device",
                       description="--port: a MicroPython board over its REPL (mpremote); the "
                                   "bundle's manifest is verified first, then every file's "
                                   "SHA-256 is computed on the board and compared. --ssh: a "
                                   "Linux concentrator: the linux bundle into an A/B slot, "
                                   "the launcher, the config and the systemd unit, the "
                                   "service enabled and started, every file verified.")
    f.add_argument("--port", default=None, help="the board's serial port or pyserial URL")
    f.add_argument("--bundle", required=True, type=Path, help="a bundle folder (wum firmware build)")
    f.add_argument("--config", required=True, type=Path,
                   help="a provisioned config folder (holds device.json)")
    f.add_argument("--slot", default="a", choices=("a", "b"),
                   help="bundle folder on the board (default a)")
    update_cli.add_ssh_options(f)
    f.set_defaults(func=cmd_flash)
    update_cli.register(sub, fs)


def cmd_build(args: argparse.Namespace) -> int:
    from firmware import build
    try:
        if args.target == "micropython":
            if not args.board:
                print("wum firmware build: --board NAME is needed for micropython (known: %s)"
                      % ", ".join(build.boards()), file=sys.stderr)
                return 2
            m = build.build_micropython(args.board, args.out)
        else:
            m = build.build_linux(args.out, args.source)
    except FirmwareError as e:
        print("wum firmware build: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), "target": m["target"], "board": m["board"],
                      "files": len(m["files"]), "total_size": m["total_size"]}))
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from firmware.flash import flash
    if bool(args.port) == bool(args.ssh):
        print("wum flash: give --port (a MicroPython board) or --ssh USER@HOST (a Linux "
              "concentrator)", file=sys.stderr)
        return 2
    if args.ssh:
        return update_cli.cmd_flash_ssh(args)
    try:
        out = flash(args.port, args.bundle, args.config, args.slot,
                    log=lambda s: print(s, file=sys.stderr))
    except FirmwareError as e:
        print("wum flash: refused: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0
