"""Who is calling, and what each route lets them do.

Every route declares one rule, as a dependency: :data:`Public` (only ``/healthz``) or a :class:`Require` of a role.
:func:`rule_of` reads the rule back from a route; the app refuses to start with a route that has none, and the tests
call every route with every role from the same list.

A key is accepted as ``Authorization: Bearer KEY`` (RFC 6750, section 2.1) or ``X-Api-Key: KEY``. Missing, unknown
or revoked: 401 with ``WWW-Authenticate: Bearer`` (RFC 6750, section 3). A role too low: 403 naming the role needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Security, status
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import RuntimeDep
from models.enums import AccessRole
from services.identities import Identity, authenticate

_BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer orch_...`")
_API_KEY = APIKeyHeader(name="X-Api-Key", auto_error=False, description="An API key: `X-Api-Key: orch_...`")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestrator"'}


async def current_identity(
    rt: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    api_key: Annotated[str | None, Security(_API_KEY)],
) -> Identity:
    """The identity of the request's API key.

    Raises:
        HTTPException: 401 (with ``WWW-Authenticate``) for no key, or an unknown or revoked one.
    """
    key = bearer.credentials if bearer is not None else api_key
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "an API key is required: send `Authorization: Bearer KEY` or `X-Api-Key: KEY` "
            "(an admin makes one with `orchestrator token create NAME --role ROLE`)",
            headers=_CHALLENGE,
        )
    identity = await authenticate(rt.db, key)
    if identity is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=_CHALLENGE)
    return identity


class Require:
    """A route's rule: the caller's role must include ``role``; returns the caller's :class:`Identity`."""

    def __init__(self, role: AccessRole) -> None:
        self.role = role

    async def __call__(self, identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
        """Raises: HTTPException 403 naming the role needed."""
        if not identity.may(self.role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {self.role.value} role; {identity.name} has {identity.role.value}",
            )
        return identity


class _Public:
    """The rule of a route anyone may call (``/healthz``)."""

    async def __call__(self) -> None:
        return None


PUBLIC_RULE = _Public()
Public = Depends(PUBLIC_RULE)
"""Put in a route's ``dependencies`` to declare it public."""

Viewer = Annotated[Identity, Depends(Require(AccessRole.viewer))]
Operator = Annotated[Identity, Depends(Require(AccessRole.operator))]
Approver = Annotated[Identity, Depends(Require(AccessRole.approver))]
Admin = Annotated[Identity, Depends(Require(AccessRole.admin))]


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every FastAPI route of ``app``, those of included routers too (FastAPI includes routers lazily)."""
    return [c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def declared_routes(routers: Iterable[APIRouter]) -> list[APIRoute]:
    """Every FastAPI route the ``routers`` declare, as declared (no include context is set up to list them).

    The app's own list (:func:`api_routes`) makes FastAPI set up every included route, which costs a start-up
    tenths of a second; the role rules (route dependencies) are the same on both.
    """
    listed = (c.original_route for router in routers for c in iter_route_contexts(router.routes))
    return [route for route in listed if isinstance(route, APIRoute)]


def rule_of(route: APIRoute) -> AccessRole | None:
    """The role a route requires, or None for a public route.

    Raises:
        LookupError: the route declares no rule (or two).
    """
    rules: list[AccessRole | None] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Require):
            rules.append(dep.call.role)
        elif dep.call is PUBLIC_RULE:
            rules.append(None)
        stack.extend(dep.dependencies)
    if len(rules) != 1:
        raise LookupError(f"{sorted(route.methods or ())} {route.path} declares {len(rules)} role rules; it needs one")
    return rules[0]
