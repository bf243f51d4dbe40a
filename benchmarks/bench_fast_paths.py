"""Fast paths, each printed as a figure and its paired ratio (``make bench``; not a test: no pass/fail).

1. The API's event loop during its first message: ``/healthz`` latency (p50/p99, ms) while the first message runs
   on the recorded model against the same API idle.
2. Start-ups: ``orchestrator --help``, ``projects`` (five projects), ``servers`` and ``threads`` (500 threads)
   against ``python -c pass``; ``orchestrator api`` ready (first ``/healthz``) against a bare FastAPI app on uvicorn.
3. Thread listings: ``GET /threads`` (one request, and 50 in flight) at 1,000 threads against 10 threads.
4. The replay seam: one ``LLM.chat`` call against the replay handler it wraps (ms per call).
5. Tokens: for both built-in scenarios run to the deploy approval, the prompt tokens per role (a real tokenizer,
   tool schemas included, counted as litellm's ``token_counter`` counts them: :mod:`core.token_count`), how much of
   each prompt repeats an earlier prompt of the same role (its prefix), and the per-role prefix that is the same in
   both scenarios (system prompt and tool schemas).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from tests.fixtures.api_server import (  # noqa: E402
    ApiServer,
    free_port,
    make_key,
    orchestrator_env,
    start_api,
    stop_api,
)

QUICK = {
    "name": "quick",
    "exchanges": [{"id": "po", "role": "po", "when": {"contains": ["status of"]}, "reply": {"content": "Quiet."}}],
}
BARE_FASTAPI = (
    "import sys, uvicorn\nfrom fastapi import FastAPI\napp = FastAPI()\n"
    "@app.get('/healthz')\ndef healthz():\n    return {'status': 'ok'}\n"
    "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
)


def verdict(figure: float, goal: float, unit: str = "x") -> str:
    """``goal <= 5x: met`` (or ``NOT met``): a figure next to the goal of the fast-path work."""
    return f"goal <= {goal:g}{unit}: {'met' if figure <= goal else 'NOT met'}"


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def settings_in(data: Path, **kw: Any) -> Settings:
    """Settings for a benchmark data dir (replay model, a private port range)."""
    return Settings(data_dir=data, port_range_start=21100, port_range_end=21150, release_root=data / "rel", **kw)


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time (s) of ``runs`` runs of ``cmd``."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, env=env)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def poll_health(api: ApiServer, until: asyncio.Future[Any] | None, seconds: float) -> list[float]:
    """``/healthz`` latencies (ms), one request at a time, until ``until`` is done (or for ``seconds``)."""

    out: list[float] = []
    deadline = time.perf_counter() + seconds
    async with api.client(None, timeout=30) as probe:
        while (until is not None and not until.done()) or (until is None and time.perf_counter() < deadline):
            t0 = time.perf_counter()
            await probe.get("/healthz")
            out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
    return out


async def first_message(api: ApiServer) -> tuple[float, list[float], list[float]]:
    """The first message's wall time (s), ``/healthz`` latencies during it and then idle (ms)."""
    async with api.client("operator", timeout=120) as client:
        tid = (await client.post("/threads")).json()["thread_id"]
        t0 = time.perf_counter()

        async def send() -> float:
            async with client.stream("POST", f"/threads/{tid}/messages", json={"text": "status of nothing?"}) as r:
                async for _ in r.aiter_lines():
                    pass
            return time.perf_counter() - t0

        task = asyncio.ensure_future(send())
        during = await poll_health(api, task, 0)
        took = await task
    idle = await poll_health(api, None, 2.0)
    return took, during, idle


def bench_event_loop(starts: int = 3, settle_s: float = 3.0) -> None:
    """The first message sent as soon as ``/healthz`` answers, and ``settle_s`` later (start-up's warm-up done).

    Each way ``starts`` fresh APIs; their probes are pooled for the percentiles.
    """
    for label, wait in (("at once", 0.0), (f"{settle_s:g} s after start-up", settle_s)):
        took, during, idle = [], [], []
        for _ in range(starts):
            with tempfile.TemporaryDirectory() as tmp:
                data, recordings = Path(tmp) / "d", Path(tmp) / "r"
                recordings.mkdir()
                (recordings / "quick.json").write_text(json.dumps(QUICK))
                settings = settings_in(data)
                env = {"ORCH_MODEL": "replay/quick", "ORCH_REPLAY_DIR": str(recordings)}
                api = start_api(settings, Path(tmp) / "api.log", **env)
                try:
                    time.sleep(wait)
                    one, probes, quiet = asyncio.run(first_message(api))
                finally:
                    stop_api(api)
            took.append(one)
            during += probes
            idle += quiet
        p99 = pct(during, 0.99)
        print(
            f"api first message {label}: median {statistics.median(took):.2f} s; /healthz during it p50 "
            f"{pct(during, 0.5):.1f} ms p99 {p99:.1f} ms ({len(during)} probes, {starts} starts; "
            f"{verdict(p99, 50, ' ms')}), idle p99 {pct(idle, 0.99):.1f} ms"
        )


