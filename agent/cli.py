"""The ``wum`` command line: the concentrator's CLI.

Each subcommand lives in its own module that exposes ``register(subparsers)``;
this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, description) — each module's register() adds its subcommands.
COMMAND_MODULES = [
    "agent.demo",        # demo
    "agent.daemon",      # run, status, archive
    "agent.field",       # scan, read, dissect
    "agent.uplink_cli",  # uplink simulate
    "agent.mesh_cli",    # mesh neighbours|routes|ping|stats
    "firmware.cli",      # firmware build, flash
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wum",
        description="Smart-meter data concentrator: reads meters over RS-485 "
        "(DLMS/COSEM, IEC 62056-21, Modbus RTU), archives, uploads to HES-lite.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc: int = args.func(args)
    return rc



if __name__ == "__main__":
    sys.exit(main())
