"""The agent loop on a board: one hourly cycle reads every meter of the bus,
builds the hour's batch with the codec, seals it, keeps it in the flash
archive and hands unacknowledged batches to the uplink, oldest first.

Portable. Every hardware handle is injected (``port``: a
``firmware.rs485.Rs485``; ``archive``: a ``firmware.archive.Archive``;
``uplink``; ``clock()`` -> UTC epoch seconds; ``files``: where the codec
state lives), so the same loop runs on a board and on fakes. Must not know
UART registers, HTTP or the HES's store.

Batches form a chain: each is a delta against the codec state as it stands
after the batch before it (the HES decodes them in order and holds a delta
whose base it has not seen yet), with a keyframe at least daily, at the
first cycle, and whenever the persisted state is older than the newest
archived batch (a power cut between archiving and saving the state).

The uplink interface (a mesh node, a modem, an HTTP client or an outbox all
plug in): ``send(device, seq, sealed) -> bool`` (True: acknowledged now;
False: handed over, an ack may come later) and optionally
``acks() -> [seq, ...]`` (acknowledgements that arrived since the last call).
An exception from ``send`` leaves the batch in the archive for the next try.
"""

from agent.batch import Batch, BatchError, CodecState, encode_batch
from drivers import DriverError
from firmware.archive import ArchiveError, ArchiveFull
from firmware.meters import read_meter


class Files:
    """The loop's small files (codec state), replaced atomically."""

    def __init__(self, root):
        self.root = root

    def load(self, name):
        try:
            with open(self.root + "/" + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self, name, data):
        import os
        path = self.root + "/" + name
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)


class AgentLoop:
    def __init__(self, config, port, archive, sealer, uplink, clock, files, log=None):
        self.device = config["device_id"]
        self.meters = config.get("meters", [])
        self.bus = config.get("bus", {}).get("name", "rs485")
        self.port = port
        self.archive = archive
        self.sealer = sealer
        self.uplink = uplink
        self.clock = clock
        self.files = files
        self.log = log or (lambda *a: None)
        self.ids = {}                   # address -> meter id learned by a read
        self.profiles = {}
        self.refused = 0                # batches the full archive could not take
        self.state = None
        raw = files.load("codec.bin")
        if raw:
            try:
                self.state = CodecState.from_bytes(raw)
            except BatchError as e:     # a bad state file means: a keyframe
                self.log("codec state unusable (%s): next batch is a keyframe" % e)
        top = archive.max_seq()
        if self.state is not None and self.state.seq < top:
            self.state = None           # the state lags the archive: start a new chain
        self.next_seq = max(top, self.state.seq if self.state is not None else 0) + 1

    def read_all(self, ts):
        readings, statuses = [], []
        for spec in self.meters:
            key = "%s:%s" % (spec["protocol"], spec["address"])
            try:
                mid, values = read_meter(self.port, spec, self.bus, self.profiles)
            except DriverError as e:
                mid = self.ids.get(key, "%s:%s" % (self.bus, key))
                statuses.append((mid, "failed", "%s: %s" % (type(e).__name__, e)))
                self.log("meter %s failed: %s" % (mid, e))
                continue
            self.ids[key] = mid
            readings.append((mid, ts, values))
            statuses.append((mid, "read", None))
        return readings, statuses

    def cycle(self):
        """One hourly cycle: read, build, seal, archive, send. -> summary dict."""
        ts = int(self.clock())
        readings, statuses = self.read_all(ts)
        seq = self.next_seq
        batch = Batch(self.device, seq, ts, readings, (), statuses)
        payload = encode_batch(batch, self.state)
        sealed = self.sealer.seal(payload)
        stored = True
        try:
            self.archive.append(seq, ts, sealed)
        except ArchiveFull as e:
            self.refused += 1
            stored = False
            self.log("archive full, batch %d dropped: %s" % (seq, e))
        self.next_seq = seq + 1
        if stored:
            nxt = self.state if self.state is not None else CodecState(self.device)
            nxt.advance(batch)
            self.state = nxt
            self.files.save("codec.bin", nxt.to_bytes())
        sent = self.flush()
        return {"seq": seq, "ts": ts, "meters": len(readings), "failed": len(statuses) -
                len(readings), "bytes": len(sealed), "keyframe": bool(batch.keyframe),
                "stored": stored, "sent": sent, "unacked": len(self.archive.unacked())}

    def flush(self):
        """Offer unacknowledged batches to the uplink, oldest first; stop at the
        first failure. -> how many were handed over."""
        self.take_acks()
        sent = 0
        for seq in self.archive.unacked():
            try:
                acked = self.uplink.send(self.device, seq, self.archive.get(seq))
            except (OSError, ArchiveError) as e:
                self.log("uplink: batch %d not sent: %s" % (seq, e))
                break
            sent += 1
            if acked:
                self.archive.ack(seq)
        self.take_acks()
        return sent

    def take_acks(self):
        acks = getattr(self.uplink, "acks", None)
        if acks is not None:
            for seq in acks():
                self.archive.ack(seq)


class OutboxUplink:
    """Sealed batches as files ``<dir>/<device>-<seq>.bin`` for whatever
    carries them on (a modem script, a gateway, ``mpremote cp`` on the bench);
    acknowledged seqs are lines of ``<dir>/acked``, which ``acks()`` consumes."""

    def __init__(self, folder):
        self.folder = folder

    def send(self, device, seq, sealed):
        with open("%s/%s-%d.bin" % (self.folder, device, seq), "wb") as f:
            f.write(sealed)
        return False

    def acks(self):
        import os
        path = self.folder + "/acked"
        try:
            with open(path) as f:
                lines = f.read().split()
        except OSError:
            return []
        os.remove(path)
        out = []
        for line in lines:
            if line.isdigit():
                out.append(int(line))
                try:
                    os.remove(self._name(int(line)))
                except OSError:
                    pass
        return out

    def _name(self, seq):
        import os
        for n in os.listdir(self.folder):
            if n.endswith("-%d.bin" % seq):
                return self.folder + "/" + n
        return self.folder + "/-"


class HttpUplink:
    """``PUT /v1/batches/{device}/{seq}`` to ``hes-lite serve`` over a plain
    socket (HTTP/1.0; boards with a network stack). Acknowledged on 200."""

    def __init__(self, url, timeout=15):
        if not url.startswith("http://"):
            raise ValueError("only http:// URLs on a board")
        hostport, _, base = url[7:].partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port or 80)
        self.base = "/" + base.rstrip("/") if base else ""
        self.timeout = timeout

    def send(self, device, seq, sealed):
        import socket
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        s = socket.socket()
        try:
            s.settimeout(self.timeout)
            s.connect(addr)
            head = ("PUT %s/v1/batches/%s/%d HTTP/1.0\r\nHost: %s\r\nContent-Type: "
                    "application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                    % (self.base, device, seq, self.host, len(sealed)))
            s.sendall(head.encode() + sealed)
            reply = b""
            while True:
                chunk = s.recv(512)
                if not chunk:
                    break
                reply += chunk
        finally:
            s.close()
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b""
        if status == b"200":
            return True
        raise OSError("HES answered %s" % (reply[:80],))
