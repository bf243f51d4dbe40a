"""``orchestrator``: chat with the PO, list threads, resume interrupts, inspect projects/servers, run the demo.

The commands live in :mod:`cli.conversation`, :mod:`cli.inventory`, :mod:`cli.secret_commands` and :mod:`cli.sync`;
importing them registers them on :data:`cli.app.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import conversation, inventory, secret_commands, sync  # noqa: F401  (registers the commands)
from cli.app import app, console
from cli.conversation import answer_hint

__all__ = ["answer_hint", "app"]


@app.command()
def demo(
    ctx: typer.Context,
    keep_running: Annotated[bool, typer.Option(help="Leave the deployed service running.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the run in this dir (default: a fresh temporary one).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A real litellm model instead of the recording (or set ORCH_MODEL).")
    ] = None,
) -> None:
    """The main job end to end on a recorded model: chat -> Zavhoz || Engineering -> approval -> Ansible deploy."""
    from cli.demo import run_demo

    code = run_demo(data_dir or ctx.obj.get("data_dir"), model or ctx.obj.get("model"), keep_running, console)
    raise typer.Exit(code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the same runtime over HTTP (FastAPI): threads, messages (SSE), approvals, projects, servers."""
    import uvicorn

    uvicorn.run("api.app:app_factory", factory=True, host=host, port=port)


if __name__ == "__main__":
    app()
