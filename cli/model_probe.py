"""Before an interactive chat sends a line, a look at whether anything listens where the PO's model is served.

A model server that is not running (a closed port, Ollama not started) would otherwise cost the first message the
litellm import and every retry of the model seam before the person hears why. One TCP connection to the model's
address answers that in milliseconds; the line is then not sent, and the chat stays open.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from core.settings import Settings

OLLAMA_DEFAULT_BASE = "http://localhost:11434"
"""Where litellm reaches an ``ollama/`` or ``ollama_chat/`` model without ORCH_API_BASE (Ollama's own default)."""
CONNECT_TIMEOUT_S = 2.0
"""Longest wait for the connection (a host that drops packets); a refused one fails at once."""


def model_base(settings: Settings) -> str | None:
    """The base URL the PO's model is served at, when it is one of ours to check; None for a hosted provider.

    ORCH_API_BASE when set; Ollama's default for an Ollama model without it; None for a recorded (``replay/``)
    model, which needs no server, and for a provider's own address (its reachability is the provider's).
    """
    model = settings.model_for("po")
    if model.startswith("replay/"):
        return None
    if settings.api_base:
        return settings.api_base
    return OLLAMA_DEFAULT_BASE if model.startswith(("ollama/", "ollama_chat/")) else None


async def unreachable(settings: Settings) -> str | None:
    """Why nothing answers at the PO model's address (``nothing listens at URL (Connection refused)``), else None.

    None also when the address is not ours to check (see :func:`model_base`) or cannot be parsed: the model seam
    then finds out, with its own words.
    """
    base = model_base(settings)
    if base is None:
        return None
    parts = urlsplit(base)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT_S)
    except TimeoutError:
        return f"nothing answers at {base} within {CONNECT_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"nothing listens at {base} ({os.strerror(exc.errno) if exc.errno else exc})"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None
