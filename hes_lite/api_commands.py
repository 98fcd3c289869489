"""HTTP routes of the uplink (batches) and, once a command service is given,
of the downlink: the pending commands in every batch ack, the idle poll,
results, and the operators' command API.

Owns the HTTP shape of those routes only; the ingest pipeline and the
command service do the work. Uplink routes are authenticated by their
envelopes (``hes_lite.api`` passes them through unguarded).
Must not know SQL or byte layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hes_lite.api import Handlers, error
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import Store

MAX_BODY = 4 << 20
STATUS = {"unknown_key": 403, "revoked_key": 403, "replay": 409, "bad_length": 413}


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


def uplink_routes(store: Store, ingestor: Ingestor, commands: Any,
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
        return JSONResponse(ack.as_dict())

    return {("PUT", "/v1/batches/{device_id}/{seq}"): put_batch}


def command_routes(commands: Any) -> Handlers:
    return {}
