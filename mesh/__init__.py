"""The network layer over links: packets, routing to gateways, per-hop acks,
fragmentation, duty-cycle budget.

Owns concentrator-to-concentrator relaying. Must not know about meters or the
contents of batches. Portable (MicroPython): see docs/portability.md.
"""


class MeshError(Exception):
    """Root of every error raised by ``mesh``.

    Structured fields are keyword arguments kept as attributes (``reason``,
    ``node``, ``seq``...), so a caller counts and logs without parsing text.
    """

    def __init__(self, message="", **fields):
        super().__init__(message)
        self.fields = fields
        for k in fields:
            setattr(self, k, fields[k])


class MeshProtocolError(MeshError):
    """A peer (or the air) broke the protocol: malformed, forged, replayed."""


class MeshLocalError(MeshError):
    """We broke the protocol or were misused (bad argument, oversize message)."""


class MeshBusy(MeshError):
    """Not now: a queue is full or the duty-cycle budget says wait."""
