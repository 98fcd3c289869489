"""``hes-lite tokens`` and ``hes-lite audit``: API tokens and the audit log
from the command line.

Owns their argument parsing and printing. The CLI works on the store
directly, with the HES's own authority (whoever can read the database can
do anything anyway); each change is audited as ``cli:<user>``. A token is
printed once, alone on stdout, at creation, and never again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from hes_lite import auth, export
from hes_lite.audit import Auditor, cli_actor
from hes_lite.store import NameTaken, Store, open_store

AddDb = Callable[[argparse.ArgumentParser], None]


def audit_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audit-file", metavar="FILE",
                   help="also append each audit entry as a JSON line to FILE "
                        "(default: $HES_LITE_AUDIT_FILE; the database keeps them anyway)")


def auditor(args: argparse.Namespace, store: Store) -> Auditor:
    return Auditor(store, getattr(args, "audit_file", None))


def add_parsers(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                db: AddDb) -> None:
    t = sub.add_parser("tokens", help="manage API tokens",
                       description="API tokens: random, shown once, stored as SHA-256 digests. "
                                   "Roles: viewer (read, export) < operator (+ commands) < "
                                   "admin (+ tokens, keys, audit).")
    ts = t.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    a = ts.add_parser("add", help="create a token; prints it alone on stdout, once")
    a.add_argument("name", help="a name for the token (who or what uses it)")
    a.add_argument("--role", required=True, choices=auth.ROLES)
    db(a)
    audit_file_option(a)
    a.set_defaults(func=cmd_tokens_add)
    ls = ts.add_parser("list", help="list tokens (names, roles, dates; never a token)")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    db(ls)
    ls.set_defaults(func=cmd_tokens_list)
    r = ts.add_parser("revoke", help="revoke a token (effective at its next request)")
    r.add_argument("name")
    db(r)
    audit_file_option(r)
    r.set_defaults(func=cmd_tokens_revoke)

    au = sub.add_parser("audit", help="show the audit log",
                        description="Failed authentications, token and key changes, commands "
                                    "and their outcomes: when, who, what, from where.")
    db(au)
    au.add_argument("--since", type=export.parse_time, metavar="T",
                    help="entries from this time (epoch seconds or RFC 3339)")
    au.add_argument("--limit", type=int, metavar="N", help="only the last N entries")
    au.add_argument("--json", action="store_true", help="one JSON object per line")
    au.set_defaults(func=cmd_audit)


def cmd_tokens_add(args: argparse.Namespace) -> int:
    import sys
    import time

    store = open_store(args.db)
    try:
        token = auth.create(store, args.name, args.role, time.time())
    except NameTaken:
        print("hes-lite: a token named %r exists (names are never reused)" % args.name,
              file=sys.stderr)
        return 1
    auditor(args, store).record(cli_actor(), "token.add", args.name, role=args.role)
    print(token)
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    rows = [{"name": t.name, "role": t.role, "created": export.rfc3339(int(t.created)),
             "revoked": None if t.revoked is None else export.rfc3339(int(t.revoked))}
            for t in open_store(args.db).tokens()]
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        state = "active" if r["revoked"] is None else "revoked %s" % r["revoked"]
        print("%s\t%s\t%s\t%s" % (r["name"], r["role"], r["created"], state))
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    import time

    store = open_store(args.db)
    done = store.revoke_token(args.name, time.time())
    auditor(args, store).record(cli_actor(), "token.revoke", args.name,
                                "ok" if done else "absent")
    print("%s: %s" % (args.name, "revoked" if done else "no such active token"))
    return 0 if done else 1


def cmd_audit(args: argparse.Namespace) -> int:
    for e in open_store(args.db).audit_log(args.since, args.limit):
        if args.json:
            print(json.dumps(e.as_dict(), sort_keys=True))
            continue
        detail = " ".join("%s=%s" % kv for kv in sorted(e.detail.items()))
        print("\t".join((export.rfc3339(int(e.ts)), e.actor, e.action, e.target, e.outcome,
                         e.remote or "-", detail)).rstrip())
    return 0
