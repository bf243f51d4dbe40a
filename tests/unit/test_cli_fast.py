"""The CLI's --help path must not import the heavy stack (litellm costs 3-4 s, LangGraph and SQLAlchemy more)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

HEAVY = ("litellm", "langgraph", "sqlalchemy", "ansible_runner", "github", "fastapi")


def test_importing_the_cli_loads_none_of_the_heavy_modules() -> None:
    code = f"import sys, cli.main; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    for command in ("chat", "threads", "resume", "projects", "servers", "demo", "api"):
        assert command in out.stdout


def test_a_bad_setting_is_a_configuration_error_not_a_crash(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ORCH_PORT_RANGE_START": "18300", "ORCH_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "projects"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2
    assert "configuration error" in out.stderr and "Traceback" not in out.stderr


def test_the_answer_hint_fits_each_kind_of_question() -> None:
    from cli.main import answer_hint

    deploy = answer_hint("t-1", {"kind": "deploy_approval"})
    assert deploy.endswith("resume t-1 --approve | --reject REASON | --answer FEEDBACK")
    guidance = answer_hint("t-1", {"kind": "engineering_guidance"})
    assert "--answer" in guidance and "--approve" not in guidance
    assert "--reject" not in answer_hint("t-1", {"kind": "waiting_for_resources"})


LISTING_PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['orchestrator', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('cli.main', run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\n"
    "print('LOADED', sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def loaded_by(tmp_path, *args: str, heavy: tuple[str, ...]) -> list[str]:
    """The modules of ``heavy`` that ``orchestrator ARGS`` imported (run in a new process on ``tmp_path``)."""
    env = {"PATH": "/usr/bin:/bin", "ORCH_DATA_DIR": str(tmp_path), "ORCH_REGISTER_LOCALHOST": "false"}
    cmd = [sys.executable, "-c", LISTING_PROBE.format(heavy=heavy), *args]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stderr.splitlines() if line.startswith("LOADED "))
    return list(ast.literal_eval(line.removeprefix("LOADED ")))


def test_listings_import_only_what_they_need(tmp_path) -> None:
    graph_stack = ("litellm", "langgraph", "langchain_core", "jsonschema", "fastapi", "github")
    tmp_path.chmod(0o700)
    assert "alembic" in loaded_by(tmp_path, "servers", heavy=("alembic",)), "a new database is migrated"
    for command in ("servers", "threads"):
        assert loaded_by(tmp_path, command, heavy=(*graph_stack, "alembic", "ansible_runner", "asyncssh")) == []
    assert loaded_by(tmp_path, "projects", heavy=(*graph_stack, "alembic")) == []


def test_help_needs_no_event_loop_and_no_rich(tmp_path) -> None:
    """asyncio (~10 ms) and Rich (~15 ms) of a ~75 ms `--help` are imported by the commands that use them."""
    assert loaded_by(tmp_path, "--help", heavy=("asyncio", "rich")) == []


def test_make_bytecode_compiles_every_package_of_the_project() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set nothing else writes it, and each command compiles its modules again."""
    import importlib.util
    import tomllib

    include = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    sources = [REPO_ROOT / p.rstrip("*") / "__init__.py" for p in include["include"]]
    for source in sources:
        Path(importlib.util.cache_from_source(str(source))).unlink(missing_ok=True)
    subprocess.run([str(REPO_ROOT / "scripts" / "compile-bytecode.sh"), sys.executable], check=True, timeout=120)
    assert [s.parent.name for s in sources if not Path(importlib.util.cache_from_source(str(s))).is_file()] == []
