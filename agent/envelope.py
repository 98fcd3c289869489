"""The envelope: authenticated encryption of every batch a concentrator sends.

Portable (CPython and MicroPython). Owns the sealed wire format, per-purpose
key derivation, the never-repeating nonce (boot epoch + counter) and the
HES-side replay window. AES-128-CCM (RFC 3610) with a 13-byte nonce and an
8-byte tag over a header that travels in clear and is authenticated:

    off  size  field
    0    1     version (1)
    1    1     kind (1 batch, 2 command, 3 command result, 4 poll, 5 fetch)
    2    2     key epoch, big-endian
    4    1     n = length of the device id (1..64)
    5    n     device id, UTF-8
    5+n  4     boot epoch (persisted, incremented at every start)
    9+n  4     counter within the boot epoch (RAM)
    13+n 2     payload length
    15+n len   ciphertext
    ...  8     CCM tag

nonce = version | kind | key epoch | boot epoch | counter | 0x00 (13 bytes).
The AAD is the whole header. Keys never appear in a repr, log or exception.
Must not know what the payload means (the batch codec does) nor how the HES
stores keys (it hands in a ``Keyring``-like object).

API (stable):
    derive_key(root, device_id, purpose="batch", epoch=0) -> 16 bytes
    Sealer(device_id, root_key, store, key_epoch=0, purpose="batch").seal(payload, kind=1)
    peek(data) -> Header                       (parse only, no key needed)
    Keyring(purpose="batch").add(device_id, root_key, epoch=0, revoked=False) / .revoke(...)
    open_envelope(data, keyring, window=None) -> Opened(header, payload)
    ReplayWindow(): check(boot, counter), accept(boot, counter), to_bytes(), from_bytes()
    EnvelopeError(AgentError) with .reason in REASONS
"""

from agent import AgentError
from agent.crypto import CryptoFailure, ccm_open, ccm_seal, hkdf

VERSION = 1
KIND_BATCH = 1
KIND_COMMAND = 2        # HES -> agent: a signed command, sealed under purpose "downlink"
KIND_RESULT = 3         # agent -> HES: a command result (JSON), purpose "batch"
KIND_POLL = 4           # agent -> HES: an idle poll for pending commands, purpose "batch"
KIND_FETCH = 5          # agent -> HES: a range of an update package, purpose "fetch"
PURPOSE_UPLINK = "batch"
PURPOSE_DOWNLINK = "downlink"
PURPOSE_FETCH = "fetch"     # its own key and nonces: fetches never touch the batch replay window
TAG_LEN = 8
KEY_LEN = 16
MAX_PAYLOAD = 0xFFFF
MAX_COUNTER = 0xFFFFFFFF
SALT = b"wum envelope v1"
REASONS = ("bad_tag", "replay", "unknown_key", "revoked_key", "truncated", "bad_length",
           "bad_version")


class EnvelopeError(AgentError):
    """A sealed batch was rejected (or could not be sealed). ``reason`` is one of
    ``REASONS``; ``device``, ``boot``, ``counter``, ``key_epoch`` are set when the
    header could be read. Never carries key material."""

    def __init__(self, reason: str, **fields: object) -> None:
        if reason not in REASONS:
            raise ValueError("unknown envelope error reason %r" % reason)
        detail = " ".join("%s=%s" % (k, fields[k]) for k in sorted(fields))
        super().__init__("envelope rejected: %s %s" % (reason, detail), reason=reason, **fields)


def derive_key(root: bytes, device_id: str, purpose: str = "batch", epoch: int = 0) -> bytes:
    """Per-purpose AES-128 key from a device's 256-bit root key (HKDF-SHA256)."""
    if len(root) != 32:
        raise ValueError("root key must be 32 bytes")
    info = purpose.encode() + b"\x00" + device_id.encode() + b"\x00" + epoch.to_bytes(2, "big")
    return hkdf(bytes(root), SALT, info, KEY_LEN)


class Header:
    """The clear, authenticated part of an envelope."""

    __slots__ = ("version", "kind", "key_epoch", "device", "boot", "counter", "length")

    def __init__(self, device: str, boot: int, counter: int, length: int,
                 kind: int = KIND_BATCH, key_epoch: int = 0, version: int = VERSION) -> None:
        self.version = version
        self.kind = kind
        self.key_epoch = key_epoch
        self.device = device
        self.boot = boot
        self.counter = counter
        self.length = length

    def to_bytes(self) -> bytes:
        dev = self.device.encode()
        return (bytes((self.version, self.kind)) + self.key_epoch.to_bytes(2, "big")
                + bytes((len(dev),)) + dev + self.boot.to_bytes(4, "big")
                + self.counter.to_bytes(4, "big") + self.length.to_bytes(2, "big"))

    def nonce(self) -> bytes:
        return (bytes((self.version, self.kind)) + self.key_epoch.to_bytes(2, "big")
                + self.boot.to_bytes(4, "big") + self.counter.to_bytes(4, "big") + b"\x00")

    def __repr__(self) -> str:
        return "Header(device=%r, kind=%d, key_epoch=%d, boot=%d, counter=%d, length=%d)" % (
            self.device, self.kind, self.key_epoch, self.boot, self.counter, self.length)


