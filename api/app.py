"""The FastAPI app: one ``OrchestratorRuntime`` per process, opened by the lifespan.

Nothing is built at import. Serve with ``uvicorn api.app:app_factory --factory``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import console, routes_status
from api.auth import api_routes, declared_routes, rule_of
from api.edge import RequestEdge
from api.errors import runtime_input_error_handler
from api.limits import RunSlots
from api.routes import health_router, router
from api.routes_cron import router as cron_router
from api.routes_events import router as events_router
from api.routes_runs import router as runs_router
from api.routes_threads import router as threads_router
from api.routes_webhooks import router as webhooks_router
from api.sse import drain_runs
from core import token_count
from core.heap import collector_paused
from core.llm import aload_litellm, needs_litellm, uses_replay
from core.settings import Settings
from runtime.threads import OrchestratorRuntime, RuntimeInputError


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app.

    Args:
        settings: The process settings; None reads them from the environment when the app starts.

    Returns:
        The app; its lifespan builds a recording's tokenizer (when a role's model is one), opens the runtime (data
        dir, tables, keys) and then serves, while the checkpoint saver opens and the PO graph compiles (imports in a
        worker thread) and, if a role's model goes through litellm, litellm is imported after them (see
        :func:`warm_up`). On shutdown it waits for runs in flight and closes the runtime. Every route but
        ``/healthz`` needs an API key (see :mod:`api.auth`); the edge checks come first (:mod:`api.edge`).

    Raises:
        LookupError: a route declares no role rule (a route added without one never serves).
    """
    resolved = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if uses_replay(resolved):
            # Built before /healthz answers: tiktoken builds its encoder in one call that holds the GIL for 60-90 ms,
            # a stall that no request may see.
            with contextlib.suppress(RuntimeError):  # no tokenizer file: raised again by the first recorded call
                await token_count.aencoding()
        async with OrchestratorRuntime(resolved, defer_checkpoints=True) as runtime:
            app.state.runtime = runtime
            app.state.warm_up = asyncio.create_task(warm_up(app, runtime, resolved), name="warm up")
            yield
            await drain_runs(resolved.deploy_timeout_s)
            app.state.warm_up.cancel()

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
    api_routers = (health_router, router, routes_status.router, webhooks_router, cron_router, events_router)
    for api_router in api_routers:
        app.include_router(api_router)
    console.include_console(app)  # the web console at / (no route of it in the OpenAPI document)
    for api_router in (runs_router, threads_router):
        app.include_router(api_router)
    for route in declared_routes((*api_routers, *console.ROUTERS, runs_router, threads_router)):
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


async def warm_up(app: FastAPI, runtime: OrchestratorRuntime, settings: Settings) -> None:
    """Set up in the background what requests need and answering ``/healthz`` does not, in worker threads.

    In order: FastAPI's routes as included (it sets them up on the first request that reaches a router, under a lock
    of its own); the PO graph with its checkpoint saver (LangGraph, the graphs and nodes:
    :meth:`OrchestratorRuntime.compiled`); litellm when a role's model goes through it
    (:func:`core.llm.needs_litellm`; a recording, ``replay/...``, never does). One after the other, so the event loop
    competes with one thread only. A request that needs one of them sooner awaits the same set-up, build or import. A
    graph that fails to build is logged here and raised to each request that needs it.

    The cyclic garbage collector is paused meanwhile and what exists is frozen after (:mod:`core.heap`): a full
    collection walks every object the imports made so far, in one call that holds the GIL for 50-90 ms.
    """
    with collector_paused():
        await asyncio.to_thread(api_routes, app)
        with contextlib.suppress(Exception):  # logged by the runtime; raised again to whoever needs the graph
            await runtime.compiled()
        if needs_litellm(settings):
            await aload_litellm()


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
