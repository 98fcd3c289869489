"""HTTP routes of provisioning and firmware: registering a device's root
key (admin), the HES's public command key (for the devices' config),
the published update packages (list, and the bytes with HTTP ranges, for
token holders), and a device's envelope-authenticated fetch of a range.

Owns the HTTP shape of those routes only (``hes_lite.firmware`` does the
work; the access each needs is in ``hes_lite.api_schema.ROUTES``). Every
registration is audited; key material never leaves (fingerprints only;
the command key's public half is public).
Must not know SQL or byte layouts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hes_lite import firmware
from hes_lite.api import Handlers, actor, error, remote
from hes_lite.audit import Auditor
from hes_lite.signing import CommandSigner
from hes_lite.store import Store, StoreError, fingerprint

log = logging.getLogger(__name__)
MAX_REQUEST = 4096
ID_MAX = 64


def _device_id(v: object) -> str | None:
    if not isinstance(v, str) or not 1 <= len(v.encode()) <= ID_MAX or not v.isprintable() \
            or any(c.isspace() or c == "/" for c in v):
        return None
    return v


def provisioning_routes(store: Store, auditor: Auditor, signer: CommandSigner,
                        clock: Callable[[], float]) -> Handlers:
    async def register(request: Request) -> Response:
        raw = await request.body()
        try:
            doc = json.loads(raw) if len(raw) <= MAX_REQUEST else None
        except (ValueError, UnicodeError):
            doc = None
        if not isinstance(doc, dict):
            return error("bad_json", 400)
        extra = sorted(set(doc) - {"device", "root_key"})
        device = _device_id(doc.get("device"))
        try:
            key = bytes.fromhex(doc["root_key"]) if isinstance(doc.get("root_key"), str) else b""
        except ValueError:
            key = b""
        if extra or device is None or len(key) != 32:
            return error("bad_args", 422, detail="give {device: 1..64 printable characters "
                         "without spaces or '/', root_key: 64 hex}" +
                         (" (unknown: %s)" % ", ".join(extra) if extra else ""))
        return await run_in_threadpool(_register, device, key, request)

    def _register(device: str, key: bytes, request: Request) -> Response:
        if store.keys(device):
            auditor.record(actor(request), "device.register", device, "refused",
                           remote(request), reason="device_exists")
            return error("device_exists", 409, detail="%s has a key already: revoke it or "
                         "rotate (hes-lite keys rotate)" % device)
        try:
            store.add_key(device, 0, key, clock())
        except StoreError:
            return error("device_exists", 409)
        auditor.record(actor(request), "device.register", device, "ok", remote(request),
                       epoch=0, fingerprint=fingerprint(key))
        log.info("device %s registered by %s", device, actor(request))
        return JSONResponse({"device": device, "epoch": 0, "fingerprint": fingerprint(key)},
                            status_code=201)

    def command_key(request: Request) -> Response:
        return JSONResponse({"public": signer.public.hex(), "key_id": signer.key_id.hex()})

    return {("POST", "/v1/devices"): register, ("GET", "/v1/command-key"): command_key}


def firmware_routes(store: Store, clock: Callable[[], float]) -> Handlers:
    def listing(request: Request) -> Response:
        return JSONResponse([r.as_dict() for r in store.firmwares()])

    def download(request: Request) -> Response:
        pid = request.path_params["package_id"]
        rec = store.firmware(pid)
        if rec is None:
            return error("unknown_package", 404)
        try:
            rng = firmware.parse_range(request.headers.get("range"), rec.size)
        except firmware.FirmwareRefused:
            return Response(status_code=416, headers={"content-range": "bytes */%d" % rec.size})
        first, last = rng if rng is not None else (0, rec.size - 1)
        data = store.firmware_range(pid, first, last - first + 1) or b""
        headers = {"accept-ranges": "bytes", "etag": '"%s"' % rec.sha256,
                   "content-disposition": 'attachment; filename="wum-%s-%s.wup"'
                                          % (rec.board, rec.version)}
        if rng is None:
            return Response(data, media_type="application/octet-stream", headers=headers)
        headers["content-range"] = "bytes %d-%d/%d" % (first, last, rec.size)
        return Response(data, 206, media_type="application/octet-stream", headers=headers)

    async def fetch(request: Request) -> Response:
        pid = request.path_params["package_id"]
        body = await request.body()
        if len(body) > MAX_REQUEST:
            return error("bad_length", 413)
        return await run_in_threadpool(_fetch, pid, body)

    def _fetch(pid: str, body: bytes) -> Response:
        try:
            device, offset, length = firmware.open_fetch(store, body, pid)
        except firmware.FirmwareRefused as e:
            who = e.detail if e.status == 403 else ""
            store.count_reject(who, "fetch_" + e.reason, clock())
            log.warning("firmware fetch of %s refused: %s", pid, e)
            return error(e.reason, e.status)
        rec = store.firmware(pid)
        if rec is None:
            return error("unknown_package", 404)
        if offset >= rec.size:
            return error("range", 416, size=rec.size)
        data = store.firmware_range(pid, offset, length) or b""
        if offset == 0:
            log.info("device %s fetching package %s (%s %s)", device, pid, rec.board,
                     rec.version)
        return Response(data, media_type="application/octet-stream",
                        headers={"x-wum-package-size": str(rec.size),
                                 "content-range": "bytes %d-%d/%d" % (
                                     offset, offset + len(data) - 1, rec.size)})

    return {("GET", "/v1/firmware"): listing, ("GET", "/v1/firmware/{package_id}"): download,
            ("POST", "/v1/firmware/{package_id}/fetch"): fetch}
