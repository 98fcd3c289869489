"""Compact node addresses: provisioned identities ("DC-0001") mapped to
12-bit addresses that cannot collide within one district.

Owns the mapping and its conflict bookkeeping. Must not know packets,
routes or keys. Portable (MicroPython).

Why not a hash alone: 300 identities hashed into 4094 addresses collide
about eleven times (birthday bound n^2 / 2N). The mapping is therefore
derived from the district *roster*: the list of member identities in
provisioning order, kept append-only (a new concentrator is added at the
end). Each identity in roster order takes the first address of its probe
sequence not already taken::

    probe(id, k) = SHA-256("wum-mesh-addr" | k | id)[0:2] & 0xFFF,  k = 0, 1, 2 ...
                   skipping 0x000 (none) and 0xFFF (broadcast)

Every node provisioned with the same roster computes the same table; an
identity added at the end never moves an existing one. An identity missing
from the roster gets its probe sequence's first address not taken by the
roster (deterministic, but two such identities may collide). Collisions that
get past provisioning are detected, not silently merged: neighbours put
their identity in every advert and messages carry their origin identity,
and ``learn(address, identity)`` counts a conflict when an address already
names another identity (the frame is then refused by the node).
"""

import hashlib

from mesh import MeshLocalError

NONE = 0x000
BROADCAST = 0xFFF
MAX_ADDRESS = 0xFFE
_SALT = b"wum-mesh-addr"


def probe(identity, k):
    """k-th candidate address of ``identity`` (may be a reserved value)."""
    h = hashlib.sha256(_SALT + bytes((k & 0xFF,)) + identity.encode()).digest()
    return ((h[0] << 8) | h[1]) & 0xFFF


def check_identity(identity):
    if not isinstance(identity, str):
        raise MeshLocalError("identity must be a string", reason="identity")
    n = len(identity.encode())
    if n < 1 or n > 64:
        raise MeshLocalError("identity must be 1..64 bytes of UTF-8", reason="identity",
                             identity=identity)


class AddressTable:
    """identity <-> address for one district (see the module docstring)."""

    def __init__(self, members=()):
        self._by_id = {}
        self._by_addr = {}
        self.roster = []
        self.conflicts = 0
        for m in members:
            self.add(m)

    def add(self, identity):
        """Append ``identity`` to the roster (no-op if present); its address."""
        check_identity(identity)
        if identity in self._by_id:
            return self._by_id[identity]
        if len(self.roster) >= MAX_ADDRESS:
            raise MeshLocalError("roster full", reason="roster", size=len(self.roster))
        k = 0
        while True:
            a = probe(identity, k)
            if a != NONE and a != BROADCAST and a not in self._by_addr:
                break
            k += 1
        self.roster.append(identity)
        self._by_id[identity] = a
        self._by_addr[a] = identity
        return a

    def address(self, identity):
        """The identity's address: from the roster, or learnt, or derived."""
        a = self._by_id.get(identity)
        if a is not None:
            return a
        check_identity(identity)
        k = 0
        while True:
            a = probe(identity, k)
            if a != NONE and a != BROADCAST:
                owner = self._by_addr.get(a)
                if owner is None or owner == identity or owner not in self.roster:
                    return a
            k += 1

    def identity(self, address):
        """The identity known for ``address``, or None."""
        return self._by_addr.get(address)

    def name(self, address):
        """The identity, or "#%03x" when unknown (for stats and logs)."""
        n = self._by_addr.get(address)
        return n if n is not None else "#%03x" % address

    def learn(self, address, identity):
        """An authenticated frame says ``address`` is ``identity``. True when
        consistent (now recorded); False on a conflict (counted)."""
        known = self._by_addr.get(address)
        if known == identity:
            return True
        if known is not None or self._by_id.get(identity, address) != address:
            self.conflicts += 1
            return False
        self._by_addr[address] = identity
        self._by_id[identity] = address
        return True

    def __len__(self):
        return len(self._by_addr)
