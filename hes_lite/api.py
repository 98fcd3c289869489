"""The HTTP face of HES-lite (ASGI, Starlette). ``create_app(store,
ingestor, ...)`` returns the app; ``hes-lite serve`` runs it under uvicorn.

Owns routing and access: every route is declared in
``hes_lite.api_schema.ROUTES`` with the role it needs, and wrapped here by
``_guard`` — envelope-authenticated uplink routes pass straight through,
``open`` ones answer anyone (more to a token), the rest need ``Authorization:
Bearer <token>``: 401 (``WWW-Authenticate: Bearer``) without a valid one, 403
for a role too low, each refusal audited. The read API and admin routes
live here; the uplink and command routes in ``hes_lite.api_commands``.
Key material never leaves through any route (fingerprints only).
Must not know SQL or byte layouts.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hes_lite import export
from hes_lite.api_schema import ENVELOPE, OPEN, OPENAPI, ROUTES
from hes_lite.audit import Auditor
from hes_lite.auth import Authenticator, AuthError
from hes_lite.ingest import Ingestor
from hes_lite.store import Store, fingerprint

Endpoint = Callable[[Request], Response | Awaitable[Response]]
Handlers = dict[tuple[str, str], Endpoint]
REALM = 'Bearer realm="hes-lite"'


def error(reason: str, status: int = 400, **extra: object) -> JSONResponse:
    return JSONResponse({"error": reason, **extra}, status_code=status)


def _times(request: Request) -> tuple[int | None, int | None]:
    q = request.query_params
    start = export.parse_time(q["from"]) if q.get("from") else None
    end = export.parse_time(q["to"]) if q.get("to") else None
    return start, end


def _int(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name)
    return default if not text else int(text)


def _denied(e: AuthError) -> JSONResponse:
    if e.status == 403:
        return JSONResponse({"error": "forbidden", "need": e.fields.get("need")}, 403,
                            headers={"www-authenticate": REALM + ', error="insufficient_scope"'})
    challenge = REALM if e.reason == "missing" else REALM + ', error="invalid_token"'
    return JSONResponse({"error": "unauthenticated"}, 401,
                        headers={"www-authenticate": challenge})


def _guard(auth: Authenticator, method: str, need: str, endpoint: Endpoint) -> Endpoint:
    is_async = inspect.iscoroutinefunction(endpoint)

    async def call(request: Request) -> Response:
        header = request.headers.get("authorization")
        request.state.principal = None
        if need != ENVELOPE and not (need == OPEN and header is None):
            remote = request.client.host if request.client else ""
            try:
                request.state.principal = await run_in_threadpool(
                    auth.check, header, "viewer" if need == OPEN else need, request.url.path,
                    method, remote)
            except AuthError as e:
                return _denied(e)
        out = endpoint(request) if is_async else await run_in_threadpool(endpoint, request)
        if inspect.isawaitable(out):
            out = await out
        assert isinstance(out, Response)
        return out

    return call


def actor(request: Request) -> str:
    p = request.state.principal
    return p.actor if p is not None else "anonymous"


def remote(request: Request) -> str:
    return request.client.host if request.client else ""


def read_routes(store: Store, clock: Callable[[], float]) -> Handlers:
    def concentrators(request: Request) -> Response:
        return JSONResponse([{
            "device": c.device, "first_seen": c.first_seen, "last_seen": c.last_seen,
            "last_seq": c.last_seq, "batches": c.batches, "backlog": c.pending,
            "meters": c.meters} for c in store.concentrators()])

    def meters(request: Request) -> Response:
        try:
            limit = _int(request, "limit", None)
        except ValueError:
            return error("limit must be an integer")
        return JSONResponse(store.meters(limit, request.query_params.get("after", "")))

    def readings(request: Request) -> Response:
        try:
            start, end = _times(request)
        except export.ExportError as e:
            return error(str(e))
        meter = request.path_params["meter_id"]
        rows = [{"obis": o, "ts": ts, "value": v, "unit": u}
                for o, ts, v, u in store.readings(meter, start, end)]
        return JSONResponse({"meter": meter, "readings": rows})

    def events(request: Request) -> Response:
        try:
            start, end = _times(request)
            limit = _int(request, "limit", 1000) or 1000
        except (export.ExportError, ValueError) as e:
            return error(str(e))
        out = [{"meter": m, "ts": ts, "code": code, "name": name}
               for m, ts, code, name in store.events(request.query_params.get("meter"),
                                                      start, end, limit)]
        return JSONResponse(out)

    def health(request: Request) -> Response:
        now = clock()
        if request.state.principal is None:  # open: alive, and nothing about the fleet
            return JSONResponse({"status": "ok", "server_time": now})
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
            return error("unknown format, one of " + ", ".join(export.FORMATS))
        try:
            start, end = _times(request)
        except export.ExportError as e:
            return error(str(e))
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

    return {("GET", "/v1/concentrators"): concentrators, ("GET", "/v1/meters"): meters,
            ("GET", "/v1/meters/{meter_id}/readings"): readings, ("GET", "/v1/events"): events,
            ("GET", "/v1/health"): health, ("GET", "/v1/export"): export_}


def admin_routes(store: Store, auditor: Auditor, clock: Callable[[], float]) -> Handlers:
    def tokens(request: Request) -> Response:
        return JSONResponse([{"name": t.name, "role": t.role,
                              "created": export.rfc3339(int(t.created)),
                              "revoked": None if t.revoked is None else
                              export.rfc3339(int(t.revoked))} for t in store.tokens()])

    def revoke_token(request: Request) -> Response:
        name = request.path_params["name"]
        done = store.revoke_token(name, clock())
        auditor.record(actor(request), "token.revoke", name, "ok" if done else "absent",
                       remote(request))
        if not done:
            return error("unknown_token", 404)
        return JSONResponse({"name": name, "revoked": True})

    def keys(request: Request) -> Response:
        return JSONResponse([{"device": k.device, "epoch": k.epoch,
                              "fingerprint": fingerprint(k.root_key),
                              "state": "revoked" if k.revoked else "active",
                              "created": export.rfc3339(int(k.created))} for k in store.keys()])

    def audit(request: Request) -> Response:
        try:
            since, _ = _times(request)
            limit = _int(request, "limit", 1000)
        except (export.ExportError, ValueError) as e:
            return error(str(e))
        return JSONResponse([e.as_dict() for e in store.audit_log(since, limit)])

    return {("GET", "/v1/tokens"): tokens, ("DELETE", "/v1/tokens/{name}"): revoke_token,
            ("GET", "/v1/keys"): keys, ("GET", "/v1/audit"): audit}


def _starlette_path(path: str) -> str:
    return path.replace("{seq}", "{seq:int}").replace("{counter}", "{counter:int}")


def create_app(store: Store, ingestor: Ingestor, clock: Any = time.time,
               auditor: Auditor | None = None, commands: Any = None) -> Starlette:
    """The app. ``commands``: the ``hes_lite.commands.CommandService`` the
    receivers share (``hes-lite serve`` hooks the MQTT push to it); one is
    made when not given."""
    from hes_lite import api_commands, api_firmware
    from hes_lite.commands import CommandService
    from hes_lite.signing import CommandSigner

    auditor = auditor if auditor is not None else Auditor(store, clock=clock)
    if commands is None:
        commands = CommandService(store, CommandSigner(store, auditor, clock=clock), auditor,
                                  clock)
    auth = Authenticator(store, auditor, clock)
    handlers: Handlers = {**read_routes(store, clock), **admin_routes(store, auditor, clock),
                          **api_commands.uplink_routes(store, ingestor, commands, clock),
                          **api_commands.command_routes(commands),
                          **api_firmware.provisioning_routes(store, auditor, commands.signer,
                                                             clock),
                          **api_firmware.firmware_routes(store, clock)}
    routes = []
    for (method, path), endpoint in handlers.items():
        need = ROUTES[(method, path)]   # a route missing from the table is a bug: KeyError
        routes.append(Route(_starlette_path(path), _guard(auth, method, need, endpoint),
                            methods=[method]))

    def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    routes.append(Route("/openapi.json", openapi))
    return Starlette(routes=routes)
