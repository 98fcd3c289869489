"""The authenticated link layer: every mesh frame sealed hop by hop under
the district's network key with AES-CCM and a 4-byte tag; nonces that never
repeat across reboots; a replay window per neighbour.

Owns the link key, this node's frame counter and the neighbours' windows.
Must not know routes, queues or what a payload means (relays never see
readings: the agent's batches inside stay sealed by the uplink envelope).
Uses ``drivers.crypto``'s portable CCM and HKDF (``drivers.aes`` on the
WebAssembly port, OpenSSL on CPython, ``cryptolib`` on boards), shared with
the agent's uplink envelope.
Portable (MicroPython).

Key: AES-128, HKDF-SHA256(network key, salt "wum mesh v1", info "link").
Frame counter: 32 bits = epoch (16, persisted) << 16 | counter (16, RAM).
The epoch is ``store.load() + 1``, saved before the first frame, and again
(+1) when the counter wraps, as the envelope's boot epoch: so (sender
address, epoch, counter) never repeats under one key, whatever reboots
happen. 65535 epochs x 65536 frames per key; then provision a new key.

Nonce (13 bytes) = tx address (2) | epoch (4) | counter (4) | 0 0 0.
AAD = the clear header (``mesh.packet``); the payload is encrypted.

Tag length: 4 bytes, as LoRaWAN's MIC and IEEE 802.15.4's MIC-32. A forger
succeeds with probability 2^-32 per frame tried; under a 1 % duty cycle a
radio gets a few thousand frames on the air per hour, so the expected time to
one accepted forgery is over 10^5 years, and every failed try is counted
(``refused["bad_tag"]``). 8 bytes would cost 4 bytes in every frame (3-4 %
of LoRa airtime) for no practical gain; integrity of a whole batch is also
end-to-end (the envelope's 8-byte tag at the HES).

Replay: per neighbour, the highest frame counter verified and a 32-frame
window below it (RFC 4303 §3.4.3 style), updated only after the tag
verified. A frame whose short header omits the epoch (every data-like
frame; ACK and ADVERT carry it) is checked under the neighbour's last
verified epoch ("unsynced" when none is known).
Known limit: a receiver that reboots forgets the windows; a frame recorded
before and replayed once after the reboot is accepted (a duplicate the
delivery layer suppresses; the HES is idempotent).
"""

from drivers.crypto import CryptoFailure, ccm_open, ccm_seal, hkdf
from mesh import MeshLocalError, MeshProtocolError
from mesh.packet import BROADCAST, DATA_LIKE, TAG_LEN, Header

SALT = b"wum mesh v1"
MAX_EPOCH = 0xFFFF
WINDOW = 32
_WMASK = (1 << WINDOW) - 1


class MemoryCounterStore:
    """Epoch persistence in RAM (tests, simulators). A device injects a store
    whose ``save`` returns only once the value is durable (the agent's
    ``FileBootStore`` fits: ``load() -> int``, ``save(int)``)."""

    def __init__(self, value=0):
        self.value = value

    def load(self):
        return self.value

    def save(self, value):
        self.value = value


def link_key(network_key):
    if len(network_key) != 32:
        raise MeshLocalError("network key must be 32 bytes", reason="key")
    return hkdf(bytes(network_key), SALT, b"link", 16)


def nonce(tx, epoch, counter):
    return (tx.to_bytes(2, "big") + epoch.to_bytes(4, "big") + counter.to_bytes(4, "big")
            + b"\x00\x00\x00")


class LinkSecurity:
    """Seal and open frames for the node at ``address``."""

    def __init__(self, network_key, address, store, backend=""):
        self._key = link_key(network_key)
        self._backend = backend
        self.address = address
        self._store = store
        self.epoch = 0
        self.counter = 0
        self.peers = {}               # tx address -> [epoch, top frame counter, bitmap]
        self._next_epoch()

    def __repr__(self):
        return "LinkSecurity(address=%03x, epoch=%d, counter=%d)" % (
            self.address, self.epoch, self.counter)

    def _next_epoch(self):
        e = self._store.load() + 1
        if e > MAX_EPOCH:
            raise MeshLocalError("frame counter epochs exhausted: provision a new network key",
                                 reason="epoch_exhausted")
        self._store.save(e)
        self.epoch = e
        self.counter = 0

    def seal(self, header, payload, long=None):
        """Stamp ``header`` with the next counter (and the epoch when
        ``long``; by default ACK and ADVERT carry it, data-like frames never
        do: ``mesh.packet`` refuses L on them) and return the whole frame."""
        if long is None:
            long = header.ptype not in DATA_LIKE
        if self.counter > 0xFFFF:
            self._next_epoch()
        header.tx = self.address
        header.counter = self.counter
        header.epoch = self.epoch if long else None
        self.counter += 1
        aad = header.to_bytes()
        n = nonce(self.address, self.epoch, header.counter)
        return aad + ccm_seal(self._key, n, aad, bytes(payload), TAG_LEN, self._backend)

    def next_epoch(self):
        """The epoch the next ``seal`` uses (one more when the counter wraps)."""
        return self.epoch + 1 if self.counter > 0xFFFF else self.epoch

    def peek(self, frame):
        """The header alone, MeshProtocolError when malformed (no crypto)."""
        return Header.from_bytes(frame)

    def open(self, frame, header=None, hlen=0):
        """(header, payload) of a frame addressed to us or broadcast, its tag
        and counter verified; MeshProtocolError with reason "malformed",
        "unsynced", "bad_tag" or "replay" otherwise."""
        if header is None:
            header, hlen = Header.from_bytes(frame)
        tx = header.tx
        if tx == self.address:
            raise MeshProtocolError("own address as sender", reason="own_address", tx=tx)
        peer = self.peers.get(tx)
        epoch = header.epoch
        if epoch is None:
            if peer is None:
                raise MeshProtocolError("epoch of sender unknown", reason="unsynced", tx=tx)
            epoch = peer[0]
        n = nonce(tx, epoch, header.counter)
        try:
            payload = ccm_open(self._key, n, bytes(frame[:hlen]), bytes(frame[hlen:]),
                               TAG_LEN, self._backend)
        except CryptoFailure:
            raise MeshProtocolError("tag mismatch", reason="bad_tag", tx=tx) from None
        fc = (epoch << 16) | header.counter
        if peer is None:
            self.peers[tx] = [epoch, fc, 1]
        else:
            _accept(peer, fc, tx)
            peer[0] = epoch
        header.epoch = epoch if header.epoch is not None else None
        return header, payload

    def for_us(self, header):
        return header.rx == self.address or header.rx == BROADCAST

    def forget(self, tx):
        self.peers.pop(tx, None)


def _accept(peer, fc, tx):
    top = peer[1]
    if fc > top:
        shift = fc - top
        peer[2] = ((peer[2] << shift) | 1) & _WMASK if shift < WINDOW else 1
        peer[1] = fc
        return
    d = top - fc
    if d >= WINDOW or (peer[2] >> d) & 1:
        raise MeshProtocolError("replayed frame", reason="replay", tx=tx, counter=fc)
    peer[2] |= 1 << d
