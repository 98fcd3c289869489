"""The OpenAPI 3.1 document of the HES-lite HTTP API (hand-written: the
routes are few and the uplink body is raw bytes). Owns nothing else."""

from __future__ import annotations

from typing import Any

_TIME = {"schema": {"type": "string"},
         "description": "epoch seconds or RFC 3339 (UTC if no offset)"}


def _q(name: str, desc: str = "", **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": schema or {"type": "string"}, "description": desc}


def _p(name: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": typ}}


def _get(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": list(params),
                    "responses": {"200": {"description": "OK"}}}}


_FROM = dict(_q("from"), **_TIME)
_TO = dict(_q("to"), **_TIME)

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "HES-lite", "version": "1",
             "description": "Head end of the wum smart-meter concentrator network."},
    "paths": {
        "/v1/batches/{device_id}/{seq}": {"put": {
            "summary": "Upload one sealed batch (envelope bytes)",
            "parameters": [_p("device_id"), _p("seq", "integer")],
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}},
            "responses": {
                "200": {"description": "Stored durably: {device, seq, status: "
                                       "accepted|duplicate, server_time}"},
                "400": {"description": "{error: bad_tag|truncated|bad_version|"
                                       "device_mismatch|seq_mismatch}"},
                "403": {"description": "{error: unknown_key|revoked_key}"},
                "409": {"description": "{error: replay}"},
                "413": {"description": "{error: bad_length}"}}}},
        "/v1/concentrators": _get("Concentrators with last batch and backlog"),
        "/v1/meters": _get("Meters with their concentrator, last reading and last cycle "
                           "result (status, error, since), by id",
                           _q("limit", "page size", type="integer"),
                           _q("after", "the last id of the previous page")),
        "/v1/meters/{meter_id}/readings": _get("Readings of one meter",
                                               _p("meter_id"), _FROM, _TO),
        "/v1/events": _get("Meter events", _q("meter"), _FROM, _TO,
                           _q("limit", "", type="integer")),
        "/v1/health": _get("Last batch per concentrator, backlog, rejects by reason"),
        "/v1/export": _get("Streamed export", _q("format", "json|jsonl|csv|xlsx|xml|txt"),
                           _q("meter"), _FROM, _TO),
    },
}
