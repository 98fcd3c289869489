"""The network layer over links: packets, routing to gateways, per-hop acks,
fragmentation, duty-cycle budget.

Owns concentrator-to-concentrator relaying. Must not know about meters or the
contents of batches.
"""


class MeshError(Exception):
    """Root of every error raised by ``mesh``."""
