"""Serving the app with uvicorn, with a deadline on request headers.

uvicorn bounds idle keep-alive connections but not a client that sends its request headers a byte at a time (the
Slowloris attack: each such client holds a connection forever). :class:`HeaderDeadlineProtocol` closes a connection
whose next request's headers are not complete within ``api_header_timeout_s``; uvicorn offers no setting for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import Settings


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on request headers.

    Each request's headers must be complete ``header_timeout_s`` after the connection opened or the previous
    response ended, else the connection is closed.
    """

    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        """Stop the clock once a new request's headers are parsed (a new request cycle began)."""
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._disarm()

    def on_response_complete(self) -> None:
        """Start the clock for the next request's headers (before a pipelined one is parsed, which stops it)."""
        self._arm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_for(settings: Settings) -> type[H11Protocol]:
    """A :class:`HeaderDeadlineProtocol` subclass with the settings' header deadline."""
    return type("HeaderDeadline", (HeaderDeadlineProtocol,), {"header_timeout_s": settings.api_header_timeout_s})


def serve(settings: Settings, *, host: str, port: int, **options: Any) -> None:
    """Run the API in this process until interrupted (``orchestrator api``); ``options`` go to ``uvicorn.Config``."""
    from api.app import create_app

    config = uvicorn.Config(create_app(settings), host=host, port=port, http=protocol_for(settings), **options)
    uvicorn.Server(config).run()
