"""The seam's fast paths: litellm imported once off the event loop, replay served without litellm at all, and
token counts from a real tokenizer with the tool schemas included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from core import llm
from core.db import Database
from core.settings import Settings
from tests.unit.test_llm_seam import calls, replay_settings

ROOT = Path(__file__).resolve().parents[2]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "finish",
            "description": "Hand in the design.",
            "parameters": {
                "type": "object",
                "properties": {"summary": {"type": "string", "description": "What the service does, in a line."}},
                "required": ["summary"],
            },
        },
    }
]
ASK = [
    {"role": "system", "content": "You are the Architect. Design small HTTP services with tests."},
    {"role": "user", "content": "Project: tokens-demo\nDesign it."},
]
REPLY = {"tool_calls": [{"name": "finish", "arguments": {"summary": "one file answering /health"}}]}


async def test_aload_litellm_imports_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(llm, "_litellm", None)
    real = llm.load_litellm

    def spy() -> Any:
        seen.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(llm, "load_litellm", spy)
    first, second = await asyncio.gather(llm.aload_litellm(), llm.aload_litellm())
    assert first is second and llm.litellm_loaded()
    assert seen and threading.main_thread().name not in seen, seen
    seen.clear()
    await llm.aload_litellm()
    assert seen == [], "a loaded litellm is returned without another trip to a thread"


async def test_replay_is_served_without_litellms_router_and_counts_real_tokens(
    settings: Settings, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchanges = [{"id": "design", "role": "architect", "when": {"contains": ["tokens-demo"]}, "reply": REPLY}]
    cfg = replay_settings(settings, tmp_path, exchanges)
    litellm = await llm.aload_litellm()

    async def no_router(**kwargs: Any) -> Any:
        raise AssertionError(f"replay went through litellm.acompletion: {kwargs.get('model')}")

    monkeypatch.setattr(litellm, "acompletion", no_router)
    monkeypatch.setattr(llm, "aload_litellm", no_router)
    seam = llm.LLM(cfg, db)
    with_tools = await seam.chat("architect", ASK, tools=TOOLS, thread_id="t-tokens")
    await seam.chat("architect", ASK, thread_id="t-tokens")
    assert with_tools.tool_calls[0]["args"] == {"summary": "one file answering /health"}
    rows = await calls(db)
    assert [r.ok for r in rows] == [True, True] and {r.cost_usd for r in rows} == {0.0}
    expected = litellm.token_counter(model="gpt-4o", messages=ASK, tools=TOOLS)
    assert rows[0].prompt_tokens == expected
    assert rows[1].prompt_tokens == litellm.token_counter(model="gpt-4o", messages=ASK)
    assert rows[0].prompt_tokens > rows[1].prompt_tokens, "the tool schemas count as prompt tokens"
    words = sum(len(m["content"].split()) for m in ASK)
    assert rows[1].prompt_tokens > words, "a tokenizer counts more tokens than words"
    assert rows[0].completion_tokens > 0


def test_a_recorded_run_never_imports_litellm(tmp_path: Path) -> None:
    """A whole replay call in a fresh process: the answer and its traced tokens, and litellm never in sys.modules."""
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "tok.json").write_text(
        json.dumps(
            {"exchanges": [{"id": "d", "role": "architect", "when": {"contains": ["tokens-demo"]}, "reply": REPLY}]}
        )
    )
    code = f"""
import asyncio, json, sys
from pathlib import Path
from core.db import Database
from core.llm import LLM
from core.settings import Settings
from tests.unit.test_llm_fast_paths import ASK, TOOLS

async def main():
    s = Settings(data_dir=Path({str(tmp_path / "d")!r}), model="replay/tok", replay_dir=Path({str(tmp_path / "rec")!r}))
    s.ensure_data_dir()
    db = Database(s.db_url)
    await db.migrate()
    reply = await LLM(s, db).chat("architect", ASK, tools=TOOLS)
    print(json.dumps({{"args": reply.tool_calls[0]["args"], "litellm": "litellm" in sys.modules}}))

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"args": {"summary": "one file answering /health"}, "litellm": False}


def test_which_seams_a_mix_of_recorded_and_live_roles_needs(tmp_path: Path) -> None:
    recorded = Settings(data_dir=tmp_path, model="replay/hello-api")
    assert llm.uses_replay(recorded) and not llm.needs_litellm(recorded)
    mixed = recorded.model_copy(update={"model_developer": "openai/gpt-4o-mini"})
    assert llm.uses_replay(mixed) and llm.needs_litellm(mixed)
    live = Settings(data_dir=tmp_path, model="openai/gpt-4o-mini")
    assert not llm.uses_replay(live) and llm.needs_litellm(live)
