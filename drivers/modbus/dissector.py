"""``wum dissect`` for Modbus RTU: bytes -> a layered, JSON-ready description.

Owns turning captured bytes (one frame, or a stretch of bus traffic with
garbage) into frames with their fields named. Must not know ports or profiles.

Checks: every frame carries ``"checks": [{"name": "crc", "ok", "expected",
"found"}]`` (the two CRC bytes as on the wire, low byte first). A run of
bytes no good frame explains that is exactly one frame by its length, ending
where the run ends, is decoded anyway with ``"crc": "bad"`` and a failed
check: a frame whose CRC (or any byte under it) was hit.
"""

from __future__ import annotations

from typing import Any

from drivers.modbus import rtu


def describe(frame: rtu.Frame, raw: "bytes | None" = None) -> dict[str, Any]:
    """``raw``: the frame's bytes as captured, when its CRC is wrong."""
    fc = frame.function
    good = frame.to_bytes()
    seen = good if raw is None else raw
    out: dict[str, Any] = {"layer": "modbus-rtu", "direction": frame.role, "address": frame.address,
                 "function": fc, "function_name": rtu.FUNCTIONS.get(fc & 0x7F, "unknown"),
                 "crc": "ok" if seen == good else "bad", "hex": seen.hex(),
                 "checks": [{"name": "crc", "ok": seen == good, "expected": good[-2:].hex(),
                             "found": seen[-2:].hex()}]}
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


def _flagged(data: bytes, start: int, end: int, role: str) -> "tuple[int, dict[str, Any]] | None":
    """The frame that fills ``data[i:end]`` exactly by its length, for the
    first such ``i`` in the run (its CRC is wrong: good frames are found first)."""
    run = data[:end]
    for i in range(start, end - 3):
        if rtu.frame_length(run, role, i) == end - i:
            body = data[i:end]
            return i, describe(rtu.Frame(body[0], body[1], body[2:-2], role), body)
    return None


def _frames(data: bytes, role: str) -> tuple[list[dict[str, Any]], rtu.Framer, int]:
    """(frames in order, stats, bytes in good frames)."""
    stats = rtu.Framer(role)
    found: list[tuple[int, dict[str, Any]]] = []
    gaps, pos, good = [], 0, 0
    while pos < len(data):
        frame, used = rtu.consume(data[pos:], role, stats)
        if frame is None:
            gaps.append((pos, len(data)))
            break
        size = len(frame.to_bytes())
        if used > size:
            gaps.append((pos, pos + used - size))
        found.append((pos + used - size, describe(frame)))
        good += size
        pos += used
    for start, end in gaps:
        bad = _flagged(data, start, end, role)
        if bad is not None:
            found.append(bad)
    found.sort(key=lambda item: item[0])
    return [d for _, d in found], stats, good


def dissect(data: bytes, **keys: object) -> dict[str, Any]:
    """Every frame found in ``data``; ``direction=`` request|response|auto (the
    reading that explains more of the bytes wins); other keys are ignored."""
    data = bytes(data)
    direction = keys.get("direction", "auto")
    roles = [direction] if direction in (rtu.REQUEST, rtu.RESPONSE) else [
        rtu.RESPONSE, rtu.REQUEST]
    best = None
    for role in roles:
        frames, framer, good = _frames(data, role)
        used = sum(len(f["hex"]) // 2 for f in frames)
        if best is None or (good, used) > best[0]:
            best = ((good, used), frames, framer)
    assert best is not None
    (good, used), frames, framer = best
    out: dict[str, Any] = {"protocol": "modbus-rtu", "length": len(data), "frames": frames,
                 "unparsed": len(data) - used}
    if not good:
        bad_crc = framer.crc_errors or frames
        out["error"] = ("bad CRC" if bad_crc else "no Modbus RTU frame found")
        if len(data) >= 4:
            out["crc_expected"] = "%04x" % rtu.crc16(data[:-2])
            out["crc_found"] = "%04x" % int.from_bytes(data[-2:], "little")
    return out
