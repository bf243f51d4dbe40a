"""The FastAPI app: one ``OrchestratorRuntime`` per process, opened by the lifespan.

Nothing is built at import. Serve with ``uvicorn api.app:app_factory --factory``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import runtime_input_error_handler
from api.routes import router
from api.sse import drain_runs
from core.settings import Settings
from runtime.threads import OrchestratorRuntime, RuntimeInputError


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app.

    Args:
        settings: The process settings; None reads them from the environment when the app starts.

    Returns:
        The app; its lifespan opens the runtime (data dir, tables, checkpoints) and closes it on shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or Settings()
        async with OrchestratorRuntime(resolved) as runtime:
            app.state.runtime = runtime
            yield
            await drain_runs(resolved.deploy_timeout_s)

    app = FastAPI(title="orchestrator", summary="The orchestrator runtime over HTTP", lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(RuntimeInputError, runtime_input_error_handler)
    return app


def app_factory() -> FastAPI:
    """The app with settings from the environment, for ``uvicorn --factory``."""
    return create_app()
