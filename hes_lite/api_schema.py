"""The OpenAPI 3.1 document of the HES-lite HTTP API (hand-written: the
routes are few and the uplink bodies are raw bytes), and ``ROUTES``: which
role each route asks for. ``hes_lite.api`` guards its routes from the same
table, so the document cannot drift from what the server enforces.

Access: ``envelope`` routes (the concentrators' uplink) are authenticated
by the sealed envelope in their body, never by a token; ``open`` answers
anyone but says more to a valid token; ``viewer`` / ``operator`` / ``admin``
need ``Authorization: Bearer <token>`` of that role or higher.
Owns nothing else.
"""

from __future__ import annotations

from typing import Any

ENVELOPE = "envelope"
OPEN = "open"

# (method, OpenAPI path) -> access
ROUTES: dict[tuple[str, str], str] = {
    ("PUT", "/v1/batches/{device_id}/{seq}"): ENVELOPE,
    ("POST", "/v1/poll/{device_id}"): ENVELOPE,
    ("PUT", "/v1/results/{device_id}/{counter}"): ENVELOPE,
    ("GET", "/v1/health"): OPEN,
    ("GET", "/v1/concentrators"): "viewer",
    ("GET", "/v1/meters"): "viewer",
    ("GET", "/v1/meters/{meter_id}/readings"): "viewer",
    ("GET", "/v1/events"): "viewer",
    ("GET", "/v1/export"): "viewer",
    ("POST", "/v1/commands"): "operator",
    ("GET", "/v1/commands"): "viewer",
    ("GET", "/v1/commands/{command_id}"): "viewer",
    ("GET", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{name}"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("GET", "/v1/audit"): "admin",
    # provisioning and firmware (issue 12)
    ("POST", "/v1/devices"): "admin",
    ("GET", "/v1/command-key"): "viewer",
    ("GET", "/v1/firmware"): "viewer",
    ("GET", "/v1/firmware/{package_id}"): "viewer",
    ("POST", "/v1/firmware/{package_id}/fetch"): ENVELOPE,
}

_TIME = {"schema": {"type": "string"},
         "description": "epoch seconds or RFC 3339 (UTC if no offset)"}
_BINARY = {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}
_DENIED = {"401": {"description": "{error: unauthenticated}: no token, or an unknown, "
                                  "malformed or revoked one (WWW-Authenticate: Bearer)"},
           "403": {"description": "{error: forbidden, need: <role>}: the token's role is "
                                  "too low"}}
_COMMAND = ("{id, meter, concentrator, op, args, state: queued|delivered|executed|failed|"
            "expired, reason, result, created, updated (RFC 3339)}")


def _q(name: str, desc: str = "", **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": schema or {"type": "string"}, "description": desc}


def _p(name: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": typ}}


def _op(summary: str, *params: dict[str, Any], ok: str = "OK",
        **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "parameters": list(params),
            "responses": {"200": {"description": ok}}, **extra}


_FROM = dict(_q("from"), **_TIME)
_TO = dict(_q("to"), **_TIME)

_PATHS: dict[str, dict[str, Any]] = {
    "/v1/batches/{device_id}/{seq}": {"put": _op(
        "Upload one sealed batch (envelope kind 1)", _p("device_id"), _p("seq", "integer"),
        requestBody=_BINARY, responses={
            "200": {"description": "Stored durably: {device, seq, status: accepted|duplicate, "
                                   "server_time, commands: [hex of a sealed command]}"},
            "400": {"description": "{error: bad_tag|truncated|bad_version|device_mismatch|"
                                   "seq_mismatch}"},
            "403": {"description": "{error: unknown_key|revoked_key}"},
            "409": {"description": "{error: replay}"},
            "413": {"description": "{error: bad_length}"}})},
    "/v1/poll/{device_id}": {"post": _op(
        "An idle concentrator asks for its pending commands (envelope kind 4)",
        _p("device_id"), requestBody=_BINARY,
        ok="{device, commands: [hex of a sealed command], server_time}")},
    "/v1/results/{device_id}/{counter}": {"put": _op(
        "A command's result (envelope kind 3), stored once", _p("device_id"),
        _p("counter", "integer"), requestBody=_BINARY,
        ok="{device, counter, status: accepted|duplicate}")},
    "/v1/health": {"get": _op(
        "Liveness ({status, server_time}); with a viewer token also the last batch per "
        "concentrator, backlog, totals and rejects by reason")},
    "/v1/concentrators": {"get": _op("Concentrators with last batch and backlog")},
    "/v1/meters": {"get": _op(
        "Meters with their concentrator, last reading and last cycle result "
        "(status, error, since), by id",
        _q("limit", "page size", type="integer"), _q("after", "the last id of the previous page"))},
    "/v1/meters/{meter_id}/readings": {"get": _op("Readings of one meter", _p("meter_id"),
                                                  _FROM, _TO)},
    "/v1/events": {"get": _op("Meter events", _q("meter"), _FROM, _TO,
                              _q("limit", "", type="integer"))},
    "/v1/export": {"get": _op("Streamed export", _q("format", "json|jsonl|csv|xlsx|xml|txt"),
                              _q("meter"), _FROM, _TO)},
    "/v1/commands": {
        "post": _op("Queue a signed command for a meter's concentrator",
                    requestBody={"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "required": ["op"], "properties": {
                            "meter": {"type": "string"}, "op": {"type": "string"},
                            "args": {"type": "object"},
                            "concentrator": {"type": "string",
                                             "description": "config only, instead of meter"},
                            "expires_in": {"type": "integer",
                                           "description": "seconds, 1..3600 (default)"}}}}}},
                    responses={"202": {"description": "queued: " + _COMMAND},
                               "404": {"description": "{error: unknown_meter}"},
                               "422": {"description": "{error: bad_args|unknown_op, "
                                                      "detail}"}}),
        "get": _op("Commands of a meter, newest first", _q("meter"),
                   _q("limit", "", type="integer"), ok="[" + _COMMAND + "]")},
    "/v1/commands/{command_id}": {"get": _op("One command", _p("command_id"), ok=_COMMAND)},
    "/v1/tokens": {"get": _op("API tokens (names, roles, dates; never a token)")},
    "/v1/tokens/{name}": {"delete": _op("Revoke a token", _p("name"))},
    "/v1/keys": {"get": _op("Device keys (fingerprints only, never key material)")},
    "/v1/audit": {"get": _op("The audit log", _FROM, _q("limit", "", type="integer"))},
    "/v1/devices": {"post": _op(
        "Register a provisioned device's root key (key epoch 0; `wum provision` calls it)",
        requestBody={"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["device", "root_key"], "properties": {
                "device": {"type": "string"}, "root_key": {"type": "string",
                                                           "description": "64 hex"}}}}}},
        responses={"201": {"description": "{device, epoch: 0, fingerprint}"},
                   "409": {"description": "{error: device_exists}: it has a key already"},
                   "422": {"description": "{error: bad_args, detail}"}})},
    "/v1/command-key": {"get": _op(
        "The HES's public Ed25519 command key, for the devices' [commands] verify_key",
        ok="{public: 64 hex, key_id: 16 hex}")},
    "/v1/firmware": {"get": _op(
        "Published update packages, newest first",
        ok="[{id, sha256, size, target, board, version, key_id, created, actor}]")},
    "/v1/firmware/{package_id}": {"get": _op(
        "An update package's bytes; a Range: bytes=first-last header gets 206 and that part",
        _p("package_id"), responses={"200": {"description": "the package"},
                                     "206": {"description": "the range asked for"},
                                     "404": {"description": "{error: unknown_package}"},
                                     "416": {"description": "the range is past the end"}})},
    "/v1/firmware/{package_id}/fetch": {"post": _op(
        "A device fetches a range of a package: the body is an envelope of kind 5 (purpose "
        "fetch) holding {package, offset, length <= 65536}", _p("package_id"),
        requestBody=_BINARY, responses={
            "200": {"description": "the bytes (x-wum-package-size: the whole size)"},
            "400": {"description": "{error: bad_tag|bad_kind|bad_request|...}"},
            "403": {"description": "{error: unknown_key|revoked_key}"},
            "404": {"description": "{error: unknown_package}"},
            "416": {"description": "{error: range, size}"}})},
}


def _document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, ops in _PATHS.items():
        paths[path] = {}
        for method, op in ops.items():
            access = ROUTES[(method.upper(), path)]
            op = dict(op, **{"x-access": access})
            if access == ENVELOPE:
                op["security"] = []
                op["description"] = ("Authenticated by the sealed envelope of the body "
                                     "(AES-CCM under the device's key), not by a token.")
            elif access == OPEN:
                op["security"] = [{}, {"bearer": []}]
            else:
                op["security"] = [{"bearer": []}]
                op["description"] = "Needs a token of role %s or higher." % access
                op["responses"] = dict(op["responses"], **_DENIED)
            paths[path][method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "HES-lite", "version": "1",
                 "description": "Head end of the wum smart-meter concentrator network. "
                                "Roles: viewer (read, export) < operator (+ commands) < "
                                "admin (+ tokens, keys, audit)."},
        "components": {"securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API token from `hes-lite tokens add NAME --role R`"}}},
        "paths": paths,
    }


OPENAPI: dict[str, Any] = _document()
