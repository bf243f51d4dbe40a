"""FastAPI dependencies: the process's one runtime and a database session, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from runtime.threads import OrchestratorRuntime


def get_runtime(request: Request) -> OrchestratorRuntime:
    """Return the runtime the app's lifespan opened (``app.state.runtime``)."""
    runtime: OrchestratorRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[OrchestratorRuntime, Depends(get_runtime)]


async def get_session(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """Yield a session on the runtime's database (committed on success, rolled back on error)."""
    async with rt.db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
