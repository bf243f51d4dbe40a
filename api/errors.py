"""How the runtime's ``RuntimeInputError`` family becomes an HTTP error ``{"detail": "..."}``."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from runtime.errors import NotAllowed, RuntimeInputError, ThreadStateConflict, UnknownProject, UnknownThread


def status_for(exc: RuntimeInputError) -> int:
    """The HTTP status for a runtime input error.

    Args:
        exc: The error the runtime raised (nothing was changed).

    Returns:
        403 when the identity may not (role, separate approver), 404 for an unknown thread or project, 409 when the
        state does not allow the request (the thread waits for an answer, nothing is pending, it is running, nothing
        is left to run; the project has no work in flight to cancel), else 422 (the request itself is wrong).
    """
    if isinstance(exc, NotAllowed):
        return 403
    if isinstance(exc, UnknownThread | UnknownProject):
        return 404
    if isinstance(exc, ThreadStateConflict):
        return 409
    return 422


async def runtime_input_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answer a ``RuntimeInputError`` with ``{"detail": message}`` and the status from :func:`status_for`."""
    assert isinstance(exc, RuntimeInputError)
    return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))
