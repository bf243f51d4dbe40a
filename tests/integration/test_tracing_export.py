"""Traces leave the process: OpenTelemetry spans over OTLP/HTTP and LangSmith runs, from real CLI runs.

Each CLI command runs in a new process through a small wrapper that, once the command is over, prints which
OpenTelemetry SDK modules it imported; the receivers are real HTTP servers on 127.0.0.1 (tests/integration/
trace_receivers.py). The run is the recorded hello-api job: a chat to the deploy approval, a project secret, the
approval from another process, the deploy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from core.settings import Settings
from models.tables import LLMCall
from tests.integration.helpers import REPO_ROOT, REQUEST, cli_env, rows, stop_service
from tests.integration.trace_receivers import LangSmithReceiver, OtlpReceiver, Span

pytestmark = pytest.mark.slow

WRAPPER = """\
import json, sys
from cli.main import app
code = 0
try:
    app()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
ours = ("core.otel_export", "opentelemetry.exporter", "opentelemetry.sdk.trace.export")
names = sorted(m for m in sys.modules if m.startswith(ours))
print("OTEL-MODULES " + json.dumps(names), flush=True)
sys.exit(code)
"""
TRACE_VARS = ("OTEL_", "LANGSMITH_", "LANGCHAIN_")
# What exporting spans loads. langsmith itself imports ``opentelemetry.sdk.trace`` whenever the SDK is installed (an
# optional import at the top of langsmith.client, ~10 ms), so that module says nothing about our export.


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[subprocess.CompletedProcess[str], list]:
    """``orchestrator *args`` in a new process with ``env``; returns the result and the OTel modules it imported."""
    argv = [sys.executable, "-c", WRAPPER, *args]
    done = subprocess.run(
        argv, env=env, cwd=REPO_ROOT, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    marks = [line for line in done.stdout.splitlines() if line.startswith("OTEL-MODULES ")]
    assert marks, done.stdout + done.stderr
    return done, json.loads(marks[-1].removeprefix("OTEL-MODULES "))


def base_env(settings: Settings) -> dict[str, str]:
    """The CLI's environment for ``settings``, without any tracing variable of the test's own environment."""
    return {k: v for k, v in cli_env(settings).items() if not k.startswith(TRACE_VARS)}


def streamed(stdout: str) -> list[tuple[str, ...]]:
    """The nodes a run showed starting (``▶ engineering › run_phase``), as paths with the node last."""
    marks = [line.strip().removeprefix("▶ ") for line in stdout.splitlines() if line.strip().startswith("▶ ")]
    return [tuple(mark.split(" › ")) for mark in marks]


def node_path(span: Span) -> tuple[str, ...]:
    return tuple(span.attrs["orchestrator.node.path"].split("/"))


def check_run(spans: list[Span], run: Span, stdout: str) -> list[Span]:
    """The run's node spans equal the nodes it streamed, each under its parent; return its model-call spans."""
    mine = [s for s in spans if s.trace_id == run.trace_id and s is not run]
    nodes = [s for s in mine if not s.name.startswith("chat ")]
    assert Counter(node_path(s) for s in nodes) == Counter(streamed(stdout))
    by_id = {s.span_id: s for s in mine}
    for s in nodes:
        path = node_path(s)
        assert s.name == path[-1] and s.attrs["orchestrator.thread_id"] == run.attrs["orchestrator.thread_id"]
        if len(path) == 1:
            assert s.parent == run.span_id, f"{s.name} is not a child of its run"
        else:
            parent = by_id[s.parent]
            assert node_path(parent) == path[:-1], f"{path} is not under its subgraph's node"
    calls = [s for s in mine if s.name.startswith("chat ")]
    for c in calls:
        assert c.parent in by_id and not by_id[c.parent].name.startswith("chat "), "a model call outside its node"
    return calls


