"""The CLI as a new user meets it, each case in a real ``orchestrator`` process: text with square brackets prints
as typed, Ctrl-C at a prompt ends the process at once, an existing data dir keeps its permissions, a read-only data
dir can still be listed, bad input is one clear line, and a chat without a reachable model says so and stays open.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from pydantic import SecretStr

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Project, Secret, ThreadRecord, ToolCall
from runtime.listing import Pending, write_index
from tests.integration.helpers import REPO_ROOT, cli_env, rows

WIDE = {"COLUMNS": "250"}
"""Rich wraps a table to the terminal's width (80 in a pipe): wide enough that no cell is cut in two."""


def run(settings: Settings, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    """``orchestrator *args`` in a new process with a wide terminal; text out, ``stdin`` given as bytes."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**cli_env(settings), **WIDE, **(env or {})},
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        timeout=240,
        check=False,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def spawn(settings: Settings, *args: str) -> pexpect.spawn:
    """``orchestrator *args`` on a pseudo-terminal of its own (an interactive session), 200 columns wide."""
    return pexpect.spawn(
        sys.executable,
        ["-m", "cli.main", *args],
        cwd=str(REPO_ROOT),
        env={**cli_env(settings), **WIDE},
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
    )


def brackets_scenario(folder: Path, *, answer: bool) -> Path:
    """``folder/brackets.json``: a recording whose PO answers ``health`` questions with markup-looking text (or,
    ``answer=False``, answers nothing: a replay mismatch, which the CLI reports as a model error); returns folder."""
    exchanges = [
        {
            "id": "po-brackets",
            "role": "po",
            "when": {"contains": ["health"]},
            "reply": {"content": "Noted: [/x] and [bold]y[/bold] stay as typed, even a trailing \\"},
        }
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "brackets.json").write_text(json.dumps({"name": "brackets", "exchanges": exchanges if answer else []}))
    return folder


def on(settings: Settings, recordings: Path) -> Settings:
    """``settings`` on the ``brackets`` recording kept in ``recordings``."""
    return settings.model_copy(update={"model": "replay/brackets", "replay_dir": recordings})


async def add_project(settings: Settings, name: str = "p-1") -> int:
    """A project row in the data dir's database (migrated first); returns its id."""
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    try:
        await db.migrate()
        async with db.session() as s:
            project = Project(name=name, status=ProjectStatus.active)
            s.add(project)
            await s.flush()
            assert project.id is not None
            return project.id
    finally:
        await db.dispose()


async def test_text_with_square_brackets_prints_as_typed(settings: Settings, tmp_path: Path) -> None:
    silent = on(settings, brackets_scenario(tmp_path / "rec", answer=False))
    asked = "is [/health] up? and [bold]x[/bold]"
    failed = run(silent, "chat", "-m", asked, "--thread", "t-br")  # the recording has no answer: a model error
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert asked in failed.stderr and "orchestrator resume t-br" in failed.stderr  # its words, quoted as typed

    answering = on(settings, brackets_scenario(tmp_path / "rec", answer=True))
    resumed = run(answering, "resume", "t-br")  # the stopped run finishes: the reply is rendered by `resume`
    assert resumed.returncode == 0, resumed.stderr
    assert "Noted: [/x] and [bold]y[/bold] stay as typed, even a trailing \\" in resumed.stdout
    chat = run(answering, "chat", "-m", "[bold]health[/bold]?", "--thread", "t-[bold]2")
    assert chat.returncode == 0, chat.stderr
    assert "thread t-[bold]2" in chat.stdout and "Noted: [/x] and [bold]y[/bold]" in chat.stdout

    db = Database(settings.db_url)
    try:
        await write_index(
            db,
            "t-br",
            pending=[Pending(id="i-1", payload={"kind": "x", "question": "go [/x]?"})],
            stopped_mid_run=False,
        )
    finally:
        await db.dispose()
    listed = run(settings, "threads")
    assert listed.returncode == 0, listed.stderr
    for shown in (asked, "[bold]health[/bold]?", "t-[bold]2", "x: go [/x]?"):
        assert shown in listed.stdout, (shown, listed.stdout)
    assert {t["title"] for t in json.loads(run(settings, "threads", "--json").stdout)} == {
        asked,
        "[bold]health[/bold]?",
    }

    unknown = run(settings, "resume", "[bold]hi")
    assert unknown.returncode == 2 and "unknown thread '[bold]hi'" in unknown.stderr, unknown.stderr


async def test_an_audit_reason_with_brackets_prints_as_typed(settings: Settings) -> None:
    project_id = await add_project(settings, "p-audit")
    db = Database(settings.db_url)
    try:
        async with db.session() as s:
            s.add(
                ToolCall(
                    project_id=project_id,
                    role="developer",
                    phase="IMPL",
                    tool="write_file",
                    args={"path": "[/etc]/x"},
                    outcome="refused",
                    reason="[/x] is outside [bold]the workspace[/bold]",
                )
            )
    finally:
        await db.dispose()
    done = run(settings, "audit", "p-audit")
    assert done.returncode == 0, done.stderr
    assert "[/x] is outside [bold]the workspace[/bold]" in done.stdout and "[/etc]/x" in done.stdout


def test_ctrl_c_at_the_chat_prompt_exits_at_once(settings: Settings, tmp_path: Path) -> None:
    child = spawn(on(settings, brackets_scenario(tmp_path / "rec", answer=True)), "chat", "--thread", "t-int")
    child.expect("you>")
    child.sendline("health?")  # one turn first: the prompt after a run must answer Ctrl-C as well
    child.expect("Noted:")
    child.expect("you>")
    child.sendintr()  # once
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    said = child.before or ""
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, said)
    assert "interrupted" in said and "orchestrator chat --thread t-int" in said and "Traceback" not in said, said


