"""The PO graph of a runtime and its checkpoint saver, made ready on first use instead of at start.

Importing LangGraph, the graphs and their nodes costs over a second of a process's start, and most of what a
process does first needs none of it (an API answering ``/healthz`` and listing threads from the index, a CLI
listing). :class:`DeferredGraph` compiles the graph the first time a caller needs it: the imports and the graph's
construction run in a worker thread, so an event loop keeps serving meanwhile, and concurrent first callers share
that one build. The saver (:func:`core.checkpoints.open_saver`) is opened at start (:meth:`DeferredGraph.open_saver`)
or, for a process that defers it too, by that first build on the event loop.

A build that fails raises to every caller waiting for it, with the error as the import, the saver or the compile
raised it, and is logged once; the next caller tries again.

Compiling with a checkpointer follows LangGraph's persistence docs
(https://langchain-ai.github.io/langgraph/concepts/persistence/): the saver is opened first and only referenced by
the compiled graph.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING, Any

from core.checkpoints import open_saver
from core.db import is_sqlite_url
from core.heap import collector_paused

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph import StateGraph
    from langgraph.graph.state import CompiledStateGraph

    from core.settings import Settings

log = logging.getLogger(__name__)


def load_builder(settings: Settings) -> StateGraph[Any, Any, Any, Any]:
    """Import the graphs and the saver's module for ``settings.db_url``; return the PO graph's builder.

    Blocking (about a second on a cold process): async callers run it in a worker thread.

    Raises:
        Whatever importing :mod:`graphs.product_owner` or building the graph raises (an ``ImportError``, a
        ``ValueError`` from a malformed graph), unchanged.
    """
    saver_module = "sqlite" if is_sqlite_url(settings.db_url) else "postgres"
    importlib.import_module(f"langgraph.checkpoint.{saver_module}.aio")  # what open_saver imports, loaded here
    from graphs.product_owner import build_product_owner

    return build_product_owner()


class DeferredGraph:
    """The PO graph compiled with the checkpoint saver of ``settings``, built once, on first use.

    Args:
        settings: ``db_url`` chooses the saver (see :func:`core.checkpoints.open_saver`).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._saver_cm: AbstractAsyncContextManager[BaseCheckpointSaver[str]] | None = None
        self._saver: BaseCheckpointSaver[str] | None = None
        self._graph: CompiledStateGraph[Any, Any, Any, Any] | None = None
        self._building: asyncio.Task[CompiledStateGraph[Any, Any, Any, Any]] | None = None

    @property
    def built(self) -> bool:
        """Whether the graph is compiled already."""
        return self._graph is not None

    async def open_saver(self) -> BaseCheckpointSaver[str]:
        """Open the checkpoint saver now, unless it is open (on the event loop: the saver's connection lives there).

        Raises:
            Whatever :func:`core.checkpoints.open_saver` raises (the checkpoint database unreachable...).
        """
        if self._saver is None:
            cm = open_saver(self._settings)  # AsyncSqliteSaver, or AsyncPostgresSaver for a PostgreSQL URL
            saver = await cm.__aenter__()
            self._saver_cm, self._saver = cm, saver
        return self._saver

    def now(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The graph, compiled here and now if it is not yet (blocking: for synchronous callers).

        Raises:
            RuntimeError: the saver is not open (a runtime that defers it: await :meth:`get` instead).
        """
        if self._graph is None:
            if self._saver is None:
                raise RuntimeError("the checkpoint saver opens on first use here: await the runtime's compiled()")
            with collector_paused():  # the imports' objects live as long as the process: no collection walks them
                self._graph = load_builder(self._settings).compile(checkpointer=self._saver, name="product_owner")
        return self._graph

    async def get(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The graph; the first callers wait for one build (imports in a worker thread, the event loop serves).

        A caller cancelled while waiting does not cancel the build the others wait for.

        Raises:
            Whatever the build raised (see :func:`load_builder` and :meth:`open_saver`); the next call builds again.
        """
        if self._graph is not None:
            return self._graph
        return await asyncio.shield(self._start())

    def warm_up(self) -> None:
        """Start the build in the background now, unless it is built or building.

        A failure is logged, and raised again to the callers of :meth:`get`.
        """
        if self._graph is None:
            self._start()

    async def close(self, *exc: object) -> None:
        """Stop waiting for a build still going (its worker thread ends by itself), then close the saver if open.

        Args:
            exc: the exception triple the runtime exits with, passed on to the saver's context manager.
        """
        task, self._building = self._building, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        cm, self._saver_cm, self._saver = self._saver_cm, None, None
        if cm is not None:
            await cm.__aexit__(*exc)  # type: ignore[arg-type]

    def _start(self) -> asyncio.Task[CompiledStateGraph[Any, Any, Any, Any]]:
        task = self._building
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._building = asyncio.create_task(self._build(), name="build the PO graph")
            task.add_done_callback(_log_failure)
        return task

    async def _build(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        with collector_paused():  # the imports' objects live as long as the process: no collection walks them
            builder = await asyncio.to_thread(load_builder, self._settings)
            saver = await self.open_saver()
            if self._graph is None:  # a synchronous caller may have compiled one meanwhile: keep the first
                self._graph = builder.compile(checkpointer=saver, name="product_owner")
        return self._graph


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the PO graph could not be built (the next request that needs it tries again)", exc_info=exc)
