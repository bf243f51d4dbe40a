"""Identities: API keys with a role, the CLI's own identity, and who is named on the record.

A key is ``orch_`` followed by 43 URL-safe characters (32 random bytes from :mod:`secrets`): the prefix lets
secret scanners (GitHub's push protection, gitleaks, trufflehog custom rules) recognise a leaked key, as GitHub's own
``ghp_`` prefix does (https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/).

Only the key's SHA-256 is stored. A slow password hash (argon2, bcrypt) exists to make guessing a low-entropy
password expensive; a 256-bit random key cannot be guessed at any speed, so the extra cost would buy nothing and be
paid on every API call. An unsalted digest also makes the lookup one indexed equality (the same choice as GitHub's
token storage and Django REST Knox). The stored digest is then compared with :func:`hmac.compare_digest`.

Identities, as they appear in ``Event.actor``: ``token:<name>`` for an API key, ``cli:<OS user>`` for the command
line (whose boundary is the data dir's file permissions), ``system:<worker>`` for the sync service.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from models.enums import AccessRole
from models.tables import ApiToken, Event, utcnow

KEY_PREFIX = "orch_"
TOKEN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: no write on every request."""


class TokenError(ValueError):
    """A token request that cannot be done (bad name, name taken, unknown name); nothing was written."""


@dataclass(frozen=True)
class Identity:
    """Who is acting: ``name`` as it appears in the trail (``token:ci``, ``cli:alice``) and its ``role``."""

    name: str
    role: AccessRole

    def may(self, needed: AccessRole) -> bool:
        """Whether this identity's role includes ``needed``."""
        return self.role.includes(needed)

    def sees(self, owner: str | None) -> bool:
        """Whether a thread owned by ``owner`` is visible: approvers and admins see all, others only their own."""
        return self.may(AccessRole.approver) or (owner is not None and owner == self.name)


@dataclass(frozen=True)
class TokenInfo:
    """A token as listings show it: never the key, only its hint."""

    name: str
    role: AccessRole
    hint: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def cli_identity() -> Identity:
    """The command line's identity: ``cli:<OS user>``, with every role (the data dir's permissions guard it)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: still say who, by uid
        user = f"uid{os.getuid()}"
    return Identity(name=f"cli:{user}", role=AccessRole.admin)


def key_digest(key: str) -> str:
    """Hex SHA-256 of a key, as stored in ``ApiToken.key_hash``."""
    return hashlib.sha256(key.encode()).hexdigest()


def validate_token_name(name: str) -> str:
    """Return ``name`` if it is 1-64 lower-case letters, digits, dots, hyphens or underscores.

    Raises:
        TokenError: it is not.
    """
    if not TOKEN_NAME_RE.fullmatch(name):
        raise TokenError(f"token name {name!r}: use 1-64 lower-case letters, digits, '.', '-' or '_'")
    return name


async def create_token(db: Database, name: str, role: AccessRole, *, actor: str) -> str:
    """Create a token and return its key; the key is shown this once and never stored.

    Args:
        db: the database.
        name: a unique token name (see :func:`validate_token_name`); the identity is ``token:<name>``.
        role: what the key may do.
        actor: who creates it, for the trail.

    Returns:
        The key, ``orch_`` + 43 URL-safe characters.

    Raises:
        TokenError: a bad name, or a token of that name exists (revoked ones included: names are not reused, so
            the trail stays unambiguous).
    """
    validate_token_name(name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with db.session() as s:
        if (await s.exec(select(ApiToken).where(ApiToken.name == name))).first() is not None:
            raise TokenError(f"a token named {name!r} exists already; pick another name (names are never reused)")
        row = ApiToken(name=name, role=role, key_hash=key_digest(key), hint=key[:8], created_by=actor)
        s.add(row)
        await s.flush()
        assert row.id is not None
        why = f"token {name!r} created with role {role.value}"
        await record(s, subject_type="token", subject_id=row.id, action="token_created", reason=why, actor=actor)
    return key


async def revoke_token(db: Database, name: str, *, actor: str) -> None:
    """Revoke the token ``name`` now: its key is refused from the next request on.

    Raises:
        TokenError: no live token of that name.
    """
    async with db.session() as s:
        stmt = (
            update(ApiToken)
            .where(col(ApiToken.name) == name, col(ApiToken.revoked_at).is_(None))
            .values(revoked_at=utcnow())
            .returning(col(ApiToken.id))
        )
        row = (await s.exec(stmt)).first()  # type: ignore[call-overload]
        if row is None:
            raise TokenError(f"no live token named {name!r}: see `orchestrator token list`")
        why = f"token {name!r} revoked"
        await record(s, subject_type="token", subject_id=int(row[0]), action="token_revoked", reason=why, actor=actor)


async def list_tokens(db: Database) -> list[TokenInfo]:
    """Every token, revoked ones included, by name; never a key."""
    async with db.session() as s:
        rows = (await s.exec(select(ApiToken).order_by(col(ApiToken.name)))).all()
    return [
        TokenInfo(
            name=r.name,
            role=AccessRole(r.role),
            hint=r.hint,
            created_by=r.created_by,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


async def authenticate(db: Database, key: str) -> Identity | None:
    """The identity of a live key, or None for an unknown, malformed or revoked one.

    The lookup is by digest (an indexed equality) and the stored digest is compared in constant time.
    """
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    digest = key_digest(key)
    async with db.session() as s:
        row = (await s.exec(select(ApiToken).where(ApiToken.key_hash == digest))).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
            return None
        now = utcnow()
        if row.last_used_at is None or now - _aware(row.last_used_at) >= LAST_USED_RESOLUTION:
            await s.exec(update(ApiToken).where(col(ApiToken.id) == row.id).values(last_used_at=now))  # type: ignore[call-overload]
        return Identity(name=f"token:{row.name}", role=AccessRole(row.role))


async def has_admin_token(db: Database) -> bool:
    """Whether a live admin token exists (``orchestrator api`` needs one before it listens beyond loopback)."""
    async with db.session() as s:
        stmt = select(ApiToken.id).where(ApiToken.role == AccessRole.admin, col(ApiToken.revoked_at).is_(None))
        return (await s.exec(stmt)).first() is not None


async def record(
    session: AsyncSession,
    *,
    subject_type: str,
    subject_id: int,
    action: str,
    reason: str,
    actor: str,
    thread_id: str | None = None,
) -> None:
    """Write an action that moves no status to the trail, in the caller's transaction.

    ``Event.to_status`` names the action (``deploy_approved``, ``secret_set``...), ``from_status`` stays None.
    """
    session.add(
        Event(
            subject_type=subject_type,
            subject_id=subject_id,
            to_status=action,
            reason=reason,
            actor=actor,
            thread_id=thread_id,
        )
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
