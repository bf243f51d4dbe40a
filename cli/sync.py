"""``sync``: the source-of-truth service process (one holder at a time, clean stop)."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from cli.app import app, console, err, load_settings

if TYPE_CHECKING:
    pass


@app.command()
def sync(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass of every worker, then exit (1 if one failed).")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="WORKER",
            help="Run only this worker (repeatable): github_sync, server_sync, health_checker, provisioner_trigger, "
            "deadlines.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --once: the summaries as JSON.")] = False,
) -> None:
    """The source-of-truth service: keep the database equal to GitHub and the servers, resume waiting projects.

    Runs until SIGTERM/SIGINT, letting passes in flight finish. One sync process works at a time; another waits.
    """
    import asyncio  # here, not at the top: --help and the other commands do not pay for it
    import os
    from dataclasses import asdict
    from datetime import datetime

    from rich.text import Text

    from sync_workers.base import PassSummary
    from sync_workers.lock import SyncLock, waiting_message
    from sync_workers.scheduler import check_names, describe, run_forever, run_once

    settings = load_settings(ctx)
    try:
        check_names(only)
        if as_json and not once:
            raise ValueError("--json needs --once (a running sync prints a line per pass)")
    except ValueError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(2) from exc

    def show(summary: PassSummary, stamp: bool = False) -> None:
        prefix = f"{datetime.now():%H:%M:%S} " if stamp else ""
        line = describe(summary)
        style = "red" if summary.errors else ("dim" if line != summary.line() else "green")
        console.print(Text(prefix + line, style=style), soft_wrap=True, highlight=False)
        for note in summary.notes:
            if note not in line:
                console.print(Text(f"    {note}", style="dim"), soft_wrap=True, highlight=False)

    def starting(name: str) -> None:
        err.print(f"{name}: running…", style="dim", markup=False, highlight=False)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # while waiting for the lock, and through --once
        lock = SyncLock(settings, on_lost=stop)  # a lost lock stops the workers as SIGTERM does
        acquiring = asyncio.create_task(
            lock.acquire(on_wait=lambda pid: err.print(waiting_message(pid), markup=False, highlight=False))
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            err.print("stopped before the lock was free; nothing ran", markup=False)
            return 0
        stopping.cancel()
        acquiring.result()
        try:
            if once:
                summaries = await run_once(
                    settings, only=only, stop=stop, on_start=starting, on_summary=None if as_json else show
                )
                if as_json:
                    print(json.dumps([{**asdict(s), "ok": s.ok} for s in summaries], indent=2))
                if lock.lost.is_set():
                    err.print(f"sync: lost the lock ({lock.lost_reason}); stopped", markup=False)
                    return 1
                if stop.is_set():
                    err.print("sync: stopped on request before every worker ran", markup=False)
                    return 1
                return 1 if any(s.errors for s in summaries) else 0
            err.print(
                f"sync: running (pid {os.getpid()}, data {settings.data_dir}); SIGTERM or Ctrl-C stops",
                markup=False,
                highlight=False,
            )
            await run_forever(
                settings, stop=stop, only=only, on_summary=lambda s: show(s, stamp=True), cancel=lock.lost
            )
            if lock.lost.is_set():
                err.print(f"sync: lost the lock ({lock.lost_reason}); stopped", markup=False)
                return 1
            err.print("sync: stopped cleanly", markup=False)
            return 0
        finally:
            await lock.release()

    raise typer.Exit(asyncio.run(go()))