def peek(data: bytes) -> Header:
    """Parse the header of a sealed envelope and check its length; no key needed.
    Raises ``EnvelopeError`` (truncated, bad_version, bad_length)."""
    if len(data) < 1:
        raise EnvelopeError("truncated", size=0)
    if data[0] != VERSION:
        raise EnvelopeError("bad_version", version=data[0])
    if len(data) < 5:
        raise EnvelopeError("truncated", size=len(data))
    n = data[4]
    if n < 1 or n > 64:
        raise EnvelopeError("bad_length", field="device_id", size=n)
    if len(data) < 15 + n:
        raise EnvelopeError("truncated", size=len(data))
    try:
        device = bytes(data[5:5 + n]).decode()
    except UnicodeError:
        raise EnvelopeError("bad_length", field="device_id", size=n) from None
    length = int.from_bytes(data[13 + n:15 + n], "big")
    h = Header(device, int.from_bytes(data[5 + n:9 + n], "big"),
               int.from_bytes(data[9 + n:13 + n], "big"), length, data[1],
               int.from_bytes(data[2:4], "big"))
    total = 15 + n + length + TAG_LEN
    if len(data) < total:
        raise EnvelopeError("truncated", device=device, size=len(data), expected=total)
    if len(data) > total:
        raise EnvelopeError("bad_length", device=device, size=len(data), expected=total)
    return h


class MemoryBootStore:
    """Boot-epoch persistence in RAM (tests). The agent injects its archive-backed
    store: any object with ``load() -> int`` (0 when never saved) and ``save(int)``
    that returns only once the value is durable."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def load(self) -> int:
        return self.value

    def save(self, value: int) -> None:
        self.value = value


class FileBootStore:
    """Boot epoch in a small file, replaced atomically (write, fsync, rename,
    fsync the folder where the OS allows), so a power cut can lose a save only
    before ``save`` returned, never one a seal already relied on."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> int:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError:
            return 0
        return int(raw.decode().strip() or "0")

    def save(self, value: int) -> None:
        import os
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(("%d\n" % value).encode())
            f.flush()
            fsync = getattr(os, "fsync", None)
            if fsync is not None:
                fsync(f.fileno())
        os.rename(tmp, self.path)
        if fsync is not None and hasattr(os, "O_RDONLY"):      # CPython: the rename too
            d = os.open(self.path.rsplit("/", 1)[0] if "/" in self.path else ".", os.O_RDONLY)
            try:
                fsync(d)
            finally:
                os.close(d)


class Sealer:
    """The agent's side. The boot epoch is loaded, incremented and persisted
    here, before the first seal, so (boot, counter) never repeats under a key,
    whatever reboots or power cuts happen; the counter lives in RAM and a wrap
    moves to a fresh boot epoch."""

    def __init__(self, device_id: str, root_key: bytes, store: "object",
                 key_epoch: int = 0, purpose: str = PURPOSE_UPLINK) -> None:
        if not 1 <= len(device_id.encode()) <= 64:
            raise ValueError("device id must be 1..64 bytes of UTF-8")
        self.device = device_id
        self.key_epoch = key_epoch
        self.purpose = purpose
        self._key = derive_key(root_key, device_id, purpose, key_epoch)
        self._store = store
        self.boot = 0
        self.counter = 0
        self._next_boot()

    def _next_boot(self) -> None:
        boot = self._store.load() + 1  # type: ignore[attr-defined]
        if boot > MAX_COUNTER:
            raise ValueError("boot epoch exhausted: provision a new key epoch")
        self._store.save(boot)  # type: ignore[attr-defined]
        self.boot = boot
        self.counter = 0

    def __repr__(self) -> str:
        return "Sealer(device=%r, key_epoch=%d, boot=%d, counter=%d)" % (
            self.device, self.key_epoch, self.boot, self.counter)

    def seal(self, payload: bytes, kind: int = KIND_BATCH) -> bytes:
        if len(payload) > MAX_PAYLOAD:
            raise EnvelopeError("bad_length", device=self.device, size=len(payload))
        if self.counter > MAX_COUNTER:
            self._next_boot()
        h = Header(self.device, self.boot, self.counter, len(payload), kind, self.key_epoch)
        self.counter += 1
        aad = h.to_bytes()
        # the header, the ciphertext and the tag in one buffer (no copies of
        # the payload on a board)
        return ccm_seal(self._key, h.nonce(), aad, payload, TAG_LEN, "", aad)   # head=aad


