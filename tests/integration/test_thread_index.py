"""Thread listings come from the thread index, a page at a time: the runtime writes it when a run starts and ends,
the CLI reads it without LangGraph or litellm, and ``GET /threads`` pages through it with a cursor."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from core.db import Database
from core.settings import Settings
from models.enums import AccessRole
from models.tables import ThreadRecord, utcnow
from runtime.errors import RuntimeInputError
from runtime.listing import list_threads
from runtime.threads import OrchestratorRuntime
from services.identities import Identity
from tests.conftest import REPO_ROOT
from tests.fixtures.api_server import start_api, stop_api
from tests.integration.helpers import cli_env

ALICE = Identity(name="token:alice", role=AccessRole.operator)
QUICK = {
    "name": "quick",
    "exchanges": [
        {"id": "po-quiet", "role": "po", "when": {"contains": ["status of nothing"]}, "reply": {"content": "Quiet."}},
    ],
}


async def add_threads(db: Database, n: int, *, owner: str | None = None, prefix: str = "t-") -> list[str]:
    """``n`` indexed threads, the last one newest; two share each timestamp (the cursor must break the tie)."""
    start = utcnow() - timedelta(hours=1)
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    async with db.session() as s:
        for i, tid in enumerate(ids):
            when = start + timedelta(seconds=i // 2)
            s.add(ThreadRecord(id=tid, title=f"#{i}", owner=owner, pending=[], created_at=when, updated_at=when))
    return ids


async def test_pages_follow_each_other_newest_first_without_gaps_or_repeats(db: Database) -> None:
    ids = await add_threads(db, 7)
    await add_threads(db, 2, owner=ALICE.name, prefix="a-")
    seen, cursor, sizes = [], None, []
    while True:
        page = await list_threads(db, limit=3, cursor=cursor)
        sizes.append(len(page.threads))
        seen += [v.id for v in page.threads]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sizes == [3, 3, 3] and len(seen) == len(set(seen)) == 9
    assert [t for t in seen if t.startswith("t-")] == ids[::-1]
    everything = await list_threads(db)
    assert [v.id for v in everything.threads] == seen and everything.next_cursor is None
    own = await list_threads(db, owner=ALICE.name, limit=1)
    assert [v.id for v in own.threads] == ["a-0001"] and own.next_cursor is not None
    assert (await list_threads(db, limit=3, cursor="1~t-zzz")).threads == [], "a position before every thread"
    for bad in ("not-a-cursor", "12~", "~t-1", "123456789012345678~t-1"):
        with pytest.raises(RuntimeInputError, match="bad cursor"):
            await list_threads(db, limit=3, cursor=bad)
    with pytest.raises(RuntimeInputError, match="limit"):
        await list_threads(db, limit=0)


async def test_runs_write_the_index_and_old_threads_are_indexed_from_their_checkpoint(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "quick.json").write_text(json.dumps(QUICK))
    cfg = settings.model_copy(update={"model": "replay/quick", "replay_dir": tmp_path})
    async with OrchestratorRuntime(cfg) as rt:
        ok = [ev.kind async for ev in rt.start_turn("status of nothing?", "t-quiet", actor=ALICE)]
        assert ok[-1] == "done"
        with pytest.raises(Exception, match="replay mismatch"):
            _ = [ev async for ev in rt.start_turn("something unrecorded", "t-broken", actor=ALICE)]
        async with rt.db.session() as s:
            s.add(ThreadRecord(id="t-legacy", title="from before the index", pending=None))
        indexed = {v.id: v for v in (await list_threads(rt.db)).threads}
        assert (indexed["t-quiet"].pending, indexed["t-quiet"].stopped_mid_run) == ([], False)
        assert indexed["t-broken"].stopped_mid_run, "a run that failed part-way is shown as stopped mid-run"
        assert (await list_threads(rt.db)).unindexed == ["t-legacy"]
        views = {v.id: v for v in await rt.threads()}
        assert views["t-legacy"].pending == [] and not views["t-legacy"].stopped_mid_run
        assert (await list_threads(rt.db)).unindexed == [], "the checkpoint is read once, then the index answers"


async def test_cli_threads_pages_through_the_index_without_the_graph_stack(settings: Settings, db: Database) -> None:
    ids = await add_threads(db, 120)
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['orchestrator', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('cli.main', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('langgraph', 'litellm', 'langchain_core', 'ansible_runner') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )

    def threads(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", probe, "threads", "--json", "--limit", "50", *args]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=cli_env(settings), capture_output=True, text=True, timeout=60)

    listed, cursor = [], None
    for _ in range(3):
        done = threads(*(["--cursor", cursor] if cursor else []))
        assert done.returncode == 0, done.stderr
        assert "HEAVY []" in done.stderr, done.stderr
        listed += [t["id"] for t in json.loads(done.stdout)]
        more = [line for line in done.stderr.splitlines() if line.startswith("more:")]
        cursor = more[0].split("--cursor ")[1].strip() if more else None
    assert listed == ids[::-1] and cursor is None
    refused = threads("--cursor", "garbage")
    assert refused.returncode != 0 and "bad cursor" in refused.stderr and "Traceback" not in refused.stderr


async def test_get_threads_pages_with_a_cursor(settings: Settings, tmp_path: Path) -> None:
    api = start_api(settings, tmp_path / "api.log")
    try:
        async with api.client("operator") as client:
            made = [(await client.post("/threads")).json()["thread_id"] for _ in range(5)]
            first = await client.get("/threads", params={"limit": 2})
            assert first.status_code == 200 and len(first.json()) == 2
            listed, response = [t["id"] for t in first.json()], first
            while "X-Next-Cursor" in response.headers:
                assert 'rel="next"' in response.headers["Link"]
                response = await client.get(
                    "/threads", params={"limit": 2, "cursor": response.headers["X-Next-Cursor"]}
                )
                listed += [t["id"] for t in response.json()]
            assert sorted(listed) == sorted(made) and len(listed) == 5
            bad = await client.get("/threads", params={"cursor": "garbage"})
            assert bad.status_code == 422 and "cursor" in bad.text
            assert (await client.get("/threads", params={"limit": 501})).status_code == 422
    finally:
        stop_api(api)


async def test_pages_and_the_start_check_work_on_postgres(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        assert not await db.at_head(), "a new PostgreSQL database has no revision"
        await db.migrate()
        assert await db.at_head()
        ids = await add_threads(db, 5)
        first = await list_threads(db, limit=3)
        rest = await list_threads(db, limit=3, cursor=first.next_cursor)
        assert [v.id for v in first.threads + rest.threads] == ids[::-1] and rest.next_cursor is None
    finally:
        await db.dispose()
