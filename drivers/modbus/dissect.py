"""``wum dissect`` for Modbus RTU: bytes -> a layered, JSON-ready description.

Owns turning captured bytes (one frame, or a stretch of bus traffic with
garbage) into frames with their fields named. Must not know ports or profiles.
"""

from __future__ import annotations

from typing import Any

from drivers.modbus import rtu


def describe(frame: rtu.Frame) -> dict[str, Any]:
    fc = frame.function
    out: dict[str, Any] = {"layer": "modbus-rtu", "direction": frame.role, "address": frame.address,
                 "function": fc, "function_name": rtu.FUNCTIONS.get(fc & 0x7F, "unknown"),
                 "crc": "ok", "hex": frame.to_bytes().hex()}
    if frame.is_exception:
        code = frame.exception_code
        out["exception"] = {"code": code, "name": rtu.EXCEPTIONS.get(code or 0, "unknown")}
        return out
    try:
        if frame.role == rtu.REQUEST and fc in (1, 2, 3, 4, 5, 6, 0x0F, 0x10):
            start, second, words = frame.request_fields()
            out["start"] = start
            if fc in (5, 6):
                out["value"] = second
            else:
                out["count"] = second
            if fc == rtu.WRITE_MULTIPLE:
                out["values"] = words
        elif frame.role == rtu.RESPONSE and fc in (3, 4):
            out["registers"] = frame.registers()
        elif frame.role == rtu.RESPONSE and fc in (6, 0x10):
            start, second = int.from_bytes(frame.data[:2], "big"), int.from_bytes(
                frame.data[2:4], "big")
            out.update({"start": start, ("value" if fc == 6 else "count"): second})
    except (rtu.RtuError, ValueError) as e:   # odd lengths inside a good CRC
        out["error"] = str(e)
    return out


def _frames(data: bytes, role: str) -> tuple[list[dict[str, Any]], rtu.Framer]:
    framer = rtu.Framer(role)
    framer.receive_data(data)
    return [describe(f) for f in framer.frames()], framer


def dissect(data: bytes, **keys: object) -> dict[str, Any]:
    """Every frame found in ``data``; ``direction=`` request|response|auto (the
    reading that explains more of the bytes wins); other keys are ignored."""
    data = bytes(data)
    direction = keys.get("direction", "auto")
    roles = [direction] if direction in (rtu.REQUEST, rtu.RESPONSE) else [
        rtu.RESPONSE, rtu.REQUEST]
    best = None
    for role in roles:
        frames, framer = _frames(data, role)
        used = sum(len(f["hex"]) // 2 for f in frames)
        if best is None or used > best[0]:
            best = (used, frames, framer)
    assert best is not None
    used, frames, framer = best
    out: dict[str, Any] = {"protocol": "modbus-rtu", "length": len(data), "frames": frames,
                 "unparsed": len(data) - used}
    if not frames:
        out["error"] = ("bad CRC" if framer.crc_errors else "no Modbus RTU frame found")
        if len(data) >= 4:
            out["crc_expected"] = "%04x" % rtu.crc16(data[:-2])
            out["crc_found"] = "%04x" % int.from_bytes(data[-2:], "little")
    return out
