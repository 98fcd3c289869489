"""Downloading an update package from the HES in ranges, resuming.

Owns the download's file life: ``<sha256>.part`` grows chunk by chunk
(synced as it goes), so a dead link, a kill -9 or a power cut costs only the
chunk in flight — the next try, by the same command or a later one for the
same package, asks for the rest; the finished file is renamed
``<sha256>.wup`` only once its size and SHA-256 are the announced ones.

A fetcher is anything with ``fetch(package_id, offset, length) -> bytes``
(``TransportError`` when it fails). ``HttpFetcher`` asks the HES itself
(``post_fetch``: ``POST /v1/firmware/{id}/fetch`` with a sealed kind-5
request under the device's own ``fetch`` key: the request is authenticated,
the answer is checked by digest and signature afterwards). ``RelayFetcher``
is a node without its own uplink: the same sealed request goes up through a
relay (the mesh to a gateway, which calls ``post_fetch``) and the bytes come
down (docs/firmware.md, "Through the mesh"): nothing else changes.
Must not know packages' insides or slots.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from agent.envelope import KIND_FETCH, PURPOSE_FETCH, FileBootStore, Sealer
from agent.transport import TransportError, redact
from agent.update_package import UpdateRefused, file_sha256

log = logging.getLogger(__name__)
RETRIES = 6


class _Requester:
    """Seals fetch requests under the device's own ``fetch`` key (its own boot
    epoch in ``boot_file``, so nonces never repeat across restarts)."""

    def __init__(self, device: str, root_key: bytes, boot_file: str, key_epoch: int = 0) -> None:
        self.sealer = Sealer(device, root_key, FileBootStore(boot_file), key_epoch,
                             purpose=PURPOSE_FETCH)

    def request(self, package_id: str, offset: int, length: int) -> bytes:
        """The sealed request (the same bytes whichever way they travel)."""
        doc = {"package": package_id, "offset": offset, "length": length}
        return self.sealer.seal(json.dumps(doc, sort_keys=True).encode(), KIND_FETCH)


def post_fetch(base_url: str, package_id: str, sealed: bytes, length: int = 65536,
               timeout: float = 30.0) -> bytes:
    """``POST {base}/v1/firmware/{id}/fetch`` with a sealed request -> the bytes.
    What a device with its own uplink does, and what a gateway does for a node
    without one (it needs none of the node's keys). ``TransportError``:
    ``rejected`` for a 4xx, ``unreachable``/``timeout`` otherwise."""
    p = urlsplit(base_url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise TransportError("not an http(s) URL: %r" % redact(base_url), "protocol")
    url = redact(base_url)
    conn: http.client.HTTPConnection
    if p.scheme == "https":
        conn = http.client.HTTPSConnection(p.hostname, p.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    path = "%s/v1/firmware/%s/fetch" % (p.path.rstrip("/"), quote(package_id, safe=""))
    try:
        conn.request("POST", path, body=sealed,
                     headers={"content-type": "application/octet-stream"})
        r = conn.getresponse()
        body = r.read(length + 1)
    except TimeoutError as e:
        raise TransportError("fetch timed out: %s" % e, "timeout", url=url) from None
    except (OSError, http.client.HTTPException) as e:
        raise TransportError("fetch failed: %s" % e, "unreachable", url=url) from None
    finally:
        conn.close()
    if r.status != 200:
        try:
            reason = json.loads(body).get("error", "?")
        except (ValueError, AttributeError):
            reason = "?"
        kind = "unreachable" if r.status in (408, 429) or r.status >= 500 else "rejected"
        raise TransportError("HES refused the fetch: %d %s" % (r.status, reason), kind,
                             url=url, status=r.status, hes_reason=reason)
    if len(body) > length or not body:
        raise TransportError("HES answered %d bytes for a %d-byte range" % (len(body), length),
                             "protocol", url=url)
    return body


class HttpFetcher(_Requester):
    """A device with its own uplink asks the HES itself."""

    def __init__(self, base_url: str, device: str, root_key: bytes, boot_file: str,
                 timeout: float = 30.0, key_epoch: int = 0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError("not an http(s) URL: %r" % redact(base_url), "protocol")
        super().__init__(device, root_key, boot_file, key_epoch)
        self.base = base_url
        self.url = redact(base_url)
        self.timeout = timeout

    def __repr__(self) -> str:
        return "HttpFetcher(%s)" % self.url

    def fetch(self, package_id: str, offset: int, length: int) -> bytes:
        return post_fetch(self.base, package_id, self.request(package_id, offset, length),
                          length, self.timeout)


class RelayFetcher(_Requester):
    """A node without its own uplink: ``relay(package_id, sealed, length) ->
    bytes`` carries the sealed request up to a gateway, which calls
    ``post_fetch`` with the HES, and the answer back down — the mesh's
    generic message path (docs/firmware.md, "Through the mesh"). The relay
    holds no key and sees nothing it could alter unnoticed: the request is
    sealed here, the package checked here by digest and signature."""

    def __init__(self, device: str, root_key: bytes, boot_file: str,
                 relay: Callable[[str, bytes, int], bytes], key_epoch: int = 0) -> None:
        super().__init__(device, root_key, boot_file, key_epoch)
        self.relay = relay

    def __repr__(self) -> str:
        return "RelayFetcher(%r)" % (self.relay,)

    def fetch(self, package_id: str, offset: int, length: int) -> bytes:
        data = self.relay(package_id, self.request(package_id, offset, length), length)
        if not data or len(data) > length:
            raise TransportError("the relay answered %d bytes for a %d-byte range"
                                 % (len(data), length), "protocol")
        return data


def download(fetcher: object, package_id: str, size: int, digest: str, folder: str,
             chunk: int, stop: threading.Event | None = None, retries: int = RETRIES) -> str:
    """The package as a local file, fetched from where an earlier try left
    off; ``UpdateRefused(corrupt_download)`` if what arrived is not it,
    ``TransportError`` when the link stays down through ``retries`` tries."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    done = os.path.join(folder, digest + ".wup")
    part = os.path.join(folder, digest + ".part")
    if os.path.exists(done):
        if file_sha256(done) == (digest, size):
            return done
        os.remove(done)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > size:
        os.remove(part)
        have = 0
    if have:
        log.info("package %s: resuming the download at %d of %d bytes", package_id, have, size)
    failures = 0
    with open(part, "ab") as f:
        while have < size:
            if stop is not None and stop.is_set():
                raise TransportError("stopping", "unreachable")
            try:
                data = fetcher.fetch(package_id, have, min(chunk, size - have))  # type: ignore[attr-defined]
            except TransportError as e:
                failures += 1
                if failures > retries or e.reason == "rejected":
                    raise
                wait = min(30.0, 0.5 * 2 ** failures)
                log.info("package %s: fetch at %d failed (%s), again in %.1fs", package_id,
                         have, e, wait)
                if stop is not None and stop.wait(wait):
                    raise
                elif stop is None:
                    threading.Event().wait(wait)
                continue
            failures = 0
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            have += len(data)
    got = file_sha256(part)
    if got != (digest, size):
        os.remove(part)
        raise UpdateRefused("corrupt_download", "the downloaded package (%d bytes, SHA-256 "
                            "%s...) is not the one announced (%d bytes, %s...)"
                            % (got[1], got[0][:16], size, digest[:16]))
    os.replace(part, done)
    return done
