"""The console: web pages over the runtime, served by ``orchestrator api`` at ``/``.

Server-rendered with Jinja2, made live with HTMX (vendored, no build step), signed in with an API key. See
:mod:`api.console.session` (sessions, cookie, CSRF) and :mod:`api.console.access` (the role rule of each route).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.console.access import SignInNeeded
from api.console.routes import router, sign_in_needed
from api.console.routes_threads import router as threads_router
from api.console.session import SessionStore

ROUTERS: tuple[APIRouter, ...] = (router, threads_router)
"""The console's routers, in the order they are included."""


def include_console(app: FastAPI) -> None:
    """Add the console's routes (none in the OpenAPI document), its session store and its sign-in answer to ``app``."""
    for console_router in ROUTERS:
        app.include_router(console_router)
    app.state.console_sessions = SessionStore()
    app.add_exception_handler(SignInNeeded, sign_in_needed)