async def test_ctrl_c_at_a_hidden_secret_prompt_exits_at_once(settings: Settings) -> None:
    await add_project(settings)
    child = spawn(settings, "secret-set", "p-1", "API_TOKEN")
    child.expect("hidden")
    child.sendintr()
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    assert child.exitstatus == 130 and "interrupted" in (child.before or ""), child.before
    assert await rows(settings, Secret) == []


def test_an_existing_data_dir_keeps_its_permissions_and_a_new_one_is_private(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    fresh = tmp_path / "new" / "data"
    for data_dir in (shared, fresh):
        done = run(Settings(data_dir=data_dir), "add-server", "web-1", "--address", "10.0.0.7")
        assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


async def test_a_data_dir_that_is_a_file_and_a_secret_that_is_not_text_are_one_line_errors(
    settings: Settings, tmp_path: Path
) -> None:
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    for args in (["threads"], ["servers"], ["chat", "-m", "hi"], ["add-server", "a", "--address", "10.0.0.1"]):
        done = run(settings.model_copy(update={"data_dir": afile}), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert (
            done.stderr.strip()
            == f"error: data dir {afile} is a file, not a directory; check --data-dir or ORCH_DATA_DIR"
        )

    await add_project(settings)
    bad = run(settings, "secret-set", "p-1", "API_TOKEN", stdin=b"ok\xff\xfe\n")
    assert bad.returncode == 2, bad.stderr
    assert (
        bad.stderr.strip()
        == "error: the value of API_TOKEN is not UTF-8 text (byte 0xff at offset 2); nothing was stored"
    )
    assert await rows(settings, Secret) == []
    good = run(settings, "secret-set", "p-1", "API_TOKEN", stdin="näive ✓\n".encode())
    assert good.returncode == 0 and len(await rows(settings, Secret)) == 1, good.stderr


@pytest.fixture()
def open_tmp() -> Iterator[Path]:
    """A folder others may enter (pytest's tmp_path is 0700 root's), removed afterwards even when made read-only."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-test-ro-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def as_reader(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``orchestrator *args`` as a user who may not write the data dir.

    Run as it is by a user that is not root (the permissions then hold for it). Root ignores permissions, so as root
    it runs as ``nobody``, on an interpreter ``nobody`` can run: root's own may sit in its 0700 home, and then
    Debian's /usr/bin/python3 (same minor version) runs the CLI with this virtualenv's packages only (``-S``: none of
    the system's).
    """
    env = {**cli_env(settings), **WIDE}
    if os.geteuid() != 0:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert probe.stdout.strip() == str(sys.version_info[:2]), f"no Python {sys.version_info[:2]} for nobody: {probe}"
    launch = (
        "import runpy, site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'orchestrator'; "
        "runpy.run_module('cli.main', run_name='__main__', alter_sys=True)"
    )
    drop = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    return subprocess.run(
        [*drop, python, "-S", "-c", launch, sysconfig.get_paths()["purelib"], *args],
        env={**env, "HOME": str(settings.data_dir.parent)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_read_only_data_dir_can_still_be_listed(settings: Settings, open_tmp: Path) -> None:
    ro = on(settings, brackets_scenario(open_tmp / "rec", answer=True)).model_copy(
        update={"data_dir": open_tmp / "data"}
    )
    assert run(ro, "chat", "-m", "health?", "--thread", "t-ro").returncode == 0
    await add_project(ro, "p-ro")
    subprocess.run(["chmod", "-R", "a+rX,a-w", str(open_tmp)], check=True)

    threads = as_reader(ro, "threads", "--json")
    assert threads.returncode == 0 and threads.stderr == "", threads.stderr
    assert [t["id"] for t in json.loads(threads.stdout)] == ["t-ro"]
    for args, shown in ((["threads"], "t-ro"), (["projects"], "p-ro"), (["servers"], "localhost")):
        done = as_reader(ro, *args)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
        assert shown in done.stdout, (args, done.stdout)
    writes = as_reader(ro, "add-server", "web-2", "--address", "10.0.0.8")  # a command that writes: one line
    assert writes.returncode == 2 and "Traceback" not in writes.stderr, writes.stderr
    assert len(writes.stderr.strip().splitlines()) == 1 and "read-only" in writes.stderr, writes.stderr
    assert [r.id for r in await rows(ro, ThreadRecord)] == ["t-ro"]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_chat_without_a_reachable_model_says_so_at_once_and_stays_open(settings: Settings) -> None:
    offline = settings.model_copy(
        update={
            "model": "openai/gpt-4o-mini",
            "api_base": f"http://127.0.0.1:{closed_port()}",
            "api_key": SecretStr("k"),
        }
    )
    child = spawn(offline, "chat", "--thread", "t-nomodel")
    child.expect("you>")
    started = time.monotonic()
    child.sendline("hello?")
    child.expect("no model answers:")
    child.expect("you>")
    took = time.monotonic() - started
    said = " ".join((child.before or "").split())
    assert took < 10, f"{took:.1f} s before the person heard why"
    assert "openai/gpt-4o-mini" in said and "ORCH_MODEL" in said and "ORCH_API_KEY" in said, said
    child.sendline("still there?")  # the session stayed open: a second line is read and answered the same way
    child.expect("no model answers:")
    child.expect("you>")
    child.sendline("/quit")
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in (child.before or "")


def test_a_model_error_mid_chat_keeps_the_session_and_retry_asks_again(settings: Settings, tmp_path: Path) -> None:
    silent = on(settings, brackets_scenario(tmp_path / "rec", answer=False))
    child = spawn(silent, "chat", "--thread", "t-retry")
    child.expect("you>")
    child.sendline("health?")
    child.expect("model error:")
    child.expect("/retry asks again")
    child.expect("you>")
    brackets_scenario(tmp_path / "rec", answer=True)  # the model answers now
    child.sendline("/retry")
    child.expect("Noted:")
    child.expect("you>")
    child.sendeof()  # Ctrl-D leaves
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in (child.before or ""), (child.exitstatus, child.before)