async def test_a_run_exports_spans_over_otlp_and_runs_to_langsmith(settings: Settings) -> None:
    needle = f"tok-{uuid.uuid4().hex}"
    thread = "t-traced"
    with OtlpReceiver() as otlp, LangSmithReceiver() as smith:
        env = {
            **base_env(settings),
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "LANGSMITH_TRACING": "true",
            "LANGSMITH_ENDPOINT": smith.url,
            "LANGSMITH_API_KEY": "test",
            "LANGSMITH_PROJECT": "orchestrator-tests",
        }
        try:
            chat, chat_modules = run_cli(env, "chat", "--thread", thread, "-m", REQUEST)
            assert chat.returncode == 0, chat.stderr
            assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in chat_modules
            assert any(len(path) > 1 for path in streamed(chat.stdout))  # nodes of subgraphs ran
            stored, _ = run_cli(env, "secret-set", "hello-api", "API_TOKEN", stdin=needle)
            assert stored.returncode == 0, stored.stderr
            done, _ = run_cli(env, "resume", thread, "--approve")
            assert done.returncode == 0, done.stderr
            assert "hello-api is live" in done.stdout
        finally:
            await stop_service(settings)

    # OpenTelemetry: a run span per command that ran the graph, node spans as streamed, model calls under nodes.
    spans = otlp.spans
    runs = {s.attrs["orchestrator.run.kind"]: s for s in spans if s.name == "run"}
    assert set(runs) == {"message", "resume"}
    for kind, outcome in (("message", "interrupted"), ("resume", "done")):
        run = runs[kind]
        assert run.parent == "" and run.attrs["orchestrator.thread_id"] == thread
        assert run.attrs["orchestrator.outcome"] == outcome and run.attrs["orchestrator.model"] == settings.model
        assert run.attrs["orchestrator.actor"].startswith("cli:")
        assert run.resource["service.name"] == "orchestrator"
    by_span = {s.span_id: s for s in spans}
    calls = check_run(spans, runs["message"], chat.stdout) + check_run(spans, runs["resume"], done.stdout)
    assert len(calls) == len(await rows(settings, LLMCall)) > 0  # every model call, each under its node
    assert any(len(node_path(by_span[c.parent])) > 1 for c in calls)  # calls made in a subgraph's node
    for c in calls:
        assert c.attrs["gen_ai.system"] == "replay" and c.attrs["gen_ai.request.model"] == settings.model
        assert c.attrs["gen_ai.usage.input_tokens"] > 0 and c.attrs["gen_ai.usage.output_tokens"] > 0
        assert c.attrs["orchestrator.cost_usd"] == 0.0
    values = [str(v) for s in spans for v in (*s.attrs.values(), *s.resource.values())]
    assert not [v for v in values if needle in v] and not [b for b in otlp.raw if needle.encode() in b]

    # LangSmith: LangChain's own tracer sent a run per node, and the secret went nowhere.
    names = {p.get("name") for p in smith.posts}
    assert {path[-1] for path in streamed(chat.stdout) + streamed(done.stdout)} <= names, names
    assert "product_owner" in names  # the graph's own run
    assert {p.get("session_name") for p in smith.posts} == {"orchestrator-tests"}
    assert not [b for b in smith.raw if needle.encode() in b]


async def test_without_the_variables_nothing_is_imported_or_sent(settings: Settings) -> None:
    with OtlpReceiver() as otlp, LangSmithReceiver() as smith:
        env = {
            **base_env(settings),
            "OTEL_SERVICE_NAME": "not-enough-alone",  # a service name without an endpoint exports nothing
            "LANGSMITH_ENDPOINT": smith.url,  # an endpoint and a key without LANGSMITH_TRACING=true send nothing
            "LANGSMITH_API_KEY": "test",
        }
        assert not any(k.startswith("OTEL_EXPORTER") for k in env)
        chat, modules = run_cli(env, "chat", "--thread", "t-quiet", "-m", REQUEST)
    assert chat.returncode == 0, chat.stderr
    assert streamed(chat.stdout)  # the graph ran
    assert modules == []
    assert otlp.requests == [] and smith.requests == []


def test_the_runtime_imports_no_sdk_on_its_own() -> None:
    """Importing the CLI and the runtime loads neither our span export nor the OTLP exporter (start-up stays cheap)."""
    code = (
        "import sys, cli.main, runtime.threads, core.llm, core.tracing\n"
        "print(sorted(m for m in sys.modules if m.startswith(('core.otel_export', 'opentelemetry.exporter', "
        "'opentelemetry.sdk.trace.export'))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(TRACE_VARS)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
