"""Time on the command line and in JSON: RFC 3339 UTC out, RFC 3339 / ISO 8601
or epoch seconds in. One place, so every command reads and writes time alike."""

from __future__ import annotations

from datetime import UTC, datetime

from agent import AgentError


class TimeFormatError(AgentError):
    """A command-line time that is neither epoch seconds nor RFC 3339."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Epoch seconds, or RFC 3339 / ISO 8601 (UTC unless an offset is given)."""
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeFormatError("not a time: %r (epoch seconds or RFC 3339, e.g. "
                              "2026-11-28T00:00:00Z)" % text) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())
