"""Helpers for integration tests: run the real CLI in another process, read the DB, stop deployed services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlmodel import select

from core.db import Database
from core.settings import Settings
from runtime.threads import OrchestratorRuntime, RunEvent
from services import deploys
from services.identities import cli_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUEST = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process the same settings."""
    env = {
        **os.environ,
        "ORCH_DATA_DIR": str(settings.data_dir),
        "ORCH_MODEL": settings.model,
        "ORCH_PORT_RANGE_START": str(settings.port_range_start),
        "ORCH_PORT_RANGE_END": str(settings.port_range_end),
        "ORCH_REGISTER_LOCALHOST": str(settings.register_localhost).lower(),
        "ORCH_RELEASE_ROOT": str(settings.release_root),
        "ORCH_BUDGET_TOKENS": str(settings.budget_tokens),
        "ORCH_BUDGET_COST_USD": str(settings.budget_cost_usd),
        "ORCH_BUDGET_CALLS": str(settings.budget_calls),
        "ORCH_BUDGET_SECONDS": str(settings.budget_seconds),
    }
    if settings.contract_path:
        env["ORCH_CONTRACT_PATH"] = str(settings.contract_path)
    if settings.contract_mode:
        env["ORCH_CONTRACT_MODE"] = settings.contract_mode
    if settings.replay_dir:
        env["ORCH_REPLAY_DIR"] = str(settings.replay_dir)
    if settings.api_base:
        env["ORCH_API_BASE"] = settings.api_base
    if settings.api_key:
        env["ORCH_API_KEY"] = settings.api_key.get_secret_value()
    if settings.ssh_key_path:
        env["ORCH_SSH_KEY_PATH"] = str(settings.ssh_key_path)
    if settings.ssh_known_hosts:
        env["ORCH_SSH_KNOWN_HOSTS"] = str(settings.ssh_known_hosts)
    return env


