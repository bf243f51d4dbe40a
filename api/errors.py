"""How the runtime's ``RuntimeInputError`` becomes an HTTP error ``{"detail": "..."}``.

The runtime raises one exception type for every kind of bad input, so its message decides the status code.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from core.runtime import RuntimeInputError

_STATUS_BY_PHRASE: tuple[tuple[str, int], ...] = (
    ("unknown thread", 404),
    ("nothing pending", 409),
    ("waits for an answer", 409),
    ("no unfinished run", 409),
)


def status_for(exc: RuntimeInputError) -> int:
    """The HTTP status for a runtime input error.

    Args:
        exc: The error the runtime raised (nothing was changed).

    Returns:
        404 for an unknown thread, 409 when the thread's state does not allow the request (it waits for an answer,
        nothing is pending, nothing is left to run), else 422 (the request itself is wrong).
    """
    message = str(exc)
    return next((status for phrase, status in _STATUS_BY_PHRASE if phrase in message), 422)


async def runtime_input_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answer a ``RuntimeInputError`` with ``{"detail": message}`` and the status from :func:`status_for`."""
    assert isinstance(exc, RuntimeInputError)
    return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))
