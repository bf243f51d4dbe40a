"""Benchmarks of the main job's hot spots; prints figures and ratios (``make bench``). Not a test: no pass/fail.

1. CLI start-up: ``orchestrator --help`` against a bare ``python -c pass`` and against ``import litellm`` (what the
   lazy import saves).
2. Port leasing: N projects leasing ports concurrently on one SQLite file (leases/s), and the same from two processes.
3. The main job to the deploy approval on the recorded model (wall time, and how much of it is the project's tests).
4. github_sync over a 10,000-repository org on the local GitHub server (first pass, unchanged second pass: 304s).
5. server_sync over 500 entries on a real local sshd, against ``ansible all -m ping`` (installs openssh-server if
   missing).
6. The fast paths (:mod:`benchmarks.bench_fast_paths`): the API's event loop during its first message, start-ups,
   thread listings at 10 and 1,000 threads, the replay seam, and the prompt tokens per role of both scenarios; each
   ratio next to its goal.
7. The demo and its deploy step against the code of before the fast paths (:mod:`benchmarks.bench_baseline`).

The main job (3) runs on the recorded model, which never imports litellm: its figure is all orchestration.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], runs: int) -> float:
    """Median wall time (s) of ``runs`` runs of ``cmd``."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_cli() -> None:
    env_litellm = "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP']='True'; import litellm"
    bare = timed([sys.executable, "-c", "pass"], 10)
    help_ = timed([sys.executable, "-m", "cli.main", "--help"], 10)
    litellm = timed([sys.executable, "-c", env_litellm], 3)
    print(f"cli --help        median {help_ * 1000:7.0f} ms  ({help_ / bare:.1f}x bare python {bare * 1000:.0f} ms)")
    print(f"import litellm    median {litellm * 1000:7.0f} ms  (--help is {litellm / help_:.0f}x faster than this)")


async def lease_many(db_url: str, n: int, offset: int) -> float:
    from sqlmodel import select

    from core.db import Database
    from models import Project, ProjectStatus, Server
    from services import leases

    db = Database(db_url)
    async with db.session() as s:
        server = (await s.exec(select(Server))).one()
        projects = [Project(name=f"p{offset + i}", status=ProjectStatus.draft) for i in range(n)]
        s.add_all(projects)
    t0 = time.perf_counter()
    ports = await asyncio.gather(*(leases.lease_port(db, project_id=p.id or 0, server=server) for p in projects))
    took = time.perf_counter() - t0
    assert len(set(ports)) == n, "duplicate port"
    await db.dispose()
    return took


async def setup_db(data: Path, size: int) -> str:
    from core.db import Database
    from core.settings import Settings
    from services.leases import ensure_default_server

    settings = Settings(data_dir=data, port_range_start=20000, port_range_end=20000 + size)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    await ensure_default_server(db, settings)
    await db.dispose()
    return settings.db_url


def bench_leases(n: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = asyncio.run(setup_db(Path(tmp), 3 * n))
        one = asyncio.run(lease_many(url, n, 0))
        code = (
            f"import asyncio, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.run import lease_many; "
            f"asyncio.run(lease_many({url!r}, {n}, int(sys.argv[1])))"
        )
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code, str(k * n + n)], cwd=ROOT) for k in range(2)]
        assert all(p.wait() == 0 for p in procs)
        two = time.perf_counter() - t0
    print(f"port leases       {n / one:7.0f} leases/s in one process ({n} concurrent)")
    print(
        f"port leases       {2 * n / two:7.0f} leases/s from two processes incl. start-up ({2 * n} total); "
        f"ratio {(2 * n / two) / (n / one):.2f}"
    )


async def main_job(data: Path) -> tuple[float, float]:
    from core.settings import Settings
    from runtime.threads import OrchestratorRuntime
    from services.identities import cli_identity

    settings = Settings(data_dir=data, model="replay/hello-api", port_range_start=21000, port_range_end=21050)
    t0 = time.perf_counter()
    tests = 0.0
    async with OrchestratorRuntime(settings) as rt:
        async for ev in rt.start_turn(
            "I need a small HTTP service called hello-api with a /health endpoint", "b", actor=cli_identity()
        ):
            if ev.kind == "node_end" and ev.node == "run_phase" and (ev.text or "").startswith(("TDD", "IMPL")):
                tests += ev.duration_s or 0.0  # the phase rounds that run the project's tests in the sandbox
    return time.perf_counter() - t0, tests


def bench_main_job() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wall, tests = asyncio.run(main_job(Path(tmp)))
    print(
        f"main job          {wall:7.2f} s to the deploy approval; TDD and IMPL rounds (they test) {tests:.2f} s "
        f"({tests / wall:.0%}), orchestration overhead {wall - tests:.2f} s"
    )


if __name__ == "__main__":
    from benchmarks.bench_baseline import main as bench_baseline
    from benchmarks.bench_fast_paths import main as bench_fast_paths
    from benchmarks.bench_github_sync import main as bench_github_sync
    from benchmarks.bench_server_sync import main as bench_server_sync

    bench_cli()
    bench_fast_paths()
    bench_leases()
    bench_main_job()
    bench_baseline()
    bench_github_sync()
    bench_server_sync()
