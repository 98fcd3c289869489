"""The HTTP face of HES-lite: the uplink receiver and the read API (ASGI,
Starlette). ``create_app(store, ingestor)`` returns the app; ``hes-lite
serve`` runs it under uvicorn.

Uplink: ``PUT /v1/batches/{device_id}/{seq}``, body = sealed envelope; 200
with the ack once the raw batch is durably stored, 4xx ``{"error": reason}``
otherwise. API: concentrators, meters, readings, events, health, streamed
exports, and the OpenAPI document at ``/openapi.json``.
Must not know SQL or byte layouts.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hes_lite import export
from hes_lite.api_schema import OPENAPI
from hes_lite.ingest import Ingestor, Rejected
from hes_lite.store import Store

MAX_BODY = 4 << 20
STATUS = {"unknown_key": 403, "revoked_key": 403, "replay": 409, "bad_length": 413}


def _error(reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def _times(request: Request) -> tuple[int | None, int | None]:
    q = request.query_params
    start = export.parse_time(q["from"]) if q.get("from") else None
    end = export.parse_time(q["to"]) if q.get("to") else None
    return start, end


def create_app(store: Store, ingestor: Ingestor, clock: Any = time.time) -> Starlette:
    async def put_batch(request: Request) -> Response:
        device = request.path_params["device_id"]
        seq = request.path_params["seq"]
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            await run_in_threadpool(store.count_reject, device, "bad_length", clock())
            return _error("bad_length", 413)
        body = await request.body()
        if len(body) > MAX_BODY:
            await run_in_threadpool(store.count_reject, device, "bad_length", clock())
            return _error("bad_length", 413)
        try:
            ack = await run_in_threadpool(ingestor.submit, body, device, seq)
        except Rejected as r:
            return _error(r.reason, STATUS.get(r.reason, 400))
        return JSONResponse(ack.as_dict())

    def concentrators(request: Request) -> Response:
        return JSONResponse([{
            "device": c.device, "first_seen": c.first_seen, "last_seen": c.last_seen,
            "last_seq": c.last_seq, "batches": c.batches, "backlog": c.pending,
            "meters": c.meters} for c in store.concentrators()])

    def meters(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError:
            return _error("limit must be an integer")
        return JSONResponse(store.meters(limit, q.get("after", "")))

    def readings(request: Request) -> Response:
        try:
            start, end = _times(request)
        except export.ExportError as e:
            return _error(str(e))
        meter = request.path_params["meter_id"]
        rows = [{"obis": o, "ts": ts, "value": v, "unit": u}
                for o, ts, v, u in store.readings(meter, start, end)]
        return JSONResponse({"meter": meter, "readings": rows})

    def events(request: Request) -> Response:
        try:
            start, end = _times(request)
            limit = int(request.query_params.get("limit", "1000"))
        except (export.ExportError, ValueError) as e:
            return _error(str(e))
        out = [{"meter": m, "ts": ts, "code": code, "name": name}
               for m, ts, code, name in store.events(request.query_params.get("meter"),
                                                      start, end, limit)]
        return JSONResponse(out)

    def health(request: Request) -> Response:
        now = clock()
        conc = store.concentrators()
        return JSONResponse({
            "status": "ok", "server_time": now,
            "concentrators": [{"device": c.device, "last_batch": c.last_seen,
                               "last_seq": c.last_seq, "age_s": round(now - c.last_seen, 3),
                               "backlog": c.pending} for c in conc],
            "backlog": sum(c.pending for c in conc),
            **{("readings_rows" if k == "reading_rows" else k): v
               for k, v in store.counts().items()},
            "silent_over_2h": sum(1 for c in conc if now - c.last_seen > 7200),
            "rejects": store.rejects()})

    def export_(request: Request) -> Response:
        q = request.query_params
        fmt = q.get("format", "jsonl")
        if fmt not in export.FORMATS:
            return _error("unknown format, one of " + ", ".join(export.FORMATS))
        try:
            start, end = _times(request)
        except export.ExportError as e:
            return _error(str(e))
        rows = store.rows(q.get("meter"), start, end)
        units = store.units()
        name = "readings." + fmt
        disp = {"content-disposition": f'attachment; filename="{name}"'}
        if fmt == "xlsx":
            fd, path = tempfile.mkstemp(suffix=".xlsx")
            os.close(fd)
            export.write_xlsx(path, rows, units)
            return FileResponse(path, media_type=export.MEDIA_TYPES[fmt], headers=disp,
                                background=BackgroundTask(os.unlink, path))
        body: Iterator[bytes] = export.chunks(fmt, rows, units)
        return StreamingResponse(body, media_type=export.MEDIA_TYPES[fmt], headers=disp)

    def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return Starlette(routes=[
        Route("/v1/batches/{device_id}/{seq:int}", put_batch, methods=["PUT"]),
        Route("/v1/concentrators", concentrators),
        Route("/v1/meters", meters),
        Route("/v1/meters/{meter_id}/readings", readings),
        Route("/v1/events", events),
        Route("/v1/health", health),
        Route("/v1/export", export_),
        Route("/openapi.json", openapi),
    ])
