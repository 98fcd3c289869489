"""The agent's ``[update]`` table: who may sign its firmware, where its A/B
slots are, and how long a new version has to prove healthy::

    [update]                     # signed updates (docs/firmware.md)
    release_key = "<64 hex>"     # the utility's release public key (or a list,
                                 # or release_key_file = "/etc/wum/release.pub")
    revoked_release_keys = []    # key ids (16 hex) no longer trusted
    health_deadline = 7500       # s: a new version must read a cycle and have an
                                 # upload acknowledged within this, or it is rolled back
                                 # (default: two periods, the jitter and five minutes)
    max_boots = 3                # boots a new version gets to report healthy
    slots = "/opt/wum/slots"     # the A/B slots (default: what the launcher says,
                                 # $WUM_SLOTS; none: updates are refused)
    url = "http://hes:8080"      # where packages are fetched (default: the HTTP uplink's)
    chunk = 32768                # bytes per fetch request (1024..65536)
    download_dir = "/var/lib/wum/update"   # default: "update" next to the archive

Owns parsing and validation only, as ``agent.config`` does for the rest.
Must not know packages or slots (``agent.update`` uses them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ConfigError, _check_known, _get

KEYS = {"release_key", "release_key_file", "revoked_release_keys", "health_deadline",
        "max_boots", "slots", "url", "chunk", "download_dir"}


@dataclass(frozen=True)
class UpdateConfig:
    release_keys: tuple[bytes, ...] = ()
    revoked: tuple[str, ...] = ()
    health_deadline: float = 7500.0
    max_boots: int = 3
    slots: str = ""
    url: str = ""
    chunk: int = 32768
    download_dir: str = ""


def _key(v: object, where: str) -> bytes:
    try:
        if not isinstance(v, str):
            raise ValueError
        b = bytes.fromhex(v.strip())
        if len(b) != 32:
            raise ValueError
    except ValueError:
        raise ConfigError("%s must be 64 hex digits (an Ed25519 public key), got %r"
                          % (where, v), key=where) from None
    return b


def parse_update(t: dict[str, Any], base: Path | None, archive: str, uplink_url: str,
                 period: int = 3600, jitter: float = 0.0) -> UpdateConfig:
    _check_known(t, KEYS, "update")
    raw: list[object] = []
    rk = t.get("release_key", [])
    raw.extend(rk if isinstance(rk, list) else [rk])
    if "release_key_file" in t:
        kf = Path(_get(t, "release_key_file", "update", str))
        if base and not kf.is_absolute():
            kf = base / kf
        try:
            raw.extend(ln.strip() for ln in kf.read_text().splitlines()
                       if ln.strip() and not ln.startswith("#"))
        except OSError as e:
            raise ConfigError("update.release_key_file unreadable: %s" % e,
                              key="update.release_key_file") from e
    revoked = _get(t, "revoked_release_keys", "update", list, [])
    for r in revoked:
        if not isinstance(r, str) or len(r) != 16 or any(c not in "0123456789abcdef" for c in r):
            raise ConfigError("update.revoked_release_keys holds key ids (16 lowercase hex)",
                              key="update.revoked_release_keys")
    deadline = _get(t, "health_deadline", "update", (int, float), 2 * period + jitter + 300)
    if not 5 <= deadline <= 7 * 86400:
        raise ConfigError("update.health_deadline must be 5..604800 s",
                          key="update.health_deadline")
    boots = _get(t, "max_boots", "update", int, 3)
    if not 1 <= boots <= 20:
        raise ConfigError("update.max_boots must be 1..20", key="update.max_boots")
    chunk = _get(t, "chunk", "update", int, 32768)
    if not 1024 <= chunk <= 65536:
        raise ConfigError("update.chunk must be 1024..65536 bytes", key="update.chunk")
    url = _get(t, "url", "update", str, "")
    if not url and uplink_url.startswith(("http://", "https://")):
        url = uplink_url
    slots = _get(t, "slots", "update", str, "") or os.environ.get("WUM_SLOTS", "")
    dl = _get(t, "download_dir", "update", str, "")
    if not dl:
        dl = str(Path(archive).parent / "update")
    elif base and not Path(dl).is_absolute():
        dl = str(base / dl)
    return UpdateConfig(tuple(_key(k, "update.release_key") for k in raw), tuple(revoked),
                        float(deadline), boots, slots, url, chunk, dl)
