"""The PO graph (LangGraph, the graphs, their nodes) is built on first use, off the event loop, once.

In process: a runtime that defers its checkpoints opens without a graph; concurrent first callers share one build;
a build that fails (the checkpoint file cannot be opened) raises to its caller and the next call builds again.
Over HTTP: the real API answers ``/healthz`` and an authenticated request, imports LangGraph in a worker thread
(a ``sitecustomize`` records the process and thread of the first ``import langgraph``), and runs a first message to
its end.
"""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from runtime.threads import OrchestratorRuntime
from tests.fixtures.api_server import start_shimmed_api, stop_api
from tests.integration.test_api import run_sse

QUICK = {
    "name": "quick",
    "exchanges": [
        {"id": "po-quiet", "role": "po", "when": {"contains": ["status of nothing"]}, "reply": {"content": "Quiet."}},
    ],
}

RECORD_IMPORT_THREAD = textwrap.dedent(
    """
    import importlib.abc, os, sys, threading

    class RecordLanggraph(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "langgraph" and "langgraph" not in sys.modules:
                with open(os.environ["LANGGRAPH_IMPORT_MARK"], "a") as mark:
                    mark.write(f"{os.getpid()} {threading.current_thread().name}\\n")
            return None

    sys.meta_path.insert(0, RecordLanggraph())
    """
)


async def test_a_deferred_runtime_builds_one_graph_for_concurrent_first_callers(settings: Settings) -> None:
    async with OrchestratorRuntime(settings, defer_checkpoints=True) as rt:
        with pytest.raises(RuntimeError, match="opens on first use"):
            rt.graph  # noqa: B018  (the property is the check)
        graphs = await asyncio.gather(*(rt.compiled() for _ in range(5)))
        assert all(g is graphs[0] for g in graphs)
        assert rt.graph is graphs[0] and graphs[0].checkpointer is not None
        assert not await rt.thread_exists("t-none")
    assert settings.checkpoint_path.exists(), "the saver opened on the first build"


async def test_a_runtime_compiles_on_first_use_and_sync_callers_get_the_same_graph(settings: Settings) -> None:
    async with OrchestratorRuntime(settings) as rt:
        graph = rt.graph
        assert await rt.compiled() is graph
        assert (await graph.aget_state({"configurable": {"thread_id": "t-none"}})).created_at is None


async def test_a_failed_build_raises_to_its_caller_and_the_next_call_builds_again(settings: Settings) -> None:
    settings.ensure_data_dir()
    settings.checkpoint_path.mkdir()  # a directory where the checkpoint file goes: SQLite cannot open it
    async with OrchestratorRuntime(settings, defer_checkpoints=True) as rt:
        with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
            await rt.compiled()
        settings.checkpoint_path.rmdir()
        graph = await rt.compiled()
        assert rt.graph is graph
        assert (await graph.aget_state({"configurable": {"thread_id": "t-none"}})).created_at is None


async def test_the_api_serves_and_imports_langgraph_off_the_event_loop(settings: Settings, tmp_path: Path) -> None:
    mark = tmp_path / "langgraph-import"
    api = start_shimmed_api(
        settings, tmp_path, RECORD_IMPORT_THREAD, QUICK, LANGGRAPH_IMPORT_MARK=str(mark), ORCH_MODEL="replay/quick"
    )
    try:
        async with api.client("operator", timeout=httpx.Timeout(10, read=120)) as client:
            assert (await client.get("/threads")).status_code == 200
            tid = (await client.post("/threads")).json()["thread_id"]
            events = await run_sse(client, f"/threads/{tid}/messages", {"text": "status of nothing?"})
        assert [kind for kind, _ in events][-1] == "done", events
        assert any(kind == "message" and data["text"] == "Quiet." for kind, data in events), events
        first = [line.split(" ", 1)[1] for line in mark.read_text().splitlines() if line.startswith(f"{api.proc.pid} ")]
        assert first and first != ["MainThread"], f"the API first imported LangGraph on its {first} thread"
    finally:
        stop_api(api)