def cli(
    settings: Settings, *args: str, timeout: float = 240, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``orchestrator *args`` in a new process (``stdin`` fed to it) and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def run_turn(settings: Settings, text: str, thread_id: str) -> list[RunEvent]:
    """One PO turn in this process; returns every event."""
    async with OrchestratorRuntime(settings) as rt:
        return [ev async for ev in rt.start_turn(text, thread_id, actor=cli_identity())]


async def rows(settings: Settings, table: type) -> list[Any]:
    """All rows of a table."""
    db = Database(settings.db_url)
    try:
        async with db.session() as s:
            return list((await s.exec(select(table))).all())
    finally:
        await db.dispose()


async def stop_service(settings: Settings, project: str = "hello-api") -> None:
    """Stop a service deployed to localhost by the tests (idempotent)."""
    await deploys.stop_service(settings, project=project, server=deploys.local_server())


def scenario_variant(tmp: Path, name: str, extra: list[dict[str, Any]] | None = None, test_prelude: str = "") -> Path:
    """Copy the built-in hello-api scenario to ``tmp/<name>.json`` with extra exchanges and a test-file prelude."""
    raw = json.loads((REPO_ROOT / "core" / "scenarios" / "hello-api.json").read_text())
    raw["name"] = name
    if test_prelude:
        for _, args in written_files(raw):
            if args["path"].endswith("test_app.py"):
                args["content"] = test_prelude + args["content"]
    raw["exchanges"] += extra or []
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{name}.json").write_text(json.dumps(raw))
    return tmp


def written_files(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(exchange id, write_file arguments)`` of every file a recorded answer writes (arguments are live dicts)."""
    return [
        (ex["id"], call["arguments"])
        for ex in raw["exchanges"]
        for call in ex["reply"].get("tool_calls", [])
        if call["name"] == "write_file"
    ]


def hello_file(exchange_id: str, path: str) -> str:
    """The content a built-in hello-api exchange writes to ``path``."""
    raw = json.loads((REPO_ROOT / "core" / "scenarios" / "hello-api.json").read_text())
    return next(a["content"] for ex, a in written_files(raw) if ex == exchange_id and a["path"] == path)


def finish_reply(artifact: dict[str, Any], *writes: tuple[str, str]) -> dict[str, Any]:
    """A recorded answer that writes ``(path, content)`` files, then hands in ``artifact``."""
    calls = [{"name": "write_file", "arguments": {"path": p, "content": c}} for p, c in writes]
    return {"tool_calls": [*calls, {"name": "finish", "arguments": artifact}]}


VERSION_TESTS = """import json
import threading
import urllib.request
from http.server import ThreadingHTTPServer

import app


def test_version_route():
    server = ThreadingHTTPServer(("127.0.0.1", 0), app.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/version", timeout=5) as resp:
            assert json.load(resp) == {"version": app.VERSION}
    finally:
        server.shutdown()
"""


def version_change(marker: str, *, who: str = "") -> list[dict[str, Any]]:
    """Recorded PLAN, TDD, IMPL and REVIEW answers adding ``GET /version`` to hello-api, for requests that carry
    ``marker`` (the person's change or guidance, which every phase's prompt repeats). ``who``: an id suffix."""
    app = hello_file("developer-review-fix", "app.py")
    with_version = app.replace(
        '        elif url.path == "/hello":',
        '        elif url.path == "/version":\n            self._send(200, {"version": VERSION})\n'
        '        elif url.path == "/hello":',
    )
    assert with_version != app
    t = "tests/test_app.py"
    plan = {
        "summary": "hello-api with a /version route, as asked",
        "acceptance_criteria": [
            {"id": "AC1", "text": "GET /health answers 200 with the health document"},
            {"id": "AC2", "text": "GET /hello?name=X answers the greeting"},
            {"id": "AC3", "text": "Any other path answers 404"},
            {"id": "AC4", "text": 'GET /version answers {"version": VERSION}'},
        ],
        "files": [{"path": "app.py", "purpose": "the service"}, {"path": "tests/test_version.py", "purpose": "AC4"}],
        "entrypoint": "app.py",
        "health_path": "/health",
    }
    covers = {
        "AC1": [f"{t}::test_health_document"],
        "AC2": [f"{t}::test_greeting"],
        "AC3": [f"{t}::test_unknown_path_is_404"],
        "AC4": ["tests/test_version.py::test_version_route"],
    }
    approve = {"verdict": "approve", "blocking_issues": []}
    return [
        {
            "id": f"architect-version{who}",
            "role": "architect",
            "when": {"contains": ["Phase PLAN", marker]},
            "reply": finish_reply(plan),
        },
        {
            "id": f"tester-version{who}",
            "role": "tester",
            "when": {"contains": ["Phase TDD", marker]},
            "reply": finish_reply(
                {"covers": covers, "message": "a test for /version"}, ("tests/test_version.py", VERSION_TESTS)
            ),
        },
        {
            "id": f"developer-version{who}",
            "role": "developer",
            "when": {"contains": ["Phase IMPL", marker]},
            "reply": finish_reply({"message": "GET /version"}, ("app.py", with_version)),
        },
        {
            "id": f"architect-review-version{who}",
            "role": "architect",
            "when": {"contains": ["Phase REVIEW", marker]},
            "reply": finish_reply(approve),
        },
    ]


def contract_variant(tmp: Path, mode: str | None = None, **max_rounds: int) -> Path:
    """A copy of the built-in contract with other round limits (``IMPL=1``) and mode; returns its path."""
    import yaml

    from core.contract import DEFAULT_CONTRACT

    raw = yaml.safe_load(DEFAULT_CONTRACT.read_text())
    for phase, limit in max_rounds.items():
        raw["phases"][phase]["max_rounds"] = limit
    if mode:
        raw["mode"] = mode
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "contract.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


VERSION_UPDATE = "Please add a /version endpoint to hello-api."
"""A person's update of a live hello-api, which :func:`version_update_exchanges` answer."""


def version_update_exchanges() -> list[dict[str, Any]]:
    """The PO's recorded classification of :data:`VERSION_UPDATE` as an update, then the teams' /version change."""
    change = "add a /version endpoint that answers the version"
    return [
        {
            "id": "po-update",
            "role": "po",
            "when": {"contains": ["/version", "hello-api"], "absent": ["HTTP service"]},
            "reply": {
                "content": "An update of hello-api: the teams will add /version.",
                "tool_calls": [{"name": "update_project_intent", "arguments": {"name": "hello-api", "change": change}}],
            },
        },
        *version_change(change),
    ]
