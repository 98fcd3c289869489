"""The agent's [update] table: release keys (inline, list or file),
defaults derived from the schedule, and every bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, parse

BASE = {"concentrator": {"id": "DC-1", "archive": "/var/lib/wum/archive.db"},
        "uplink": {"url": "http://hes:8080", "key": "ab" * 32},
        "bus": [{"name": "b", "port": "/dev/null", "meter": [{"address": 1}]}]}


def cfg(update: dict[str, object] | None = None, **top: object):  # noqa: ANN201
    doc = dict(BASE, **top)
    if update is not None:
        doc["update"] = update
    return parse(doc)


def test_defaults_follow_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WUM_SLOTS", raising=False)
    u = cfg().update
    assert u is not None and u.release_keys == () and u.slots == ""
    assert u.health_deadline == 2 * 3600 + 300 and u.max_boots == 3
    assert u.url == "http://hes:8080" and u.download_dir == "/var/lib/wum/update"
    u = cfg(schedule={"period": 900, "jitter": 60}).update
    assert u is not None and u.health_deadline == 2 * 900 + 60 + 300
    monkeypatch.setenv("WUM_SLOTS", "/opt/wum/slots")           # what the launcher says
    assert cfg().update.slots == "/opt/wum/slots"  # type: ignore[union-attr]


def test_release_keys_inline_list_and_file(tmp_path: Path) -> None:
    (tmp_path / "release.pub").write_text("# the utility's keys\n" + "cd" * 32 + "\n")
    doc = dict(BASE, update={"release_key": ["ab" * 32], "release_key_file": "release.pub"})
    u = parse(doc, tmp_path).update
    assert u is not None and u.release_keys == (bytes.fromhex("ab" * 32),
                                                bytes.fromhex("cd" * 32))


@pytest.mark.parametrize("update, key", [
    ({"release_key": "abc"}, "update.release_key"),
    ({"health_deadline": 1}, "update.health_deadline"),
    ({"max_boots": 0}, "update.max_boots"),
    ({"chunk": 100}, "update.chunk"),
    ({"revoked_release_keys": ["nothex"]}, "update.revoked_release_keys"),
    ({"releasekey": "ab"}, "update.releasekey"),
    ({"release_key_file": "/nonexistent/release.pub"}, "update.release_key_file"),
])
def test_bad_keys_are_named(update: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(update)
    assert e.value.fields["key"] == key
