"""Signed verifications: what the Engineering subgraph verified, signed, checked again by the deploy.

When Engineering completes (tests written first, code green, review clean), the orchestrator signs an
:class:`Attestation` of the exact commit and tree it verified; the deploy checks the token against the commit it is
about to check out and refuses anything else (:func:`verify`), so a commit pushed after verification is never
deployed as verified.

Why a JWT (RFC 7519) signed with HS256 (HMAC-SHA256, RFC 7518 §3.2): PyJWT checks the standard ``iss``, ``sub``,
``iat`` and ``exp`` claims for us instead of hand-rolled code, and a person can decode the token (it is base64 JSON,
not a secret) and read what it attests. The signer and the verifier are the same service, so a symmetric key
suffices: no key pair to distribute.

The key: ``ORCH_SIGNING_KEY`` (its UTF-8 bytes, surrounding whitespace stripped, at least 32 bytes as RFC 7518
§3.2 requires of an HS256 key). Unset or empty: ``<data_dir>/signing.key``, 32 random bytes as 64 hex digits,
created 0600 on first use (atomically: concurrent first uses agree on one key), like ``secrets.key`` in
services/secrets.py; a key file that group or others may read, or that another user owns, is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from core.keyfile import create_once, read_private
from core.settings import Settings

ISSUER = "orchestrator"
ALGORITHM = "HS256"
MIN_KEY_BYTES = 32
"""RFC 7518 §3.2: an HS256 key is at least as long as the hash output (256 bits)."""
KEY_FILE_NAME = "signing.key"
LEEWAY_S = 30
"""Clock skew tolerated on ``iat`` and ``exp``, seconds."""
MODES = ("strict", "permissive")
_REQUIRED = ["exp", "iat", "iss", "sub"]
_STR_CLAIMS = ("commit", "tree", "tests_hash", "contract_version", "contract_digest", "mode")
_GENERATE = "python -c 'import secrets; print(secrets.token_hex(32))'"


class VerificationRefused(PermissionError):
    """The token does not attest what is about to happen; the message says exactly why (a person reads it).

    It is a ``PermissionError``: the deploy is not allowed, and the message goes into an Event as it is.
    """


@dataclass(frozen=True)
class Attestation:
    """What the orchestrator verified of one commit, and (once signed or decoded) when.

    Attributes:
        project: the project's name (the token's ``sub``).
        project_id: the project's database id.
        commit: the full commit sha that was verified.
        tree: the git tree sha of that commit (its content).
        tests_hash: sha256 (hex) of the locked tests.
        tests: JSON-safe summary, e.g. ``{"passed": 12, "failed": 0, "command": "pytest -q", "rounds": 2}``.
        contract_version: version of the engineering contract in force.
        contract_digest: digest of that contract's text.
        mode: ``strict`` or ``permissive``.
        warnings: permissive-mode violations that were let through.
        issued_at: UTC, aware, whole seconds; set by :func:`sign` on the token and by :func:`decode`.
        expires_at: UTC, aware; ``issued_at`` + ``verification_ttl_s``.
    """

    project: str
    project_id: int
    commit: str
    tree: str
    tests_hash: str
    tests: dict[str, Any]
    contract_version: str
    contract_digest: str
    mode: str
    warnings: tuple[str, ...] = ()
    issued_at: datetime | None = None
    expires_at: datetime | None = None

    def describe(self) -> str:
        """One or two lines a person reads in a deploy approval: what the token attests and until when."""
        tests = f"tests {self.tests.get('passed', '?')} passed, {self.tests.get('failed', '?')} failed"
        what = (
            f"Verified {self.project} commit {self.commit[:7]} (tree {self.tree[:7]}): {tests}; "
            f"contract {self.contract_version} ({self.mode})."
        )
        n = len(self.warnings)
        warned = f"{n} permissive-mode warning{'' if n == 1 else 's'} let through" if n else "no warnings"
        if self.expires_at is None:
            return f"{what}\nNot signed yet; {warned}."
        return f"{what}\nExpires {_show(self.expires_at)}; {warned}."

    def claims(self) -> dict[str, Any]:
        """JSON-safe dict of every field (times as ISO 8601 strings or None), for graph state and API payloads."""
        return {
            "project": self.project,
            "project_id": self.project_id,
            **{name: getattr(self, name) for name in _STR_CLAIMS},
            "tests": dict(self.tests),
            "warnings": list(self.warnings),
            "issued_at": self.issued_at.isoformat() if self.issued_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def signing_key(settings: Settings) -> bytes:
    """The HS256 key: ``ORCH_SIGNING_KEY`` if set and not empty, else the data dir's key file (made on first use).

    Returns:
        At least 32 bytes.

    Raises:
        ValueError: a configured key shorter than 32 bytes; a key file that is not 64 hex digits, not a regular
            file, readable by group or others, or owned by another user. The message never shows the key.
    """
    configured = settings.signing_key.get_secret_value().strip() if settings.signing_key is not None else ""
    if configured:  # compose passes an unset variable as ""
        key = configured.encode()
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"ORCH_SIGNING_KEY is {len(key)} bytes; an HS256 key needs at least {MIN_KEY_BYTES} (RFC 7518 "
                f"§3.2). Generate one with: {_GENERATE}"
            )
        return key
    path = settings.data_dir.resolve() / KEY_FILE_NAME
    if not path.exists():
        settings.ensure_data_dir()
        create_once(path, secrets.token_hex(MIN_KEY_BYTES))
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    text = read_private(path, "signing key").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"signing key {path} is not at least {MIN_KEY_BYTES} bytes as hex digits; delete it to have a new one "
            "made (tokens signed with it stop verifying)"
        )
    return key


def sign(settings: Settings, attestation: Attestation, *, now: datetime | None = None) -> str:
    """Sign ``attestation``: a JWT with ``iss``, ``sub`` (the project), ``iat``, ``exp`` and the attestation's fields.

    Args:
        settings: gives the key and ``verification_ttl_s``.
        attestation: what was verified; its ``issued_at``/``expires_at`` are ignored (set from ``now``).
        now: the signing time, timezone-aware (default: the clock); ``iat`` is it in whole seconds.

    Returns:
        The compact JWT (three base64url segments joined by dots).

    Raises:
        ValueError: an unusable key (see :func:`signing_key`), a naive ``now``, a mode other than strict or
            permissive, or an empty commit or tree.
        TypeError: ``tests`` is not JSON-serialisable.
    """
    if attestation.mode not in MODES:
        raise ValueError(f"mode {attestation.mode!r} is neither strict nor permissive")
    if not attestation.commit or not attestation.tree:
        raise ValueError("an attestation names the commit and the tree it verified; one of them is empty")
    iat = int(_aware(now).timestamp()) if now is not None else int(datetime.now(UTC).timestamp())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": attestation.project,
        "iat": iat,
        "exp": iat + settings.verification_ttl_s,
        "project_id": attestation.project_id,
        **{name: getattr(attestation, name) for name in _STR_CLAIMS},
        "tests": attestation.tests,
        "warnings": list(attestation.warnings),
    }
    return jwt.encode(payload, signing_key(settings), algorithm=ALGORITHM)


def decode(settings: Settings, token: str) -> Attestation:
    """Check ``token``'s signature, issuer and expiry (against the clock) and return what it attests.

    Raises:
        VerificationRefused: "forged or damaged: signature does not match", "expired at ...", "malformed: ...".
        ValueError: an unusable key (see :func:`signing_key`).
    """
    return _decode(settings, token, now=None, check_expiry=True)


def verify(
    settings: Settings,
    token: str | None,
    *,
    project: str,
    project_id: int,
    commit: str,
    tree: str | None = None,
    now: datetime | None = None,
    check_expiry: bool = True,
) -> Attestation:
    """Check that ``token`` attests exactly this project and commit (and tree), and return the attestation.

    Args:
        settings: gives the key.
        token: the signed verification, or None when there is none.
        project: name of the project about to be deployed.
        project_id: its database id.
        commit: the full sha the deploy is about to check out.
        tree: that commit's tree sha, when known (checked too).
        now: timezone-aware time to check ``iat``/``exp`` against (default: the clock, checked by PyJWT; with
            ``now``, PyJWT would still use the clock, so the times are checked here against ``now``).
        check_expiry: False to re-deploy a release that was verified and deployed before (recovery).

    Raises:
        VerificationRefused: no token; forged, damaged, malformed or expired; another project, commit or tree
            (the message names both values).
        ValueError: an unusable key (see :func:`signing_key`) or a naive ``now``.
    """
    if not token:
        raise VerificationRefused(f"commit {commit[:7]} of {project} was never verified: no signed verification")
    found = _decode(settings, token, now=now, check_expiry=check_expiry)
    if (found.project, found.project_id) != (project, project_id):
        raise VerificationRefused(
            f"token attests project {found.project} (#{found.project_id}), not {project} (#{project_id})"
        )
    if found.commit != commit:
        theirs, ours = _shorts(found.commit, commit)
        raise VerificationRefused(
            f"token attests commit {theirs}, the deploy would check out {ours}: a commit pushed after verification "
            "is not verified"
        )
    if tree is not None and found.tree != tree:
        theirs, ours = _shorts(found.tree, tree)
        raise VerificationRefused(
            f"token attests tree {theirs}, commit {commit[:7]} has tree {ours}: its content is not what was verified"
        )
    return found


def _decode(settings: Settings, token: str, *, now: datetime | None, check_expiry: bool) -> Attestation:
    key = signing_key(settings)
    by_clock = now is None  # PyJWT checks iat/exp against the real clock only; with ``now`` they are checked below
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": _REQUIRED, "verify_exp": by_clock and check_expiry, "verify_iat": by_clock},
            leeway=LEEWAY_S,
        )
    except jwt.InvalidSignatureError:
        raise VerificationRefused("forged or damaged: signature does not match") from None
    except jwt.InvalidAlgorithmError:
        raise VerificationRefused(f"forged or damaged: not signed with {ALGORITHM}") from None
    except jwt.ExpiredSignatureError:
        # The signature was checked before the expiry, so the unverified read below reads a genuine token.
        raise VerificationRefused(_expired(jwt.decode(token, options={"verify_signature": False}))) from None
    except jwt.ImmatureSignatureError:
        raise VerificationRefused("issued in the future: this machine's clock is behind the signer's") from None
    except jwt.InvalidIssuerError:
        raise VerificationRefused(f"malformed: not issued by {ISSUER}") from None
    except jwt.InvalidTokenError as exc:
        raise VerificationRefused(f"malformed: {exc}") from None
    found = _attestation(payload)
    if now is not None:
        _check_times(found, _aware(now), check_expiry)
    return found


def _check_times(found: Attestation, now: datetime, check_expiry: bool) -> None:
    assert found.issued_at is not None and found.expires_at is not None  # set by _attestation
    if found.issued_at.timestamp() > now.timestamp() + LEEWAY_S:
        raise VerificationRefused(f"issued in the future ({_show(found.issued_at)}, now {_show(now)})")
    if check_expiry and found.expires_at.timestamp() <= now.timestamp() - LEEWAY_S:
        raise VerificationRefused(_expired({"iat": found.issued_at.timestamp(), "exp": found.expires_at.timestamp()}))


def _attestation(payload: dict[str, Any]) -> Attestation:
    """The attestation in a verified payload; a missing or mistyped claim is refused as malformed."""

    def claim(name: str, kind: type | tuple[type, ...]) -> Any:
        value = payload.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise VerificationRefused(f"malformed: claim {name!r} is missing or not {_kind(kind)}")
        return value

    warnings = claim("warnings", list)
    if not all(isinstance(w, str) for w in warnings):
        raise VerificationRefused("malformed: claim 'warnings' is not a list of strings")
    if payload.get("mode") not in MODES:
        raise VerificationRefused(f"malformed: mode {payload.get('mode')!r} is neither strict nor permissive")
    return Attestation(
        project=claim("sub", str),
        project_id=claim("project_id", int),
        **{name: claim(name, str) for name in _STR_CLAIMS},
        tests=claim("tests", dict),
        warnings=tuple(warnings),
        issued_at=datetime.fromtimestamp(claim("iat", (int, float)), UTC),
        expires_at=datetime.fromtimestamp(claim("exp", (int, float)), UTC),
    )


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return "a number" if float in kinds else " or ".join(names.get(k, k.__name__) for k in kinds)


def _expired(payload: dict[str, Any]) -> str:
    exp, iat = payload.get("exp"), payload.get("iat")
    issued = f" (issued {_show(datetime.fromtimestamp(iat, UTC))})" if isinstance(iat, int | float) else ""
    when = _show(datetime.fromtimestamp(exp, UTC)) if isinstance(exp, int | float) else "an unreadable time"
    return f"expired at {when}{issued}: verify the commit again before deploying it"


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (got naive {when.isoformat()})")
    return when.astimezone(UTC)


def _show(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shorts(a: str, b: str) -> tuple[str, str]:
    """Short forms of two shas, long enough to tell them apart (7 characters, or whole when those agree)."""
    return (a[:7], b[:7]) if a[:7] != b[:7] else (a, b)
