"""``hes-lite command …`` and ``hes-lite keys command-key``: commands from the
command line.

Owns their argument parsing and printing. Like ``keys``, the CLI works on
the store directly with the HES's own authority (audited as ``cli:<user>``):
it checks, signs and queues; a running ``hes-lite serve`` on the same
database delivers (MQTT push within a second, or the next batch ack or
poll over HTTP). ``--wait`` follows the command in the store until it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from hes_lite import command_args, export
from hes_lite.audit import cli_actor
from hes_lite.cli_admin import audit_file_option, auditor
from hes_lite.commands import TERMINAL, CommandRefused, CommandService, as_object
from hes_lite.signing import CommandSigner
from hes_lite.store import Store, open_store

AddDb = Callable[[argparse.ArgumentParser], None]
WAIT_POLL = 0.2   # s between looks at the store while --wait (UI polling, not protocol timing)


def _json_object(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("not JSON: %s" % e) from None
    if not isinstance(doc, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return doc


def _setting(text: str) -> tuple[list[str], int]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError("expected SECTION.KEY=INTEGER")
    return key.split("."), int(value)


def _common(p: argparse.ArgumentParser, db: AddDb, meter_required: bool = True) -> None:
    p.add_argument("--meter", required=meter_required, metavar="ID",
                   help="the target meter (its concentrator is the one that reports it)")
    p.add_argument("--args", type=_json_object, metavar="JSON",
                   help="the op's arguments as a JSON object (docs/command-format.md), merged "
                        "over the options")
    p.add_argument("--expires-in", type=int, metavar="S",
                   help="seconds the command stays deliverable: 1..3600 (default 3600)")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="block until the command ends; exit 0 only if it executed")
    p.add_argument("--json", action="store_true", help="print the command object")
    db(p)
    audit_file_option(p)


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db: AddDb) -> None:
    c = sub.add_parser("command", help="queue signed commands and follow them",
                       description="Queue a command for a meter's concentrator (signed with the "
                                   "HES's command key; `hes-lite serve` on the same database "
                                   "delivers it), or show commands. Prints the command id, or "
                                   "with --json the command object.")
    cs = c.add_subparsers(dest="command_action", metavar="ACTION", required=True)
    for op, text in (("disconnect", "open the meter's relay (DLMS class 70)"),
                     ("reconnect", "close the meter's relay"),
                     ("time", "set the meter clock from the concentrator's clock")):
        p = cs.add_parser(op, help=text)
        _common(p, db)
        p.set_defaults(func=cmd_queue, op=op)
    r = cs.add_parser("read", help="read registers or a load-profile range now")
    r.add_argument("--register", action="append", metavar="OBIS", help="a register (repeat)")
    r.add_argument("--from", dest="start", type=export.parse_time, metavar="T",
                   help="load profile from (epoch seconds or RFC 3339)")
    r.add_argument("--to", dest="end", type=export.parse_time, metavar="T",
                   help="load profile to")
    _common(r, db)
    r.set_defaults(func=cmd_queue, op="read")
    t = cs.add_parser("tariff", help="write a time-of-use calendar (DLMS activity calendar)")
    t.add_argument("--calendar", metavar="FILE", help="the calendar as a JSON file "
                   "({name, activate, seasons, weeks, days}: docs/command-format.md)")
    _common(t, db)
    t.set_defaults(func=cmd_queue, op="tariff")
    lim = cs.add_parser("limit", help="set the consumption limiter (DLMS class 71)")
    for flag, key in (("--threshold-normal", "threshold_normal"),
                      ("--threshold-emergency", "threshold_emergency"),
                      ("--min-over", "min_over_threshold_duration"),
                      ("--min-under", "min_under_threshold_duration")):
        lim.add_argument(flag, dest=key, type=int, metavar="N")
    _common(lim, db)
    lim.set_defaults(func=cmd_queue, op="limit")
    cf = cs.add_parser("config", help="change concentrator settings remotely")
    cf.add_argument("--concentrator", metavar="ID", help="the target concentrator")
    cf.add_argument("--set", action="append", type=_setting, metavar="SECTION.KEY=N",
                    help="e.g. schedule.period=1800 or retention.days=30 (repeat)")
    _common(cf, db, meter_required=False)
    cf.set_defaults(func=cmd_queue, op="config")
    up = cs.add_parser("update", help="announce a published update package to a concentrator",
                       description="The concentrator fetches the package (hes-lite firmware "
                                   "publish), verifies its release signature, installs it next "
                                   "to the running version and switches; the result says "
                                   "whether the new version reported healthy or was rolled "
                                   "back (docs/firmware.md).")
    up.add_argument("--concentrator", required=True, metavar="ID", help="the target concentrator")
    up.add_argument("--package", required=True, metavar="ID",
                    help="a published package's id (hes-lite firmware list)")
    _common(up, db, meter_required=False)
    up.set_defaults(func=cmd_queue, op="update")
    s = cs.add_parser("send", help="queue any op with --op and --args")
    s.add_argument("--op", required=True, choices=command_args.OPS)
    s.add_argument("--concentrator", metavar="ID", help="for config: the target concentrator")
    _common(s, db, meter_required=False)
    s.set_defaults(func=cmd_queue)
    st = cs.add_parser("status", help="show a command, or a meter's commands")
    st.add_argument("id", nargs="?", help="a command id")
    st.add_argument("--meter", metavar="ID", help="the commands of this meter, newest first")
    st.add_argument("--json", action="store_true", help="command object(s) as JSON")
    db(st)
    st.set_defaults(func=cmd_status)


def _args(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.op == "read":
        if a.register:
            out["registers"] = a.register
        if a.start is not None or a.end is not None:
            out["profile"] = {"from": a.start, "to": a.end}
    elif a.op == "tariff" and getattr(a, "calendar", None):
        with open(a.calendar, encoding="utf-8") as f:
            out = _json_object(f.read())
    elif a.op == "limit":
        out = {k: getattr(a, k) for k in command_args.LIMIT_KEYS
               if getattr(a, k, None) is not None}
    elif a.op == "update":
        out = {"package": a.package}
    elif a.op == "config":
        for path, value in getattr(a, "set", None) or []:
            node = out
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = value
    out.update(a.args or {})
    return out


def _service(args: argparse.Namespace, store: Store) -> CommandService:
    audit = auditor(args, store)
    return CommandService(store, CommandSigner(store, audit, cli_actor()), audit)


def cmd_queue(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    commands = _service(args, store)
    try:
        rec = commands.queue(args.op, _args(args), args.meter,
                             getattr(args, "concentrator", None), args.expires_in, cli_actor())
    except CommandRefused as e:
        print("hes-lite: command refused: %s%s" % (e.reason, ": " + e.detail if e.detail
                                                    else ""), file=sys.stderr)
        return 2
    if args.wait is not None:
        deadline = time.monotonic() + args.wait
        while rec.state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(WAIT_POLL)
            commands.expire()
            rec = store.command(rec.id) or rec
    print(json.dumps(as_object(rec)) if args.json else rec.id)
    if args.wait is not None:
        return 0 if rec.state == "executed" else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if not args.id and not args.meter:
        print("hes-lite: command status needs a command id or --meter", file=sys.stderr)
        return 2
    store = open_store(args.db)
    if args.id:
        rec = store.command(args.id)
        if rec is None:
            print("hes-lite: no command %s" % args.id, file=sys.stderr)
            return 1
        recs = [rec]
    else:
        recs = store.commands(args.meter)
    if args.json:
        objs = [as_object(r) for r in recs]
        print(json.dumps(objs[0] if args.id else objs))
        return 0
    for r in recs:
        print("\t".join((r.id, r.state, r.op, r.meter or "-", r.device,
                         export.rfc3339(int(r.created)), export.rfc3339(int(r.updated)),
                         r.reason or "", json.dumps(r.result) if r.result else "")).rstrip())
    return 0


def cmd_command_key(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    print(CommandSigner(store, auditor(args, store), cli_actor()).public.hex())
    return 0
