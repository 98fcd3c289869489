"""HTTP routes of the uplink (batches) and, once a command service is given,
of the downlink: the pending commands in every batch ack, the idle poll,
results, and the operators' command API.

Owns the HTTP shape of those routes only; the ingest pipeline and the
command service do the work. Uplink routes are authenticated by their
envelopes (``hes_lite.api`` passes them through unguarded).
Must not know SQL or byte layouts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hes_lite import HesError
from hes_lite.api import Handlers, actor, error, remote
from hes_lite.commands import CommandRefused, CommandService, as_object
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import CommandRecord, Store

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20
STATUS = {"unknown_key": 403, "revoked_key": 403, "replay": 409, "bad_length": 413,
          "unknown_command": 404}


async def _body(request: Request, store: Store, device: str,
                clock: Callable[[], float]) -> bytes | None:
    """The body, or None (counted as ``bad_length``) when it is too big."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        await run_in_threadpool(store.count_reject, device, "bad_length", clock())
        return None
    body = await request.body()
    if len(body) > MAX_BODY:
        await run_in_threadpool(store.count_reject, device, "bad_length", clock())
        return None
    return body


def _sent(commands: CommandService, recs: list[CommandRecord]) -> BackgroundTask | None:
    """Mark commands delivered once the answer carrying them went out."""
    ids = [r.id for r in recs]
    return BackgroundTask(commands.delivered, ids) if ids else None


def _commands_for(commands: CommandService, device: str,
                  ) -> tuple[list[str], list[CommandRecord]]:
    """The device's pending commands, sealed; none (logged) if that fails: the
    answer they ride on must go out, and they go with the next one."""
    try:
        recs = commands.pending(device)
        sealed = commands.seal(device, recs)
    except HesError as e:
        log.warning("pending commands of %s not sent: %s", device, e)
        return [], []
    return [s.hex() for s in sealed], recs[:len(sealed)]


def uplink_routes(store: Store, ingestor: Ingestor, commands: CommandService,
                  clock: Callable[[], float]) -> Handlers:
    async def put_batch(request: Request) -> Response:
        device = request.path_params["device_id"]
        seq = request.path_params["seq"]
        body = await _body(request, store, device, clock)
        if body is None:
            return error("bad_length", 413)
        try:
            ack = await run_in_threadpool(ingestor.submit, body, device, seq)
        except Rejected as r:
            return error(r.reason, STATUS.get(r.reason, 400))
        hexes, recs = await run_in_threadpool(_commands_for, commands, device)
        return JSONResponse({**ack.as_dict(), "commands": hexes},
                            background=_sent(commands, recs))

    async def post_poll(request: Request) -> Response:
        device = request.path_params["device_id"]
        body = await _body(request, store, device, clock)
        if body is None:
            return error("bad_length", 413)
        try:
            await run_in_threadpool(commands.open_poll, body, device)
        except Rejected as r:
            return error(r.reason, STATUS.get(r.reason, 400))
        hexes, recs = await run_in_threadpool(_commands_for, commands, device)
        return JSONResponse({"device": device, "commands": hexes, "server_time": clock()},
                            background=_sent(commands, recs))

    async def put_result(request: Request) -> Response:
        device = request.path_params["device_id"]
        counter = request.path_params["counter"]
        body = await _body(request, store, device, clock)
        if body is None:
            return error("bad_length", 413)
        try:
            answer = await run_in_threadpool(commands.submit_result, body, device, counter)
        except Rejected as r:
            return error(r.reason, STATUS.get(r.reason, 400))
        return JSONResponse(answer)

    return {("PUT", "/v1/batches/{device_id}/{seq}"): put_batch,
            ("POST", "/v1/poll/{device_id}"): post_poll,
            ("PUT", "/v1/results/{device_id}/{counter}"): put_result}


REQUEST_KEYS = ("meter", "op", "args", "concentrator", "expires_in")


def command_routes(commands: CommandService) -> Handlers:
    async def post(request: Request) -> Response:
        try:
            doc = json.loads(await request.body())
        except (ValueError, UnicodeError):
            return error("bad_json", 400)
        if not isinstance(doc, dict):
            return error("bad_json", 400)
        extra = sorted(set(doc) - set(REQUEST_KEYS))
        if extra:
            return error("bad_args", 422, detail="unknown field(s) " + ", ".join(extra))
        try:
            rec = await run_in_threadpool(
                lambda: commands.queue(doc.get("op"), doc.get("args"), doc.get("meter"),
                                       doc.get("concentrator"), doc.get("expires_in"),
                                       actor(request), remote(request)))
        except CommandRefused as e:
            return error(e.reason, e.status, detail=e.detail)
        return JSONResponse(as_object(rec), status_code=202)

    def one(request: Request) -> Response:
        rec = commands.store.command(request.path_params["command_id"])
        if rec is None:
            return error("unknown_command", 404)
        return JSONResponse(as_object(rec))

    def many(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit") or 100)
        except ValueError:
            return error("limit must be an integer")
        recs = commands.store.commands(q.get("meter"), q.get("concentrator"), limit)
        return JSONResponse([as_object(r) for r in recs])

    return {("POST", "/v1/commands"): post, ("GET", "/v1/commands"): many,
            ("GET", "/v1/commands/{command_id}"): one}
