"""Helpers of the board-update portable tests (CPython and MicroPython): a
scratch folder to chdir into, small bundles and packages built and signed
here (agent.ed25519 signs on both Pythons), the HES's side of a command
(signed with a command key, sealed under the device's downlink key) and of
a result, an uplink that answers fetches at once or later, a clock, and a
disk that loses power before its N-th operation. Imported by tests only."""

import hashlib
import json
import os

from agent import command, ed25519
from agent.envelope import (
    KIND_RESULT,
    PURPOSE_DOWNLINK,
    Keyring,
    MemoryBootStore,
    Sealer,
    open_envelope,
)
from agent.slots import Disk, Slots
from agent.update_package import DOMAIN, MAGIC, UNSIGNED, key_id

DEVICE = "BOARD-7"
ROOT_KEY = bytes(range(32, 64))
HES_SECRET = hashlib.sha256(b"wum test hes command key").digest()
RELEASE_SECRET = hashlib.sha256(b"wum test release key").digest()
FOREIGN_SECRET = hashlib.sha256(b"somebody else's key").digest()
T0 = 1790000000
_N = [0]


class PowerCut(Exception):
    pass


def cut_disk(n):
    """A Disk that raises PowerCut before its n-th mutating operation."""
    count = [0]

    def step(what):
        count[0] += 1
        if count[0] == n:
            raise PowerCut(what)
    return Disk(step)


def _rmtree(path):
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            _rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


class Scratch:
    """chdir into a fresh folder (``with Scratch() as s:``), back on exit."""

    def __enter__(self):
        self.back = os.getcwd()
        try:
            import tempfile
            base = tempfile.gettempdir()
        except ImportError:
            base = "/tmp"
            try:
                os.mkdir(base)
            except OSError:
                pass
        _N[0] += 1
        self.path = "%s/wum-upd-%d-%d" % (base, os.getpid() if hasattr(os, "getpid") else 0,
                                          _N[0])
        _rmtree(self.path)
        os.mkdir(self.path)
        os.chdir(self.path)
        os.mkdir("data")
        return self

    def __exit__(self, *exc):
        os.chdir(self.back)
        _rmtree(self.path)
        return False


def bundle(version, board="sim", extra=b""):
    """A small board bundle: {path: bytes}, manifest.json included."""
    files = {"firmware/board.mpy": b"M\x06board " + version.encode() + extra,
             "firmware/loop.mpy": b"M\x06loop " + bytes(range(200)),
             "main.py": b"# boot stub\n"}
    listing = {}
    for p in files:
        listing[p] = {"sha256": hashlib.sha256(files[p]).digest().hex(), "size": len(files[p])}
    manifest = {"board": board, "files": listing, "format": 1, "target": "micropython",
                "total_size": sum(len(v) for v in files.values()), "version": version}
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def install_directly(slots, files):
    """A version flashed onto the board (as wum flash --port leaves it)."""
    slot = slots.install([(p, len(d), hashlib.sha256(d).digest().hex(), [d])
                          for p, d in sorted(files.items())])
    slots.switch(slot)
    return slot


def package(files, target="micropython", board="sim", secret=RELEASE_SECRET, version=None):
    """Package bytes of ``files`` signed with ``secret`` (None: unsigned)."""
    names = sorted(files)
    payload = b"".join(files[n] for n in names)
    doc = {"created": T0, "files": [[n, len(files[n]), hashlib.sha256(files[n]).digest().hex()]
                                    for n in names],
           "format": 1, "key_id": key_id(ed25519.public_key(secret)) if secret else "",
           "payload_sha256": hashlib.sha256(payload).digest().hex(),
           "payload_size": len(payload), "board": board, "target": target,
           "version": version or json.loads(files["manifest.json"])["version"]}
    raw = json.dumps(doc).encode()
    sig = ed25519.sign(secret, DOMAIN + raw) if secret else UNSIGNED
    return MAGIC + len(raw).to_bytes(4, "big") + raw + sig + payload


def announce(pkg, version, target="micropython", board="sim"):
    digest = hashlib.sha256(pkg).digest().hex()
    return {"package": digest[:16], "version": version, "sha256": digest, "size": len(pkg),
            "target": target, "board": board}


class Hes:
    """The HES's side: signs and seals commands, opens results."""

    def __init__(self):
        self.counter = 0
        self.sealer = Sealer(DEVICE, ROOT_KEY, MemoryBootStore(), purpose=PURPOSE_DOWNLINK)
        self.public = ed25519.public_key(HES_SECRET)
        self.ring = Keyring()
        self.ring.add(DEVICE, ROOT_KEY)

    def command(self, op, args, counter=None, expires=T0 + 3600):
        self.counter = counter or self.counter + 1
        cmd = command.Command(op, "c-%d" % self.counter, DEVICE, "", self.counter, T0, expires,
                              command.key_id(self.public), args)
        body = cmd.to_body()
        return self.sealer.seal(command.signed(body, ed25519.sign(HES_SECRET, command.DOMAIN
                                                                  + body)), 2)

    def result(self, sealed):
        opened = open_envelope(sealed, self.ring)
        assert opened.header.kind == KIND_RESULT
        return json.loads(opened.payload)


class Uplink:
    """Carries commands and results; serves ``packages`` ({id: bytes}) to
    fetches at once (``later=False``, as HTTP) or on the next ``chunks()``
    (an outbox or a mesh node)."""

    def __init__(self, packages, later=False):
        self.packages = packages
        self.later = later
        self.inbox = []
        self.results = []
        self.asked = []
        self.requests = []

    def commands(self):
        out, self.inbox = self.inbox, []
        return out

    def send_result(self, device, counter, sealed):
        self.results.append(sealed)
        return True

    def fetch(self, package, offset, length, request):
        self.requests.append(request)
        if self.later:
            self.asked.append((package, offset, length))
            return None
        return self.packages[package][offset:offset + length]

    def chunks(self):
        out = [(p, o, self.packages[p][o:o + n]) for p, o, n in self.asked]
        self.asked = []
        out.reverse()               # out of order: the updater must sort them
        return out


class Files:
    """The loop's small files (as firmware.loop.Files), in ``root``."""

    def __init__(self, root):
        self.root = root

    def load(self, name):
        try:
            with open(self.root + "/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self, name, data):
        path = self.root + "/" + name
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def config(**update):
    return {"device_id": DEVICE, "root_key": ROOT_KEY.hex(), "key_epoch": 0,
            "verify_keys": [ed25519.public_key(HES_SECRET).hex()],
            "release_keys": [ed25519.public_key(RELEASE_SECRET).hex()],
            "update": _merge({"chunk": 256, "window": 4, "max_boots": 3,
                              "health_deadline": 600}, update)}


def _merge(a, b):
    a.update(b)
    return a


def slots():
    return Slots("wum")
