"""The ``hes-lite`` command line: serve, keys, ingest, export (tokens and audit
in ``hes_lite.cli_admin``, commands in ``hes_lite.cli_commands``).

Owns argument parsing and printing; each command is a thin shell over the
store, the ingest pipeline, the exports and the HTTP app. Keys are never
printed (``keys list`` shows a fingerprint; ``keys command-key`` the public
command key only) and never logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence

from hes_lite import HesError, export
from hes_lite.audit import cli_actor
from hes_lite.cli_admin import add_parsers as add_admin_parsers
from hes_lite.cli_admin import audit_file_option, auditor
from hes_lite.cli_commands import add_parsers as add_command_parsers
from hes_lite.cli_commands import cmd_command_key
from hes_lite.cli_firmware import add_parsers as add_firmware_parsers
from hes_lite.cli_partitions import Upkeep
from hes_lite.cli_partitions import add_parsers as add_partition_parsers
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import fingerprint, open_store

log = logging.getLogger("hes_lite.cli")
INGEST_GROUP = 256  # batches per durable transaction in `hes-lite ingest`
MQTT_GROUP = 32     # at most this many MQTT uploads that arrived together per transaction


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="URL",
                   help="database: sqlite:///path/to/hes.db or a plain path "
                        "or postgresql://user[:password]@host[:port]/database")


def _key_hex(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("key must be hex") from None
    if len(key) != 32:
        raise argparse.ArgumentTypeError("a root key is 32 bytes (64 hex digits)")
    return key


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hes-lite",
        description="HES-lite: the head end. Receives sealed batches from concentrators, "
                    "verifies, decrypts and stores them; serves the API and exports.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "serve", help="run the HTTP uplink receiver and API",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the uplink, authenticated by the envelopes in its bodies:\n"
                    "  PUT /v1/batches/{device}/{seq}, POST /v1/poll/{device},\n"
                    "  PUT /v1/results/{device}/{counter}\n"
                    "and the API, which needs 'Authorization: Bearer TOKEN' (hes-lite tokens "
                    "add):\n  /v1/concentrators, /v1/meters, /v1/meters/{id}/readings, "
                    "/v1/events,\n  /v1/export, /v1/commands, /v1/tokens, /v1/keys, /v1/audit "
                    "(see /openapi.json);\n/v1/health answers anyone, with details for a "
                    "token.",
        epilog="TLS: listen on 127.0.0.1 (the default) behind a reverse proxy that "
               "terminates TLS\n(nginx: 'proxy_pass http://127.0.0.1:8080;' with "
               "'proxy_set_header X-Forwarded-For\n$remote_addr;' - uvicorn trusts "
               "X-Forwarded-For from 127.0.0.1 only), or let hes-lite serve TLS\nitself with "
               "--tls-cert and --tls-key. Tokens travel in every request: never expose\n"
               "the API on a public address without TLS.")
    _db(s)
    s.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="listen address (default 127.0.0.1:8080, this host only; "
                        "0.0.0.0:PORT for every interface)")
    s.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate "
                                                      "(chain) file; needs --tls-key")
    s.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    s.add_argument("--mqtt", metavar="URL",
                   help="also receive batches from an MQTT 5 broker: "
                        "mqtt(s)://[user:pass@]host[:port][?client_id=ID&group=NAME] "
                        "(shared subscription $share/NAME/wum/up/+/+, acks on wum/ack/DEVICE; "
                        "a client_id makes the session persistent). Several workers: "
                        "run one serve per worker with the same --db postgresql://... and "
                        "?group=NAME, each with its own client_id")
    s.add_argument("--retention-months", type=int, metavar="N",
                   help="PostgreSQL: every hour, detach readings partitions older than the "
                        "last N months (hes-lite partitions --keep-months N); the coming "
                        "months' partitions are made ahead of need in any case")
    audit_file_option(s)
    s.set_defaults(func=cmd_serve)

    k = sub.add_parser("keys", help="manage concentrator keys",
                       description="The key registry: one root key per device and key epoch.")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    a = ks.add_parser("add", help="register a device's root key (key epoch 0 by default)")
    a.add_argument("device")
    a.add_argument("--key", required=True, type=_key_hex, help="root key, 64 hex digits")
    a.add_argument("--epoch", type=int, default=0, help="key epoch (default 0)")
    _db(a)
    audit_file_option(a)
    a.set_defaults(func=cmd_keys_add)
    ls = ks.add_parser("list", help="list keys (fingerprints only, never the key)")
    ls.add_argument("device", nargs="?")
    _db(ls)
    ls.set_defaults(func=cmd_keys_list)
    r = ks.add_parser("revoke", help="revoke every key epoch of a device")
    r.add_argument("device")
    _db(r)
    audit_file_option(r)
    r.set_defaults(func=cmd_keys_revoke)
    ro = ks.add_parser("rotate", help="add the next key epoch for a device (older epochs "
                                      "stay valid until revoked)")
    ro.add_argument("device")
    ro.add_argument("--key", required=True, type=_key_hex, help="new root key, 64 hex digits")
    _db(ro)
    audit_file_option(ro)
    ro.set_defaults(func=cmd_keys_rotate)
    ck = ks.add_parser("command-key", help="print the HES's public command key (64 hex; "
                                           "created on first use), for the agents' "
                                           "[commands] verify_key")
    _db(ck)
    audit_file_option(ck)
    ck.set_defaults(func=cmd_command_key)

    i = sub.add_parser("ingest", help="ingest batch files as if uploaded",
                       description="Ingest envelope files (or every file under a directory). "
                                   'Prints {"accepted": n, "duplicates": n, "rejected": '
                                   '{"<reason>": n}}; exits 1 when anything was rejected.')
    i.add_argument("paths", nargs="+", metavar="FILES|DIR")
    i.add_argument("--workers", type=int, default=0, metavar="N",
                   help="decode in N processes while verifying and storing (bulk loads; "
                        "default 0: decode inline)")
    _db(i)
    i.set_defaults(func=cmd_ingest)

    e = sub.add_parser("export", help="export readings to a file",
                       description="Streamed export. jsonl: one line per meter per hour, "
                                   '{"meter", "ts" (RFC 3339 UTC), "values": {obis: number}}.')
    _db(e)
    e.add_argument("--format", required=True, choices=export.FORMATS)
    e.add_argument("--meter", help="only this meter")
    e.add_argument("--from", dest="start", type=export.parse_time,
                   help="from this time (epoch seconds or RFC 3339), inclusive")
    e.add_argument("--to", dest="end", type=export.parse_time,
                   help="to this time (epoch seconds or RFC 3339), inclusive")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="output file, - = stdout")
    e.set_defaults(func=cmd_export)
    add_admin_parsers(sub, _db)
    add_command_parsers(sub, _db)
    add_firmware_parsers(sub, _db)
    add_partition_parsers(sub, _db)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hes_lite.api import create_app
    from hes_lite.commands import CommandService
    from hes_lite.dispatch import Dispatcher
    from hes_lite.signing import CommandSigner
    host, _, port = args.http.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if bool(args.tls_cert) != bool(args.tls_key):
        print("hes-lite: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if not args.tls_cert and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("serving plain HTTP on %s: API tokens cross the network in clear; "
                    "use --tls-cert/--tls-key or a TLS reverse proxy", host)
    store = open_store(args.db)
    audit = auditor(args, store)
    if args.retention_months is not None:
        if args.retention_months < 1:
            raise HesError("--retention-months must be at least 1")
        store.partitions()   # refuses a store without partitions, before serving
    upkeep = Upkeep(store, args.retention_months, audit).start()
    ingestor = Ingestor(store)
    commands = CommandService(store, CommandSigner(store, audit), audit)
    n = ingestor.recover()
    if n:
        log.warning("decoded %d stored batches left undecoded by the last run", n)
    receiver = None
    dispatcher = Dispatcher(commands)
    if args.mqtt:
        from hes_lite.mqtt_receiver import MqttReceiver, _endpoint

        def handle(device: str, seq: int, payload: bytes) -> dict[str, object]:
            (answer,) = handle_many([(device, seq, payload)])
            if isinstance(answer, Exception):
                raise answer
            return answer

        def handle_many(items: Sequence[tuple[str, int, bytes]]
                        ) -> list[dict[str, object] | Exception]:
            """Uploads that arrived together: one durable transaction."""
            out = ingestor.submit_many([(p, d, s) for d, s, p in items])
            for device in sorted({r.device for r in out if not isinstance(r, Rejected)}):
                try:
                    dispatcher.redeliver(device)
                except HesError as e:   # the batch is stored: its ack must go out anyway
                    log.warning("redelivery of commands to %s failed: %s", device, e)
            return [r if isinstance(r, Rejected) else r.as_dict() for r in out]

        group = _endpoint(args.mqtt)["group"] or "hes-lite"
        def result(device: str, counter: int, payload: bytes) -> dict[str, object]:
            return commands.submit_result(payload, device, counter)

        receiver = MqttReceiver(args.mqtt, handle, shared_group=group, results=result,
                                handle_many=handle_many, group=MQTT_GROUP)
        dispatcher = Dispatcher(commands, receiver)   # before start: handle uses it
        receiver.start(timeout=30)
    dispatcher.start()
    try:
        uvicorn.run(create_app(store, ingestor, auditor=audit, commands=commands), host=host,
                    port=int(port), log_level="warning", ssl_certfile=args.tls_cert,
                    ssl_keyfile=args.tls_key)
    finally:
        upkeep.stop()
        dispatcher.stop()
        if receiver is not None:
            receiver.stop()
        store.close()
    return 0


def cmd_keys_add(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    store.add_key(args.device, args.epoch, args.key, time.time())
    auditor(args, store).record(cli_actor(), "key.add", args.device, epoch=args.epoch,
                                fingerprint=fingerprint(args.key))
    print(f"{args.device} epoch {args.epoch} {fingerprint(args.key)}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    for k in open_store(args.db).keys(args.device):
        state = "revoked" if k.revoked else "active"
        print(f"{k.device}\t{k.epoch}\t{fingerprint(k.root_key)}\t{state}\t"
              f"{export.rfc3339(int(k.created))}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    n = store.revoke(args.device)
    auditor(args, store).record(cli_actor(), "key.revoke", args.device,
                                "ok" if n else "absent", keys=n)
    print(f"{args.device}: {n} key(s) revoked")
    return 0 if n else 1


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    epochs = [k.epoch for k in store.keys(args.device)]
    if not epochs:
        print(f"hes-lite: no key for {args.device}; use keys add", file=sys.stderr)
        return 1
    epoch = max(epochs) + 1
    store.add_key(args.device, epoch, args.key, time.time())
    auditor(args, store).record(cli_actor(), "key.rotate", args.device, epoch=epoch,
                                fingerprint=fingerprint(args.key))
    print(f"{args.device} epoch {epoch} {fingerprint(args.key)}")
    return 0


def _files(paths: list[str]) -> Iterator[str]:
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                for name in sorted(names):
                    yield os.path.join(root, name)
        else:
            yield p


def _groups(paths: list[str]) -> Iterator[list[tuple[bytes, str | None, int | None]]]:
    group: list[tuple[bytes, str | None, int | None]] = []
    for path in _files(paths):
        with open(path, "rb") as f:
            group.append((f.read(), None, None))
        if len(group) >= INGEST_GROUP:
            yield group
            group = []
    if group:
        yield group


def cmd_ingest(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    ingestor = Ingestor(store)
    ingestor.recover()
    counts = {"accepted": 0, "duplicates": 0}
    rejected: dict[str, int] = {}
    for results in ingestor.ingest_stream(_groups(args.paths), args.workers):
        for r in results:
            if isinstance(r, Rejected):
                rejected[r.reason] = rejected.get(r.reason, 0) + 1
            else:
                counts["accepted" if r.status == "accepted" else "duplicates"] += 1
    print(json.dumps({**counts, "rejected": dict(sorted(rejected.items()))}))
    return 1 if rejected else 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    rows = store.rows(args.meter, args.start, args.end)
    units = store.units()
    if args.output == "-":
        if args.format == "xlsx":
            print("hes-lite: xlsx needs a file (-o FILE)", file=sys.stderr)
            return 2
        for piece in export.chunks(args.format, rows, units):
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
    else:
        export.write(args.format, args.output, rows, units)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
    except HesError as e:
        print(f"hes-lite: {e}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
