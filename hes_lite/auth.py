"""API tokens and roles: who may call what.

Owns the token format, its digest, the role ladder and the check of an
``Authorization`` header against the store. Roles, each including the one
before: ``viewer`` (read, export), ``operator`` (+ commands), ``admin``
(+ keys, tokens, the audit log).

A token is ``wumhes_`` + 43 URL-safe characters (``secrets.token_urlsafe(32)``:
256 random bits); the prefix makes a leaked token easy to recognise in code,
logs and secret scanners. It is shown once, at creation, and stored only as
its SHA-256 digest. A plain fast hash is right here (a slow password hash is
not needed): the token is 256 bits from the OS's CSPRNG, so there is no
dictionary to search and no brute force to slow down, and a fixed digest
lets the store find the token with one indexed lookup instead of trying a
salted hash per stored token. Someone who reads the database learns the
digests, which cannot be presented as tokens.

Must not know HTTP (``hes_lite.api`` maps ``AuthError`` to 401/403) or SQL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from hes_lite import HesError
from hes_lite.audit import Auditor
from hes_lite.store import Store, TokenRecord

ROLES = ("viewer", "operator", "admin")
PREFIX = "wumhes_"
NAME_MAX = 64


class AuthError(HesError):
    """A request was refused. ``status`` 401 (``reason``: missing, malformed,
    unknown, revoked) or 403 (``reason``: forbidden); ``name`` is the token's
    name when it is known; ``need`` the role the route asks for."""

    status: int
    reason: str

    def __init__(self, status: int, reason: str, name: str | None = None,
                 need: str = "") -> None:
        super().__init__(reason, status=status, reason=reason, name=name, need=need)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def actor(self) -> str:
        return "token:" + self.name


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def allows(role: str, need: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(need)


def check_name(name: str) -> str:
    """Token names: 1..64 printable characters without whitespace."""
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable() or any(
            c.isspace() for c in name):
        raise HesError("a token name is 1..64 printable characters, no spaces", name=name)
    return name


def create(store: Store, name: str, role: str, now: float) -> str:
    """A new token (returned once, never stored) under ``name``."""
    if role not in ROLES:
        raise HesError("unknown role", role=role)
    token = new_token()
    store.add_token(TokenRecord(check_name(name), role, digest(token), now))
    return token


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (RFC 6750 §2.1);
    None when there is no header; AuthError(malformed) when it is not one."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(401, "malformed")
    return token


class Authenticator:
    """Checks a request's token against the store on every call (no cache: a
    revocation, even by another process, holds from the next request) and
    audits every refusal."""

    def __init__(self, store: Store, auditor: Auditor,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.auditor = auditor
        self.clock = clock

    def check(self, header: str | None, need: str, route: str, method: str = "GET",
              remote: str = "") -> Principal:
        """The principal behind ``header`` if its role reaches ``need``;
        otherwise AuthError, audited with the route and remote address."""
        try:
            return self._check(header, need)
        except AuthError as e:
            outcome = "forbidden" if e.status == 403 else "unauthenticated"
            name = e.fields.get("name")
            actor = "token:%s" % name if name else "anonymous"
            self.auditor.record(actor, "auth", route, outcome, remote, method=method,
                                reason=e.reason, need=need)
            raise

    def _check(self, header: str | None, need: str) -> Principal:
        token = bearer(header)
        if token is None:
            raise AuthError(401, "missing", need=need)
        rec = self.store.token(digest(token))
        if rec is None:
            raise AuthError(401, "unknown", need=need)
        if rec.revoked is not None:
            raise AuthError(401, "revoked", rec.name, need)
        if not allows(rec.role, need):
            raise AuthError(403, "forbidden", rec.name, need)
        return Principal(rec.name, rec.role)
