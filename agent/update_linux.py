"""Installing a Linux bundle into an A/B slot, and checking that a slot is
whole before it boots.

CPython, standard library only: ``wum flash --ssh`` runs it on a
concentrator straight from the wheel it is installing. A Linux slot
(``agent.slots``) holds the bundle's files (the wheel, ``agent.toml.example``,
``wum.service``, ``manifest.json``) and two more: ``lib/``, the wheel
unpacked (the agent is pure Python, so unpacking is installing; third-party
libraries come from the concentrator's Python — docs/firmware.md), and
``installed.json``, every file of the slot with its SHA-256, which the
launcher checks before it boots the slot. Must not know signatures (checked
before this runs) or how a version proves healthy.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from agent.slots import Slots
from agent.update_package import Header, UpdateRefused, check_path, payload_entries

INSTALLED = "installed.json"
Entry = tuple[str, int, str, Iterable[bytes]]


def package_entries(f: IO[bytes], header: Header) -> Iterator[Entry]:
    """The payload's files, read in order from ``f`` (at the payload)."""
    return payload_entries(f, header)  # type: ignore[no-any-return]


def bundle_entries(bundle: Path, manifest: dict[str, Any]) -> Iterator[Entry]:
    """A bundle folder's files (manifest.json included) as install entries."""
    for rel in sorted(list(manifest["files"]) + ["manifest.json"]):
        data = (bundle / rel).read_bytes()
        yield rel, len(data), hashlib.sha256(data).hexdigest(), [data]


def install(slots: Slots, entries: Iterable[Entry]) -> str:
    """Write ``entries`` into the inactive slot, checking each file's size and
    SHA-256, unpack its wheel, list every file; the slot gets its name only
    when all of it is there. -> the slot written (not yet active)."""
    return slots.install(entries, lambda tmp: unpack_wheel(slots, Path(tmp)))


def unpack_wheel(slots: Slots, folder: Path) -> None:
    """The wheel ``manifest.json`` names, unpacked into ``lib/``; then
    ``installed.json`` listing every file of the slot."""
    manifest = json.loads((folder / "manifest.json").read_text())
    wheel = manifest.get("wheel")
    if not isinstance(wheel, str) or not (folder / wheel).is_file():
        raise UpdateRefused("malformed", "the bundle names no wheel")
    with zipfile.ZipFile(folder / wheel) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            rel = check_path(info.filename)
            slots.write_file(str(folder), "lib/" + rel, [z.read(info)])
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != INSTALLED:
            files[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    slots.write_file(str(folder), INSTALLED, [json.dumps(
        {"version": manifest.get("version"), "files": files}, indent=1, sort_keys=True).encode()])


def verify_slot(folder: Path) -> str | None:
    """None when every file ``installed.json`` lists is there with its hash;
    else what is wrong."""
    try:
        doc = json.loads((folder / INSTALLED).read_text())
        files = doc["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "%s: no readable %s" % (folder, INSTALLED)
    for rel, sha in files.items():
        try:
            got = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
        except OSError:
            return "%s: %s is missing" % (folder, rel)
        if got != sha:
            return "%s: %s is damaged (hash differs)" % (folder, rel)
    return None
