"""A model call never stalls the API's event loop: litellm's import (seconds) runs in a worker thread.

The real API runs in a subprocess with a ``sitecustomize`` that makes ``import litellm`` hold for a few seconds and
leaves marker files (``started`` when the import begins, ``slept`` when its hold ends). The model is an
OpenAI-format server on 127.0.0.1 (litellm's ``openai/`` route). A first message is sent; while the import holds,
``/healthz`` must answer. Had the import run on the event loop, no request could be answered before the hold ended,
so the check rests on the order of events, not on a time threshold. A recorded model never imports litellm at all.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import httpx

from core.replay import Scenario
from core.settings import Settings
from tests.fixtures.api_server import ApiServer, start_shimmed_api, stop_api
from tests.fixtures.openai_server import OpenAIServer, role_of
from tests.integration.test_api import run_sse

HOLD_S = 6.0

SLOW_IMPORT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, os, sys, time

    MARKS = os.environ["SLOW_LITELLM_MARKS"]

    class SlowLoader(importlib.abc.Loader):
        def __init__(self, real):
            self.real = real

        def create_module(self, spec):
            return self.real.create_module(spec)

        def get_resource_reader(self, name):  # litellm reads its price map as a package resource
            return self.real.get_resource_reader(name)

        def __getattr__(self, name):
            return getattr(self.real, name)

        def exec_module(self, module):  # under litellm's own module lock, not the global import lock
            open(os.path.join(MARKS, "started"), "w").close()
            time.sleep(float(os.environ["SLOW_LITELLM_HOLD_S"]))
            open(os.path.join(MARKS, "slept"), "w").close()
            self.real.exec_module(module)

    class SlowLitellm(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "litellm":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            spec.loader = SlowLoader(spec.loader)
            return spec

    sys.meta_path.insert(0, SlowLitellm())
    """
)

QUICK = {
    "name": "quick",
    "exchanges": [
        {
            "id": "po-quiet",
            "role": "po",
            "when": {"contains": ["status of nothing"]},
            "reply": {"content": "All quiet."},
        },
    ],
}


async def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.02)


def slow_litellm_api(settings: Settings, tmp_path: Path, **env: str) -> tuple[ApiServer, Path]:
    """The API in a subprocess whose ``import litellm`` holds :data:`HOLD_S`; returns it and its marks folder."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"SLOW_LITELLM_MARKS": str(marks), "SLOW_LITELLM_HOLD_S": str(HOLD_S), **env}
    return start_shimmed_api(settings, tmp_path, SLOW_IMPORT, QUICK, **env), marks


async def test_healthz_answers_while_litellm_imports_for_the_first_message(settings: Settings, tmp_path: Path) -> None:
    scenario = tmp_path / "quick.json"
    scenario.write_text(json.dumps(QUICK))
    model = OpenAIServer(Scenario.load(scenario), api_key="sk-local-test").__enter__()
    api, marks = slow_litellm_api(
        settings,
        tmp_path,
        ORCH_MODEL="openai/po",
        ORCH_API_BASE=model.base_url + "/v1",
        ORCH_API_KEY="sk-local-test",
    )
    try:
        timeout = httpx.Timeout(10, read=120)
        async with api.client("operator", timeout=timeout) as client, api.client(None, timeout=2) as probe:
            tid = (await client.post("/threads")).json()["thread_id"]
            first = asyncio.create_task(run_sse(client, f"/threads/{tid}/messages", {"text": "status of nothing?"}))
            await wait_for(marks / "started", timeout_s=30)
            answered_during_hold = 0
            while not (marks / "slept").exists() and not first.done():
                health = await probe.get("/healthz")
                assert health.json() == {"status": "ok"}
                answered_during_hold += not (marks / "slept").exists()
                await asyncio.sleep(0.05)
            events = await first
        assert answered_during_hold > 0, "/healthz did not answer while litellm was importing"
        assert [kind for kind, _ in events][-1] == "done", events
        assert any(kind == "message" and data["text"] == "All quiet." for kind, data in events), events
        assert [role_of(body) for body in model.requests] == ["po"], "the answer came over HTTP from the model server"
    finally:
        stop_api(api)
        model.__exit__(None, None, None)


async def test_a_recorded_model_never_imports_litellm(settings: Settings, tmp_path: Path) -> None:
    api, marks = slow_litellm_api(settings, tmp_path, ORCH_MODEL="replay/quick")
    try:
        async with api.client("operator", timeout=httpx.Timeout(10, read=120)) as client:
            tid = (await client.post("/threads")).json()["thread_id"]
            events = await run_sse(client, f"/threads/{tid}/messages", {"text": "status of nothing?"})
        assert any(kind == "message" and data["text"] == "All quiet." for kind, data in events), events
        assert not (marks / "started").exists(), "litellm was imported for a recorded model"
    finally:
        stop_api(api)


WATCH_WARM_UP = textwrap.dedent(
    """
    import gc, os, sys
    import tiktoken.core

    MARKS = os.environ["WARM_UP_MARKS"]
    _init, _freeze, _enable = tiktoken.core.Encoding.__init__, gc.freeze, gc.enable

    def init(self, *args, **kwargs):  # the encoder's build: one call that holds the GIL for 60-90 ms
        _init(self, *args, **kwargs)
        open(os.path.join(MARKS, "tokenizer"), "w").close()

    def log(what):
        with open(os.path.join(MARKS, "collector"), "a") as out:
            out.write(f"{os.getpid()} {what} {sys._getframe(2).f_code.co_name} {gc.get_freeze_count()}\\n")

    def freeze():
        _freeze()
        log("freeze")

    def enable():
        _enable()
        log("enable")

    tiktoken.core.Encoding.__init__ = init
    gc.freeze, gc.enable = freeze, enable
    """
)


async def test_a_recordings_tokenizer_is_built_before_ready_and_warm_up_freezes_what_it_imported(
    settings: Settings, tmp_path: Path
) -> None:
    """Nothing that holds the GIL for long is left for after /healthz answers; the collector comes back on after."""
    marks = tmp_path / "marks"
    marks.mkdir()
    api = start_shimmed_api(
        settings, tmp_path, WATCH_WARM_UP, QUICK, ORCH_MODEL="replay/quick", WARM_UP_MARKS=str(marks)
    )
    try:
        assert (marks / "tokenizer").exists(), "/healthz answered before the recording's tokenizer was built"
        async with api.client("operator", timeout=httpx.Timeout(10, read=120)) as client:
            tid = (await client.post("/threads")).json()["thread_id"]
            events = await run_sse(client, f"/threads/{tid}/messages", {"text": "status of nothing?"})
        assert any(kind == "message" and data["text"] == "All quiet." for kind, data in events), events
    finally:
        stop_api(api)
    pid = str(api.proc.pid)  # the key-making commands before it use the shim too
    calls = [line.split()[1:] for line in (marks / "collector").read_text().splitlines() if line.split()[0] == pid]
    warm_up = calls[: [what for what, _, _ in calls].index("enable") + 1]  # freezes, then the collector back on
    assert len(warm_up) >= 2 and {caller for _, caller, _ in warm_up} == {"collector_paused"}, calls
    assert int(warm_up[0][2]) > 50_000, f"only {warm_up[0][2]} objects frozen: the graph was not built yet"