class Keyring:
    """The HES's keys: per (device, key epoch) a root key and a revoked flag.
    Derived keys (for ``purpose``: "batch" at the HES, "downlink" on the agent
    opening commands) are cached; nothing here is ever printed."""

    def __init__(self, purpose: str = PURPOSE_UPLINK) -> None:
        self.purpose = purpose
        self._keys: "dict[tuple[str, int], bytes]" = {}
        self._revoked: "set[tuple[str, int]]" = set()

    def __repr__(self) -> str:
        return "Keyring(%d keys)" % len(self._keys)

    def add(self, device_id: str, root_key: bytes, epoch: int = 0, revoked: bool = False) -> None:
        self._keys[(device_id, epoch)] = derive_key(root_key, device_id, self.purpose, epoch)
        if revoked:
            self._revoked.add((device_id, epoch))
        else:
            self._revoked.discard((device_id, epoch))

    def revoke(self, device_id: str, epoch: int = 0) -> None:
        self._revoked.add((device_id, epoch))

    def key_for(self, device_id: str, epoch: int) -> bytes:
        k = (device_id, epoch)
        if k in self._revoked:
            raise EnvelopeError("revoked_key", device=device_id, key_epoch=epoch)
        key = self._keys.get(k)
        if key is None:
            raise EnvelopeError("unknown_key", device=device_id, key_epoch=epoch)
        return key


class Opened:
    __slots__ = ("header", "payload")

    def __init__(self, header: Header, payload: bytes) -> None:
        self.header = header
        self.payload = payload

    def __repr__(self) -> str:
        return "Opened(%r, %d bytes)" % (self.header, len(self.payload))


def open_envelope(data: bytes, keyring: "object", window: "ReplayWindow | None" = None) -> Opened:
    """Verify and decrypt. ``keyring.key_for(device, epoch)`` gives the derived key
    (``Keyring`` does). With a ``window``, a (boot, counter) already seen raises
    ``replay`` — only after the tag verified, so a ``replay`` is always an
    authentic duplicate — and an accepted envelope is recorded in it."""
    data = bytes(data)
    h = peek(data)
    key = keyring.key_for(h.device, h.key_epoch)  # type: ignore[attr-defined]
    n = len(h.device.encode())
    aad = data[:15 + n]
    try:
        payload = ccm_open(key, h.nonce(), aad, data[15 + n:], TAG_LEN)
    except CryptoFailure:
        raise EnvelopeError("bad_tag", device=h.device, boot=h.boot, counter=h.counter) from None
    if window is not None:
        window.check(h.boot, h.counter, h.device)
        window.accept(h.boot, h.counter)
    return Opened(h, payload)


class ReplayWindow:
    """One device's anti-replay state at the HES: the highest (boot, counter)
    accepted and a bitmap of the ``size`` counters below it (RFC 4303 §3.4.3
    style). Envelopes may arrive out of order within the window; anything older,
    from an older boot epoch, or already marked is a replay."""

    __slots__ = ("size", "boot", "top", "bits")

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.boot = -1
        self.top = -1
        self.bits = 0       # bit i set: counter top - i seen

    def check(self, boot: int, counter: int, device: str = "") -> None:
        if boot > self.boot or (boot == self.boot and counter > self.top):
            return
        if boot < self.boot or self.top - counter >= self.size or \
                (self.bits >> (self.top - counter)) & 1:
            raise EnvelopeError("replay", device=device, boot=boot, counter=counter)

    def accept(self, boot: int, counter: int) -> None:
        if boot > self.boot:
            self.boot, self.top, self.bits = boot, counter, 1
        elif counter > self.top:
            shift = counter - self.top
            mask = (1 << self.size) - 1
            self.bits = ((self.bits << shift) | 1) & mask if shift < self.size else 1
            self.top = counter
        else:
            self.bits |= 1 << (self.top - counter)

    def to_bytes(self) -> bytes:
        nb = (self.size + 7) // 8
        return (bytes((1,)) + self.size.to_bytes(2, "big") + (self.boot + 1).to_bytes(5, "big")
                + (self.top + 1).to_bytes(5, "big") + self.bits.to_bytes(nb, "big"))

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReplayWindow":
        if len(data) < 13 or data[0] != 1:
            raise EnvelopeError("bad_length", field="replay_window", size=len(data))
        w = cls(int.from_bytes(data[1:3], "big"))
        nb = (w.size + 7) // 8
        if len(data) != 13 + nb:
            raise EnvelopeError("bad_length", field="replay_window", size=len(data))
        w.boot = int.from_bytes(data[3:8], "big") - 1
        w.top = int.from_bytes(data[8:13], "big") - 1
        w.bits = int.from_bytes(data[13:], "big") & ((1 << w.size) - 1)
        return w
