"""Who is looking at the console, and the role rule of each console route.

A console request is signed in by its session cookie (:mod:`api.console.session`) or, like any API call, by an API
key header (``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``, checked by :func:`api.auth.current_identity`). A
session's key is checked again on every request: once its token is revoked, the session ends.

The rules are :class:`api.auth.Require` rules (:class:`ConsoleRequire` is one), so :func:`api.auth.rule_of` reads them
like the API's and the trust tests call every console route with every role. Nobody signed in: 401 with
``WWW-Authenticate: Bearer`` (RFC 6750, section 3) and, for a browser, the sign-in page as the body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import col, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import Require, current_identity
from api.console.session import COOKIE, store_of
from api.deps import RuntimeDep
from core.db import Database
from models.enums import AccessRole
from models.tables import ApiToken
from services.identities import Identity

_BEARER = HTTPBearer(auto_error=False)
_API_KEY = APIKeyHeader(name="X-Api-Key", auto_error=False)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestrator"'}


class SignInNeeded(StarletteHTTPException):
    """401: nobody is signed in (no session, an expired one, a revoked key); answered with the sign-in page."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers=dict(CHALLENGE))


async def key_is_live(db: Database, identity: Identity) -> bool:
    """Whether the token behind a session's identity (``token:<name>``) is still live (not revoked)."""
    name = identity.name.removeprefix("token:")
    async with db.session() as s:
        stmt = select(ApiToken.id).where(ApiToken.name == name, col(ApiToken.revoked_at).is_(None))
        return (await s.exec(stmt)).first() is not None


async def console_identity(
    request: Request,
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    api_key: Annotated[str | None, Security(_API_KEY)],
) -> Identity:
    """The identity of the request: its API key header if it sends one, else its session cookie.

    A request signed in by its session gets ``request.state.console_session`` (the CSRF check reads it).

    Raises:
        HTTPException: 401 for an unknown or revoked key header. SignInNeeded: no key header and no live session.
    """
    if bearer is not None or api_key:
        return await current_identity(rt, bearer, api_key)
    store = store_of(request)
    cookie = request.cookies.get(COOKIE)
    session = store.get(cookie)
    if session is None:
        raise SignInNeeded("sign in with an API key (orchestrator token create NAME --role ROLE makes one)")
    if not await key_is_live(rt.db, session.identity):
        store.end_all_of(session.identity.name)
        raise SignInNeeded("the key of this session was revoked: sign in with a live key")
    request.state.console_session = session
    return session.identity


class ConsoleRequire(Require):
    """A console route's rule: signed in (session or key header), with a role that includes ``role``."""

    async def __call__(self, identity: Annotated[Identity, Depends(console_identity)]) -> Identity:
        """Raises: HTTPException 403 naming the role needed (see :class:`api.auth.Require`)."""
        return await super().__call__(identity)


Viewer = Annotated[Identity, Depends(ConsoleRequire(AccessRole.viewer))]
Operator = Annotated[Identity, Depends(ConsoleRequire(AccessRole.operator))]
Approver = Annotated[Identity, Depends(ConsoleRequire(AccessRole.approver))]
