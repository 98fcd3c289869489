"""Counters that must never go back, kept beside the archive as well as in it.

The envelope's boot epoch, the mesh frame-counter epoch and the last batch
seq are nonce and identity material: AES-CCM under one key must never see a
(boot, counter) or (epoch, counter) twice, and the HES takes a second batch
with a seq it holds for a ``duplicate``. The archive keeps them (meta), but a
corrupt archive is quarantined and a fresh one starts (docs/agent.md): from
0 they would repeat. So each is also written to ``<archive>.epochs``, a small
owner-only file the quarantine leaves alone, *before* the value is used
(write, fsync, rename, fsync the folder), and read back as the larger of the
two stores.

Owns that file: one ``name value`` line per counter. Must not know SQL,
envelopes or the mesh. A file that does not parse is set aside
(``.corrupt-<UTC time>``) and the archive's values stand alone.
"""

from __future__ import annotations

import logging
import os
import time

from agent import AgentError

log = logging.getLogger(__name__)

SUFFIX = ".epochs"
NAMES = ("boot_epoch", "mesh_epoch", "last_seq")


class EpochError(AgentError):
    """The epoch file cannot be written (the daemon must not seal without it)."""


class EpochFile:
    """``<archive>.epochs``: ``load()`` -> {name: value}; ``save(values)``
    writes them all durably before it returns."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return "EpochFile(%r)" % self.path

    def load(self) -> dict[str, int]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(4096)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise EpochError("epoch file %s unreadable: %s" % (self.path, e.strerror),
                             path=self.path) from e
        try:
            return _parse(raw)
        except ValueError as e:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            os.replace(self.path, "%s.corrupt-%s" % (self.path, stamp))
            log.error("epoch file %s does not parse (%s): kept as %s.corrupt-%s; the archive's "
                      "values stand alone", self.path, e, self.path, stamp)
            return {}

    def save(self, values: dict[str, int]) -> None:
        body = "".join("%s %d\n" % (k, values[k]) for k in NAMES if k in values).encode()
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            d = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(d)
            finally:
                os.close(d)
        except OSError as e:
            raise EpochError("epoch file %s cannot be written: %s" % (self.path, e.strerror),
                             path=self.path) from e


def _parse(raw: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in raw.decode("ascii").splitlines():
        if not line.strip():
            continue
        name, _, value = line.partition(" ")
        n = int(value)
        if name not in NAMES or n < 0:
            raise ValueError("bad line %r" % line)
        out[name] = n
    return out
