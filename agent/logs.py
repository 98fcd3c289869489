"""Logging set-up for the agent: human lines on a terminal, JSON lines for
machines (``--log-json`` or ``[log] file``). Keys never reach a log: the
envelope and config keep them out of every message and repr."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % record.msecs,
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage()}
        for key in ("meter", "bus", "frames", "cycle", "seq"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(verbose: int = 0, json_lines: bool = False, file: str = "") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler = (logging.FileHandler(file) if file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonLines() if json_lines or file else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
