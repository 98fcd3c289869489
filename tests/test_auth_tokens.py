"""API tokens from the command line (real subprocesses) and in the store:
shown once, stored only as digests, listed without secrets, revocable, every
change and refusal audited (database and JSON-lines file)."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from hes_lite import auth
from hes_lite.api import create_app
from hes_lite.audit import Auditor
from hes_lite.ingest import Ingestor
from hes_lite.store import open_store
from tests.hes_client import AppClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hes(*args, ok=True, env=None):
    p = subprocess.run([sys.executable, "-m", "hes_lite.cli", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, env=env)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_tokens_cli_shown_once_stored_as_digest(tmp_path):
    db = f"sqlite:///{tmp_path}/hes.db"
    audit_file = tmp_path / "audit.jsonl"
    out = hes("tokens", "add", "grafana", "--role", "viewer", "--db", db,
              "--audit-file", str(audit_file)).stdout
    token = out.strip()
    assert out == token + "\n"                      # the token alone on stdout
    assert token.startswith("wumhes_") and len(token) == 7 + 43
    ops = hes("tokens", "add", "ops", "--role", "operator", "--db", db).stdout.strip()
    assert ops != token
    # names are never reused, roles are checked
    assert hes("tokens", "add", "grafana", "--role", "admin", "--db", db, ok=False).returncode == 1
    assert hes("tokens", "add", "x", "--role", "root", "--db", db, ok=False).returncode == 2
    listed = hes("tokens", "list", "--db", db).stdout
    assert "grafana\tviewer\t" in listed and "ops\toperator\t" in listed
    assert token not in listed and ops not in listed
    rows = json.loads(hes("tokens", "list", "--json", "--db", db).stdout)
    assert [(r["name"], r["role"], r["revoked"]) for r in rows] == [
        ("grafana", "viewer", None), ("ops", "operator", None)]
    # the database (file and WAL) holds the digests, never a token
    raw = b"".join((tmp_path / n).read_bytes() for n in os.listdir(tmp_path)
                   if n.startswith("hes.db"))
    for t in (token, ops):
        assert t.encode() not in raw and t[7:].encode() not in raw
        assert auth.digest(t) in raw
    conn = sqlite3.connect(tmp_path / "hes.db")
    assert {bytes(r[0]) for r in conn.execute("SELECT digest FROM api_tokens")} == {
        auth.digest(token), auth.digest(ops)}
    assert hes("tokens", "revoke", "grafana", "--db", db).stdout.strip() == "grafana: revoked"
    assert hes("tokens", "revoke", "grafana", "--db", db, ok=False).returncode == 1
    assert "revoked 20" in hes("tokens", "list", "--db", db).stdout.splitlines()[0]
    # audited: who (the CLI's user) and what, in the table and the file
    log = [json.loads(x) for x in hes("audit", "--json", "--db", db).stdout.splitlines()]
    assert [(e["action"], e["target"], e["outcome"]) for e in log] == [
        ("token.add", "grafana", "ok"), ("token.add", "ops", "ok"),
        ("token.revoke", "grafana", "ok"), ("token.revoke", "grafana", "absent")]
    assert all(e["actor"].startswith("cli:") for e in log)
    lines = [json.loads(x) for x in audit_file.read_text().splitlines()]
    assert [e["action"] for e in lines] == ["token.add"] and lines[0]["detail"] == {
        "role": "viewer"}
    assert hes("audit", "--db", db, "--since", "2999-01-01T00:00:00Z").stdout == ""
    assert len(hes("audit", "--db", db, "--since", "2000-01-01T00:00:00Z").stdout
               .splitlines()) == 4
    text = hes("audit", "--db", db, "--limit", "1").stdout.splitlines()
    assert len(text) == 1 and "\ttoken.revoke\tgrafana\tabsent\t" in text[0]


def test_key_changes_audited_from_the_environment_file(tmp_path, db_url):
    db = db_url
    env = {**os.environ, "HES_LITE_AUDIT_FILE": str(tmp_path / "a.jsonl")}
    key = "ab" * 32
    hes("keys", "add", "dc-1", "--key", key, "--db", db, env=env)
    hes("keys", "rotate", "dc-1", "--key", "cd" * 32, "--db", db, env=env)
    hes("keys", "revoke", "dc-1", "--db", db, env=env)
    got = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(e["action"], e["target"], e["detail"].get("epoch")) for e in got] == [
        ("key.add", "dc-1", 0), ("key.rotate", "dc-1", 1), ("key.revoke", "dc-1", None)]
    assert key not in (tmp_path / "a.jsonl").read_text()
    assert len(open_store(db).audit_log()) == 3


@pytest.fixture
def app(tmp_path, db_url):
    store = open_store(db_url)
    tokens = {role: auth.create(store, role, role, 0.0) for role in auth.ROLES}
    client = AppClient(create_app(store, Ingestor(store),
                                  auditor=Auditor(store, str(tmp_path / "audit.jsonl"))))
    yield client, store, tokens
    client.close()
    store.close()


def test_bearer_challenges_and_refusals_audited(app):
    client, store, tokens = app
    r = client.get("/v1/meters")
    assert r.status_code == 401 and r.json() == {"error": "unauthenticated"}
    assert r.headers["www-authenticate"] == 'Bearer realm="hes-lite"'
    r = client.get("/v1/meters", token="wumhes_" + "A" * 43)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="hes-lite", error="invalid_token"'
    assert client.get("/v1/meters", headers={"authorization": "Basic dXNlcjpwYXNz"}
                      ).status_code == 401
    assert client.get("/v1/meters", token=tokens["viewer"]).status_code == 200
    r = client.get("/v1/tokens", token=tokens["operator"])
    assert r.status_code == 403 and r.json() == {"error": "forbidden", "need": "admin"}
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    store.revoke_token("viewer", 1.0)
    assert client.get("/v1/meters", token=tokens["viewer"]).status_code == 401
    log = [e for e in store.audit_log() if e.action == "auth"]
    assert [(e.actor, e.outcome, e.detail["reason"], e.target, e.remote) for e in log] == [
        ("anonymous", "unauthenticated", "missing", "/v1/meters", "10.9.8.7"),
        ("anonymous", "unauthenticated", "unknown", "/v1/meters", "10.9.8.7"),
        ("anonymous", "unauthenticated", "malformed", "/v1/meters", "10.9.8.7"),
        ("token:operator", "forbidden", "forbidden", "/v1/tokens", "10.9.8.7"),
        ("token:viewer", "unauthenticated", "revoked", "/v1/meters", "10.9.8.7")]


def test_health_open_but_says_nothing_about_the_fleet(app):
    client, _, tokens = app
    r = client.get("/v1/health")
    assert r.status_code == 200 and set(r.json()) == {"status", "server_time"}
    full = client.get("/v1/health", token=tokens["viewer"]).json()
    assert {"concentrators", "backlog", "rejects", "readings"} <= set(full)
    assert client.get("/v1/health", token="nope").status_code == 401


def test_admin_revokes_over_the_api_and_it_holds_at_once(app):
    client, store, tokens = app
    victim = auth.create(store, "victim", "viewer", 0.0)
    assert client.get("/v1/meters", token=victim).status_code == 200
    assert client.request("DELETE", "/v1/tokens/victim", token=tokens["operator"]
                          ).status_code == 403
    r = client.request("DELETE", "/v1/tokens/victim", token=tokens["admin"])
    assert r.status_code == 200 and r.json() == {"name": "victim", "revoked": True}
    assert client.request("DELETE", "/v1/tokens/victim", token=tokens["admin"]
                          ).status_code == 404
    assert client.get("/v1/meters", token=victim).status_code == 401
    listed = client.get("/v1/tokens", token=tokens["admin"]).json()
    assert {t["name"]: t["revoked"] is not None for t in listed} == {
        "admin": False, "operator": False, "viewer": False, "victim": True}
    assert all(set(t) == {"name", "role", "created", "revoked"} for t in listed)
    entries = client.get("/v1/audit", token=tokens["admin"]).json()
    revokes = [e for e in entries if e["action"] == "token.revoke"]
    assert [(e["actor"], e["outcome"]) for e in revokes] == [
        ("token:admin", "ok"), ("token:admin", "absent")]
