"""The command lines of provisioning and signed updates: ``wum provision``,
``wum firmware keygen|package|sign|inspect``, and ``wum flash --ssh``
(registered by ``firmware.cli``).

Owns argument parsing and printing; the work is in ``firmware.provision``,
``firmware.package_tools`` and ``firmware.flash_ssh``. Keys are written to
owner-only files and never printed (``--show-keys`` aside).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent import AgentError
from firmware import FirmwareError


def register(sub: Any, fs: Any) -> None:
    """``sub``: wum's subcommands; ``fs``: the ``wum firmware`` actions."""
    p = sub.add_parser(
        "provision", help="give a device its identity and keys, register it at the HES",
        description="Generates the device's root key (256 random bits, never shared), "
                    "registers it at the HES (POST /v1/devices: an admin token), fetches the "
                    "HES's public command key, and writes DIR (0700): agent.toml and device.key "
                    "for a Linux concentrator, device.json for a board, identity.json, and "
                    "mesh.key with the district's mesh key (--mesh-key-file: read, or created "
                    "there for the district's first device). Every file 0600; keys are never "
                    "printed unless --show-keys. Prints a JSON summary.")
    p.add_argument("--device-id", required=True, metavar="ID")
    p.add_argument("--hes", required=True, metavar="URL", help="the HES API (http(s)://host:port)")
    p.add_argument("--token", default=os.environ.get("WUM_HES_TOKEN"), metavar="TOKEN",
                   help="an admin API token (default: $WUM_HES_TOKEN)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="the config folder to create (must not exist, or be empty)")
    p.add_argument("--board", metavar="NAME", help="a board definition: its bus in device.json")
    p.add_argument("--meter", action="append", default=[], metavar="PROTOCOL:ADDRESS[:PROFILE]",
                   help="a meter on the bus (repeat); none: the agent discovers them")
    p.add_argument("--port", default="/dev/ttyUSB0", help="the RS-485 port in agent.toml")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--uplink-url", metavar="URL", help="where the device uploads (default --hes)")
    p.add_argument("--archive", default="/var/lib/wum/archive.db", metavar="PATH",
                   help="the agent's archive in agent.toml")
    p.add_argument("--release-key", action="append", default=[], metavar="HEX",
                   help="the utility's release public key that signs updates (repeat)")
    p.add_argument("--mesh-key-file", type=Path, metavar="FILE",
                   help="the district's mesh network key (created there if absent)")
    p.add_argument("--show-keys", action="store_true",
                   help="also print the root key and mesh key (they are in DIR anyway)")
    p.set_defaults(func=cmd_provision)

    k = fs.add_parser("keygen", help="a new release key (the utility's, for signing updates)",
                      description="Writes a new Ed25519 release key (64 hex, 0600, never "
                                  "overwritten) and prints its public key and key id.")
    k.add_argument("--out", required=True, type=Path, metavar="FILE")
    k.set_defaults(func=cmd_keygen)
    pk = fs.add_parser("package", help="a bundle into an (unsigned) update package",
                       description="Verifies the bundle's manifest and writes the package "
                                   "(docs/firmware.md, 'Update packages'). Sign it next.")
    pk.add_argument("--bundle", required=True, type=Path, metavar="DIR")
    pk.add_argument("--out", required=True, type=Path, metavar="FILE")
    pk.set_defaults(func=cmd_package)
    s = fs.add_parser("sign", help="sign an update package with a release key",
                      description="Signs PACKAGE (in place, or to --out) with the release key "
                                  "in FILE (Ed25519 over the header, which holds every file's "
                                  "SHA-256). Devices trust only their [update] release_key.")
    s.add_argument("--key", required=True, type=Path, metavar="FILE")
    s.add_argument("package", type=Path)
    s.add_argument("--out", type=Path, metavar="FILE")
    s.set_defaults(func=cmd_sign)
    i = fs.add_parser("inspect", help="what a package says; with --release-key, verify it")
    i.add_argument("package", type=Path)
    i.add_argument("--release-key", action="append", metavar="HEX")
    i.set_defaults(func=cmd_inspect)


def add_ssh_options(f: argparse.ArgumentParser) -> None:
    f.add_argument("--ssh", metavar="USER@HOST",
                   help="a Linux concentrator: install the linux bundle over ssh, enable and "
                        "start the service, verify every file's SHA-256")
    f.add_argument("--root", default="/", metavar="DIR",
                   help="--ssh: install under DIR instead of / (a staged image)")
    f.add_argument("--remote-python", default="python3", metavar="PY",
                   help="--ssh: the concentrator's Python 3 (default python3)")
    f.add_argument("--service", default="wum", help="--ssh: the systemd unit's name")
    f.add_argument("--user", default=None, metavar="NAME",
                   help="--ssh: the user the service runs as (default: the unit's, wum); it "
                        "gets the config, the slots and the data folder")
    f.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="--ssh: an option for ssh (repeat), e.g. -oBatchMode=yes")


def cmd_flash_ssh(args: argparse.Namespace) -> int:
    from firmware.flash_ssh import flash_ssh
    try:
        out = flash_ssh(args.ssh, args.bundle, args.config, args.root, args.remote_python,
                        args.service, ["ssh", *args.ssh_option],
                        log=lambda s: print(s, file=sys.stderr), user=args.user)
    except FirmwareError as e:
        print("wum flash: refused: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from firmware.provision import provision
    if not args.token:
        print("wum provision: give --token (an admin token) or set WUM_HES_TOKEN",
              file=sys.stderr)
        return 2
    if not args.release_key:
        print("wum provision: no --release-key: the device will refuse every update until "
              "[update] release_key is set", file=sys.stderr)
    if args.mesh_key_file is None:
        print("wum provision: no --mesh-key-file: the device gets no mesh network key",
              file=sys.stderr)
    try:
        out = provision(args.device_id, args.hes, args.token, args.out, board=args.board,
                        meters=args.meter, release_keys=args.release_key,
                        mesh_key_file=args.mesh_key_file, uplink_url=args.uplink_url,
                        archive=args.archive, port=args.port, baud=args.baud,
                        show_keys=args.show_keys)
    except FirmwareError as e:
        print("wum provision: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.update_package import key_id
    from firmware.package_tools import keygen
    try:
        public = keygen(args.out)
    except FirmwareError as e:
        print("wum firmware keygen: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps({"key_file": str(args.out), "public": public.hex(),
                      "key_id": key_id(public)}))
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from firmware.package_tools import pack
    try:
        h = pack(args.bundle, args.out)
    except (FirmwareError, AgentError) as e:
        print("wum firmware package: refused: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), "target": h.target, "board": h.board,
                      "version": h.version, "files": len(h.files),
                      "size": args.out.stat().st_size, "signed": False}))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from agent.update_package import file_sha256
    from firmware.package_tools import load_secret, sign
    try:
        h = sign(args.package, load_secret(args.key), args.out)
    except (FirmwareError, AgentError, OSError) as e:
        print("wum firmware sign: %s" % e, file=sys.stderr)
        return 1
    out = args.out or args.package
    digest, size = file_sha256(str(out))
    print(json.dumps({"out": str(out), "version": h.version, "key_id": h.key_id,
                      "sha256": digest, "size": size}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from firmware.package_tools import inspect, public_hex
    try:
        keys = [public_hex(k) for k in args.release_key] if args.release_key else None
        out = inspect(args.package, keys)
    except (FirmwareError, AgentError, OSError) as e:
        print("wum firmware inspect: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(out, indent=1))
    return 0 if out.get("verified", True) else 3
