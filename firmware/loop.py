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
For signed commands and updates (``firmware.board_commands``,
``firmware.board_update``) an uplink also has ``commands() -> [sealed, ...]``
(commands that arrived), ``send_result(device, counter, sealed) -> bool``
(True: handed over or accepted), ``fetch(package, offset, length, request)
-> bytes | None`` (``request``: the sealed fetch request; None: asked, the
bytes come later) and ``chunks() -> [(package, offset, bytes), ...]``; an
uplink without them gets no commands.
"""

from agent.batch import Batch, BatchError, CodecState, Readings, encode_batch
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
        """``data``: bytes, or a callable given ``write`` that writes them
        piece by piece (a codec state is never held whole on a board)."""
        import os
        path = self.root + "/" + name
        with open(path + ".tmp", "wb") as f:
            if callable(data):
                data(f.write)
            else:
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
        self.last_acked = -1            # the highest seq acknowledged since this loop started
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
        """-> (Readings, statuses): each meter's values go into the hour's
        columns as soon as it is read (no dict per meter kept)."""
        readings, statuses = Readings(), []
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
            readings.add(mid, ts, values)
            statuses.append((mid, "read", None))
        return readings, statuses

    def cycle(self):
        """One hourly cycle: read, build, seal, archive, send. -> summary dict."""
        ts = int(self.clock())
        readings, statuses = self.read_all(ts)
        seq = self.next_seq
        batch = Batch(self.device, seq, ts, readings, (), statuses)
        n_read, n_failed = len(readings), len(statuses) - len(readings)
        del readings, statuses          # the batch holds them (the Readings itself)
        payload = encode_batch(batch, self.state)
        sealed = self.sealer.seal(payload)
        del payload
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
            self.files.save("codec.bin", nxt.write)
        sent = self.flush()
        return {"seq": seq, "ts": ts, "meters": n_read, "failed": n_failed,
                "bytes": len(sealed), "keyframe": bool(batch.keyframe),
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
                self.last_acked = max(self.last_acked, seq)
        self.take_acks()
        return sent

    def take_acks(self):
        acks = getattr(self.uplink, "acks", None)
        if acks is not None:
            for seq in acks():
                self.archive.ack(seq)
                self.last_acked = max(self.last_acked, seq)


class OutboxUplink:
    """Sealed batches as files ``<dir>/<device>-<seq>.bin`` for whatever
    carries them on (a modem script, a gateway, ``mpremote cp`` on the bench);
    acknowledged seqs are lines of ``<dir>/acked``, which ``acks()`` consumes.
    The rest of the exchange (docs/firmware.md, "The outbox"): results as
    ``result-<counter>.bin`` and fetch requests as ``fetch-<package>-<offset>.bin``
    in the outbox; sealed commands as ``cmd-<any>.bin`` and package bytes as
    ``chunk-<package>-<offset>.bin`` in ``inbox``, consumed when read."""

    def __init__(self, folder, inbox=None):
        self.folder = folder
        if inbox is None:
            inbox = folder.rsplit("/", 1)[0] + "/inbox" if "/" in folder else "inbox"
        self.inbox = inbox

    def _take(self, prefix):
        import os
        out = []
        try:
            names = sorted(os.listdir(self.inbox))
        except OSError:
            return out
        for n in names:
            if n.startswith(prefix) and n.endswith(".bin"):
                path = self.inbox + "/" + n
                with open(path, "rb") as f:
                    out.append((n[len(prefix):-4], f.read()))
                os.remove(path)
        return out

    def commands(self):
        return [data for _, data in self._take("cmd-")]

    def chunks(self):
        out = []
        for name, data in self._take("chunk-"):
            package, _, offset = name.rpartition("-")
            if offset.isdigit():
                out.append((package, int(offset), data))
        return out

    def fetch(self, package, offset, length, request):
        with open("%s/fetch-%s-%d.bin" % (self.folder, package, offset), "wb") as f:
            f.write(request)
        return None

    def send_result(self, device, counter, sealed):
        with open("%s/result-%d.bin" % (self.folder, counter), "wb") as f:
            f.write(sealed)
        return True

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
            if n.endswith("-%d.bin" % seq) and not n.startswith(("result-", "fetch-")):
                return self.folder + "/" + n
        return self.folder + "/-"


class HttpUplink:
    """``PUT /v1/batches/{device}/{seq}`` to ``hes-lite serve`` over a plain
    socket (HTTP/1.0; boards with a network stack). Acknowledged on 200;
    the commands an acknowledgement carries are kept for ``commands()``.
    Results go up as ``PUT /v1/results/{device}/{counter}``, package ranges
    come from ``POST /v1/firmware/{package}/fetch`` (docs/INTERFACES.md)."""

    def __init__(self, url, timeout=15):
        if not url.startswith("http://"):
            raise ValueError("only http:// URLs on a board")
        hostport, _, base = url[7:].partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port or 80)
        self.base = "/" + base.rstrip("/") if base else ""
        self.timeout = timeout
        self._commands = []

    def _request(self, method, path, body):
        import socket
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        s = socket.socket()
        try:
            s.settimeout(self.timeout)
            s.connect(addr)
            head = ("%s %s%s HTTP/1.0\r\nHost: %s\r\nContent-Type: "
                    "application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                    % (method, self.base, path, self.host, len(body)))
            s.sendall(head.encode() + body)
            reply = b""
            while True:
                chunk = s.recv(512)
                if not chunk:
                    break
                reply += chunk
        finally:
            s.close()
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b""
        return status, reply.partition(b"\r\n\r\n")[2], reply

    def send(self, device, seq, sealed):
        status, body, reply = self._request("PUT", "/v1/batches/%s/%d" % (device, seq), sealed)
        if status == b"200":
            try:
                import json
                for h in json.loads(body).get("commands", []):
                    self._commands.append(bytes.fromhex(h))
            except (ValueError, AttributeError, TypeError):
                pass
            return True
        raise OSError("HES answered %s" % (reply[:80],))

    def commands(self):
        out, self._commands = self._commands, []
        return out

    def send_result(self, device, counter, sealed):
        status, _, reply = self._request("PUT", "/v1/results/%s/%d" % (device, counter), sealed)
        if status == b"200":
            return True
        raise OSError("HES answered %s" % (reply[:80],))

    def fetch(self, package, offset, length, request):
        status, body, reply = self._request("POST", "/v1/firmware/%s/fetch" % package, request)
        if status == b"200":
            return body
        raise OSError("HES answered %s" % (reply[:80],))

    def chunks(self):
        return []
