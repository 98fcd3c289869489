"""``hes-lite firmware``: publish signed update packages, list them.

Owns the command lines only (``hes_lite.firmware`` checks and stores). Like
``keys``, it works on the store directly with the HES's own authority,
audited as ``cli:<user>``. Announcing a package to a concentrator is
``hes-lite command update --concentrator ID --package ID``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from hes_lite import export, firmware
from hes_lite.audit import cli_actor
from hes_lite.cli_admin import audit_file_option, auditor
from hes_lite.store import open_store

AddDb = Callable[[argparse.ArgumentParser], None]


def _public(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError("a release public key is 64 hex digits")
    return key


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db: AddDb) -> None:
    fw = sub.add_parser("firmware", help="publish and list signed update packages",
                        description="Update packages (wum firmware package + wum firmware "
                                    "sign) stored at the HES, downloaded by concentrators in "
                                    "ranges after an update command announces them.")
    fs = fw.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    p = fs.add_parser("publish", help="store a signed package; prints its record as JSON",
                      description="Checks the package's format and that it is signed (with "
                                  "--release-key: that the signature and payload verify under "
                                  "one of the keys) and stores it. Prints {id, sha256, size, "
                                  "target, board, version, key_id, created, actor, new}.")
    p.add_argument("file", type=Path, help="a package (.wup)")
    p.add_argument("--release-key", action="append", type=_public, default=[], metavar="HEX",
                   help="a release public key the package must verify under (repeat)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="store an unsigned package (a test bench; devices refuse it anyway)")
    db(p)
    audit_file_option(p)
    p.set_defaults(func=cmd_publish)
    ls = fs.add_parser("list", help="published packages, newest first")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    db(ls)
    ls.set_defaults(func=cmd_list)


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as e:
        print("hes-lite firmware publish: cannot read %s: %s" % (args.file, e.strerror),
              file=sys.stderr)
        return 2
    store = open_store(args.db)
    try:
        rec, new = firmware.publish(store, data, cli_actor(), auditor(args, store),
                                    args.release_key, args.allow_unsigned)
    except firmware.FirmwareRefused as e:
        print("hes-lite firmware publish: refused: %s" % e.detail, file=sys.stderr)
        return 1
    print(json.dumps(dict(rec.as_dict(), new=new)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    recs = open_store(args.db).firmwares()
    if args.json:
        print(json.dumps([r.as_dict() for r in recs]))
        return 0
    for r in recs:
        print("\t".join((r.id, r.target, r.board, r.version, r.key_id or "unsigned",
                         str(r.size), export.rfc3339(int(r.created)))))
    return 0
