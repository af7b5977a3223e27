"""API keys: create (the secret is shown once), list, revoke, and resolve a presented key to its caller.

Keys are ``rk_`` + 43 URL-safe random characters (256 bits); the database keeps only their sha256, so a leaked
database does not leak keys, and a lost key cannot be recovered (revoke it and create another).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.tables import ApiKey, utcnow
from app.services.errors import ConflictError, NotFoundError, UnprocessableError

KEY_PREFIX = "rk_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name (None: no key, with auth off) and whether it is an admin key."""

    name: str | None
    admin: bool

    def can_see(self, owner: str | None) -> bool:
        """True when a job or model owned by ``owner`` is visible to this caller."""
        return self.admin or owner == self.name


#: The caller when keys are not required and none is sent: one local user who sees everything.
LOCAL = Caller(name=None, admin=True)


def key_digest(key: str) -> str:
    """sha256 hex of a key (what the database stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False) -> str:
    """Create a key named ``name``; return the secret (shown once). 409 when the name exists."""
    if not NAME_PATTERN.match(name):
        raise UnprocessableError(f"invalid key name '{name}': use 1-100 letters, digits, '_', '.', '-'")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ConflictError(f"a key named '{name}' exists; revoke it first or choose another name")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_sha256=key_digest(secret), admin=admin))
    session.flush()
    return secret


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first (revoked ones included)."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, name: str) -> None:
    """Revoke the key ``name`` (404 when unknown); revoked keys stop working at once."""
    result = session.execute(update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    if not result.rowcount:
        if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is None:
            raise NotFoundError(f"no key named '{name}'")


def caller_for(session: Session, key: str) -> Caller | None:
    """The caller a presented key stands for (None: unknown or revoked)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == key_digest(key.strip())))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:  # one write a minute at most
        row.last_used_at = now
    return Caller(name=row.name, admin=row.admin)
