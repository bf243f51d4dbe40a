"""Rendering console pages: one autoescaped Jinja2 environment over the package's templates, and page headers.

Every page is HTML rendered on the server; HTMX (vendored in ``static/htmx.min.js``) posts the forms as JSON and
polls the live parts. The Content-Security-Policy allows scripts and styles from the console itself only (no inline
script or style, no eval), no framing, and forms that post back here only.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from api.console.session import ConsoleSession
from services.identities import Identity

if TYPE_CHECKING:
    from jinja2 import Environment

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""Headers of every console page and fragment."""


def when(value: datetime | str | None) -> str:
    """A time as ``2026-12-07 02:10:03 UTC`` (naive datetimes are UTC, as the database hands them back); ``—``."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: float | None) -> str:
    """Milliseconds as ``850 ms``, ``12.4 s`` or ``3 min 5 s``; ``—`` for None."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{int(ms // 60_000)} min {int(ms % 60_000 // 1000)} s"


def usd(value: float | None) -> str:
    """Dollars with four decimals below a cent (model calls are cheap), else two."""
    if value is None:
        return "—"
    return f"${value:.4f}" if 0 < value < 0.01 else f"${value:,.2f}"


@functools.cache
def environment() -> Environment:
    """The console's one Jinja2 environment, made on the first page rendered (Jinja2 is not loaded before)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("api.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, duration=duration, usd=usd)
    return env


def render(
    request: Request, who: Identity | None, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``templates/<template>`` for ``who`` (None: nobody signed in) with the console's headers.

    Every template gets ``who`` and ``csrf`` (the session's token for its forms; empty for a key-header request).
    """
    session: ConsoleSession | None = getattr(request.state, "console_session", None)
    html = environment().get_template(template).render(who=who, csrf=session.csrf if session else "", **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(request: Request, who: Identity | None, status_code: int, message: str) -> HTMLResponse:
    """An error as a page (``status_code``, the message in words)."""
    return render(request, who, "error.html", status_code=status_code, message=message, code=status_code)
