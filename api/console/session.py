"""Console sessions: an API key signs a browser in once; a cookie then names a session kept on the server.

Why a server-side session rather than a signed cookie: signing out, expiry and a revoked key all end a session
for real, at once, with no shared signing secret to create, store and rotate; the cookie holds only 256 random bits
and never the key or anything derived from it. The cost: sessions live in the API process's memory, so a restart
signs everyone out (one more sign-in), and they are per process (``orchestrator api`` runs one). The store keeps the
SHA-256 of each session id, not the id itself, so a dump of the store holds no usable cookie.

The cookie (RFC 6265bis, section 4.1.2): ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it), ``Path=/``, ``Max-Age`` the session's lifetime, and ``Secure`` when the console is served over https.

CSRF: each session has its own random token, put in every form the console renders and checked with
:func:`hmac.compare_digest` on every POST (OWASP's synchronizer token pattern:
https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html). The forms
post JSON (the API's edge refuses any other body, which a cross-site HTML form cannot send), so the token is a second
line behind the JSON rule and SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from fastapi import HTTPException, Request, Response, status

from services.identities import Identity

COOKIE = "orch_console"
"""The session cookie's name."""
SESSION_TTL_S = 8 * 3600
"""A session's lifetime from sign-in, in seconds; then the key is asked for again."""
IDLE_TTL_S = 3600
"""A session unused this long (seconds) ends too."""
MAX_SESSIONS = 10_000
"""Sessions kept at most; beyond it the oldest is ended (memory stays bounded whoever signs in)."""


@dataclass
class ConsoleSession:
    """One signed-in browser: who it is, its CSRF token, and when it ends (``time.monotonic()`` seconds)."""

    identity: Identity
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        """Whether the session is past its lifetime or idle too long."""
        return now - self.started > SESSION_TTL_S or now - self.last_seen > IDLE_TTL_S


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """The process's console sessions, by the SHA-256 of their ids."""

    def __init__(self) -> None:
        self._sessions: dict[str, ConsoleSession] = {}

    def create(self, identity: Identity) -> tuple[str, ConsoleSession]:
        """Start a session for ``identity``; returns the session id (the cookie's value, 43 characters) and it."""
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if s.expired(now)]:
            del self._sessions[key]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].started)]
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(identity=identity)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of a cookie value (its idle clock restarts), or None: none, unknown or expired."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = time.monotonic()
        if session.expired(now):
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def end(self, session_id: str | None) -> None:
        """End the session of a cookie value (nothing happens for an unknown one)."""
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def end_all_of(self, identity_name: str) -> None:
        """End every session of an identity (its key was revoked)."""
        for key in [k for k, s in self._sessions.items() if s.identity.name == identity_name]:
            del self._sessions[key]


def store_of(request: Request) -> SessionStore:
    """The app's session store (``app.state.console_sessions``, made by :func:`api.console.include_console`)."""
    store: SessionStore = request.app.state.console_sessions
    return store


def set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    """Put the session cookie on ``response``: HttpOnly, SameSite=Strict, Path=/, Secure when served over https."""
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    """Tell the browser to drop the session cookie (same attributes, expired)."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")


def check_csrf(request: Request, given: str | None) -> None:
    """Refuse a POST whose CSRF token is not its session's, compared in constant time.

    A request authenticated by an API key header instead of the session cookie passes: a browser sends no such header
    across sites, so it cannot be forged that way.

    Raises:
        HTTPException: 403 when the request came with the session cookie and the token is missing or wrong.
    """
    session: ConsoleSession | None = getattr(request.state, "console_session", None)
    if session is None:
        return
    if not given or not hmac.compare_digest(session.csrf.encode(), given.encode()):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this form needs the CSRF token of your session: reload the page and send again"
        )
