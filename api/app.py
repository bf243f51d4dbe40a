"""The FastAPI app: one ``OrchestratorRuntime`` per process, opened by the lifespan.

Nothing is built at import. Serve with ``uvicorn api.app:app_factory --factory``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import routes_status
from api.auth import api_routes, rule_of
from api.console import include_console
from api.edge import RequestEdge
from api.errors import runtime_input_error_handler
from api.limits import RunSlots
from api.routes import router
from api.routes_cron import router as cron_router
from api.routes_events import router as events_router
from api.routes_runs import router as runs_router
from api.routes_threads import router as threads_router
from api.routes_webhooks import router as webhooks_router
from api.sse import drain_runs
from core.llm import aload_litellm
from core.settings import Settings
from runtime.threads import OrchestratorRuntime, RuntimeInputError


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app.

    Args:
        settings: The process settings; None reads them from the environment when the app starts.

    Returns:
        The app; its lifespan opens the runtime (data dir, tables, checkpoints), starts importing litellm in a worker
        thread, and closes the runtime on shutdown. Every route but ``/healthz`` needs an API key (see
        :mod:`api.auth`); the edge checks come first (:mod:`api.edge`).

    Raises:
        LookupError: a route declares no role rule (a route added without one never serves).
    """
    resolved = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with OrchestratorRuntime(resolved) as runtime:
            app.state.runtime = runtime
            # litellm (seconds to import) loads in a worker thread while the API already serves; a first message
            # that comes sooner awaits the same import, off the event loop.
            app.state.litellm_warmup = asyncio.create_task(aload_litellm())
            yield
            await drain_runs(resolved.deploy_timeout_s)

    # The OpenAPI document is served by an authenticated route (api.routes.openapi_document), and no docs pages:
    # every route but /healthz needs a key.
    app = FastAPI(
        title="orchestrator",
        summary="The orchestrator runtime over HTTP",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(router)
    app.include_router(routes_status.router)
    app.include_router(webhooks_router)
    app.include_router(cron_router)
    app.include_router(events_router)
    include_console(app)  # the web console at / (no route of it in the OpenAPI document)
    app.include_router(runs_router)
    app.include_router(threads_router)
    for route in api_routes(app):
        rule_of(route)
    app.add_exception_handler(RuntimeInputError, runtime_input_error_handler)
    app.add_exception_handler(StarletteHTTPException, _allow_every_method)
    app.state.run_slots = RunSlots(resolved.api_max_runs_per_identity)
    app.add_middleware(
        RequestEdge,
        allowed_hosts=resolved.api_allowed_hosts,
        max_body_bytes=resolved.api_max_body_bytes,
        body_timeout_s=resolved.api_body_timeout_s,
    )
    if resolved.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=resolved.api_cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-Api-Key", "Content-Type"],
        )
    _document_refusals_as_json(app)
    return app


async def _allow_every_method(request: Request, exc: Exception) -> Response:
    """HTTP errors as FastAPI answers them, except that a 405 lists every method the path serves.

    Starlette answers 405 from the first route matching the path, naming only its methods; RFC 9110 section 15.5.6
    wants all of them in ``Allow``.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        path = request.url.path
        methods = {m for r in api_routes(request.app) for m in r.methods or () if r.path_regex.match(path)}
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


def _document_refusals_as_json(app: FastAPI) -> None:
    """Document a streaming route's refusals as JSON, which is what they are sent as.

    FastAPI files every response of a route under the route's media type, so ``text/event-stream`` routes would
    claim their 4xx bodies are event streams.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for code, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if code[0] in "45" and "text/event-stream" in content:
                            content["application/json"] = content.pop("text/event-stream")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """The app with settings from the environment, for ``uvicorn --factory``."""
    return create_app()