def ready_s(cmd: list[str], port: int, env: dict[str, str] | None = None) -> float:
    """Seconds from starting ``cmd`` to its first ``/healthz`` 200 on ``port``; the process is stopped after."""
    import httpx

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def fill(settings: Settings, threads: int, projects: int = 0) -> None:
    """A migrated database with ``threads`` indexed threads and ``projects`` draft projects."""
    from core.db import Database
    from models.enums import ProjectStatus
    from models.tables import Project, ThreadRecord, utcnow

    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    start = utcnow() - timedelta(days=1)
    async with db.session() as s:
        for i in range(threads):
            when = start + timedelta(seconds=i)
            s.add(ThreadRecord(id=f"t-{i:06d}", title=f"thread {i}", pending=[], updated_at=when))
        for i in range(projects):
            s.add(Project(name=f"p{i}", status=ProjectStatus.draft))
    await db.dispose()


def bench_startups() -> None:
    bare = timed([sys.executable, "-c", "pass"], 10)
    print(f"python -c pass    median {bare * 1000:7.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_in(Path(tmp))
        asyncio.run(fill(settings, 500, projects=5))
        env = orchestrator_env(settings)
        env["ORCH_DATA_DIR"] = str(settings.data_dir)
        for args in (["--help"], ["projects"], ["servers"], ["threads"]):
            took = timed([sys.executable, "-m", "cli.main", *args], 5, env)
            name = " ".join(args) + (" (500 threads)" if args == ["threads"] else "")
            print(
                f"orchestrator {name:22s} median {took * 1000:6.0f} ms  ({took / bare:.1f}x python -c pass; "
                f"{verdict(took / bare, 5)})"
            )
        port = free_port()
        api = [ready_s([sys.executable, "-m", "cli.main", "api", "--port", str(port)], port, env) for _ in range(3)]
        fast = [ready_s([sys.executable, "-c", BARE_FASTAPI, str(port)], port) for _ in range(3)]
    a, f = statistics.median(api), statistics.median(fast)
    print(
        f"orchestrator api ready median {a * 1000:6.0f} ms; bare FastAPI on uvicorn {f * 1000:.0f} ms ({a / f:.1f}x; "
        f"{verdict(a / f, 2)})"
    )


async def listing_latency(api: ApiServer) -> tuple[float, float]:
    """Median ms of one ``GET /threads`` at a time (20 runs), and of 50 in flight at once."""
    async with api.client("viewer", timeout=600) as client:
        one = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert (await client.get("/threads")).status_code == 200
            one.append((time.perf_counter() - t0) * 1000)

        async def timed_get() -> float:
            t0 = time.perf_counter()
            assert (await client.get("/threads")).status_code == 200
            return (time.perf_counter() - t0) * 1000

        many = await asyncio.gather(*(timed_get() for _ in range(50)))
    return statistics.median(one), statistics.median(many)


def bench_listings() -> None:
    figures = {}
    for size in (10, 1000):
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_in(Path(tmp) / "d")
            asyncio.run(fill(settings, size))
            api = start_api(settings, Path(tmp) / "api.log", roles=False)
            api.keys["viewer"] = make_key(settings.data_dir, "viewer", "viewer", orchestrator_env(settings))
            try:
                figures[size] = asyncio.run(listing_latency(api))
            finally:
                stop_api(api)
    (one10, many10), (one1k, many1k) = figures[10], figures[1000]
    print(
        f"GET /threads      10 threads {one10:.1f} ms, 1,000 threads {one1k:.1f} ms ({one1k / one10:.2f}x; "
        f"{verdict(one1k / one10, 2)}); 50 in flight: median {many10:.0f} ms vs {many1k:.0f} ms "
        f"({many1k / many10:.2f}x; {verdict(many1k / many10, 2)})"
    )


async def seam_vs_handler(data: Path) -> tuple[float, float]:
    from core.db import Database
    from core.llm import LLM
    from core.replay import ReplayModel

    (data / "quick.json").write_text(json.dumps(QUICK))
    msgs = [{"role": "user", "content": "status of nothing?"}]
    settings = settings_in(data, model="replay/quick", replay_dir=data)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    seam, handler = LLM(settings, db), ReplayModel()
    await seam.chat("po", msgs)
    t0 = time.perf_counter()
    for _ in range(50):
        await seam.chat("po", msgs)
    per_call = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for _ in range(50):
        await handler.acompletion("quick", msgs, str(data), role="po")
    per_handler = (time.perf_counter() - t0) / 50
    await db.dispose()
    return per_call, per_handler


def bench_seam() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        call, handler = asyncio.run(seam_vs_handler(Path(tmp)))
    print(
        f"replay seam       {call * 1000:.2f} ms a call (its llmcall row included); the handler alone "
        f"{handler * 1000:.2f} ms ({call / handler:.1f}x)"
    )


async def scenario_prompts(data: Path, scenario: str, text: str) -> list[tuple[str, list[Any], list[Any] | None]]:
    """Every model request ``(role, messages, tools)`` of the main job on ``scenario``, to the deploy approval."""
    from core import llm
    from runtime.threads import OrchestratorRuntime
    from services.identities import cli_identity

    seen: list[tuple[str, list[Any], list[Any] | None]] = []
    real = llm.LLM._complete

    async def spy(self: Any, role: str, model: str, messages: list[Any], tools: list[Any] | None, *a: Any) -> Any:
        seen.append((role, messages, tools))
        return await real(self, role, model, messages, tools, *a)  # type: ignore[arg-type]

    llm.LLM._complete = spy  # type: ignore[method-assign,assignment]
    try:
        settings = settings_in(data, model=f"replay/{scenario}")
        async with OrchestratorRuntime(settings) as rt:
            async for _ in rt.start_turn(text, "bench", actor=cli_identity()):
                pass
    finally:
        llm.LLM._complete = real  # type: ignore[method-assign]
    return seen


def common_prefix(a: str, b: str) -> int:
    """Characters ``a`` and ``b`` share from their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def bench_tokens() -> None:
    from core.token_count import count_prompt, count_text

    runs = {
        "hello-api": "I need a small HTTP service called hello-api with a /health endpoint",
        "todo-api": "Please build todo-api: a small HTTP service to keep a todo list",
    }
    first_of: dict[str, list[str]] = defaultdict(list)  # each scenario's first request of a role, flattened
    for scenario, text in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            requests = asyncio.run(scenario_prompts(Path(tmp), scenario, text))
        per_role: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # calls, prompt tokens, repeated tokens
        earlier: dict[str, list[str]] = defaultdict(list)
        for role, messages, tools in requests:
            flat = json.dumps(tools or [], sort_keys=True) + json.dumps(messages, sort_keys=True, default=str)
            tokens = count_prompt(messages, tools)
            shared = max((common_prefix(flat, old) for old in earlier[role]), default=0)
            repeated = count_text(flat[:shared]) if shared else 0
            if not earlier[role]:
                first_of[role].append(flat)
            earlier[role].append(flat)
            row = per_role[role]
            row[0], row[1], row[2] = row[0] + 1, row[1] + tokens, row[2] + min(repeated, tokens)
        total = sum(r[1] for r in per_role.values())
        repeated_total = sum(r[2] for r in per_role.values())
        print(
            f"tokens {scenario:10s} {total:6d} prompt tokens in {len(requests)} calls; repeated prefix "
            f"{repeated_total / max(total, 1):.0%}"
        )
        for role, (calls, tokens, repeated) in sorted(per_role.items()):
            print(
                f"  {role:10s} {calls:3d} calls {tokens:6d} prompt tokens ({tokens / calls:.0f} a call); "
                f"repeated prefix {repeated / max(tokens, 1):.0%}"
            )
    for role, flats in sorted(first_of.items()):  # what no project changes: the system prompt and tool schemas
        shared = min(common_prefix(flats[0], other) for other in flats[1:]) if len(flats) > 1 else 0
        fixed = count_text(flats[0][:shared]) if shared else 0
        whole = count_text(flats[0])
        print(
            f"fixed prefix {role:10s} {fixed / whole:4.0%} of its first request is alike in both scenarios "
            f"({fixed} of {whole} tokens of the request as JSON)"
        )


def main() -> None:
    """Run every fast-path benchmark and print its figures."""
    bench_startups()
    bench_event_loop()
    bench_listings()
    bench_seam()
    bench_tokens()


if __name__ == "__main__":
    main()
