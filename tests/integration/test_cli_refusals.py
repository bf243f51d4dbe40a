"""Bad input to the CLI, each in a real process: a clear error, exit 2 (1 for a model failure), nothing changed."""

from __future__ import annotations

import json

from pydantic import SecretStr

from core.settings import Settings
from models.tables import ThreadRecord
from tests.integration.helpers import cli, rows


async def test_unknown_thread_and_malformed_answers_change_nothing(settings: Settings) -> None:
    settings.ensure_data_dir()
    assert cli(settings, "projects").returncode == 0  # an empty, migrated data dir
    for args, why in [
        (["resume", "t-nope", "--approve"], "unknown thread 't-nope'"),
        (["resume", "t-nope"], "unknown thread 't-nope'"),
        (["resume", "t-nope", "--approve", "--answer", "x"], "give one of --approve, --reject REASON, --answer TEXT"),
        (["chat", "-m", "   ", "--thread", "t-blank"], "the message is empty"),
    ]:
        done = cli(settings, *args)
        assert done.returncode == 2 and why in done.stderr, (args, done.stdout, done.stderr)
    assert await rows(settings, ThreadRecord) == []
    listed = cli(settings, "threads", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_mistyped_data_dir_is_refused_not_created(settings: Settings) -> None:
    typo = settings.model_copy(update={"data_dir": settings.data_dir.parent / "no-such-dir"})
    for args in (["resume", "t-1", "--approve"], ["threads"], ["projects", "--json"], ["servers"]):
        done = cli(typo, *args)
        assert done.returncode == 2 and "no data dir at" in done.stderr, (args, done.stderr)
    assert not typo.data_dir.exists()


def test_an_unreachable_model_is_a_model_error_and_the_thread_waits_for_a_resume(settings: Settings) -> None:
    offline = settings.model_copy(
        update={"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9", "api_key": SecretStr("k")}
    )
    done = cli(offline, "chat", "-m", "status of hello-api?", "--thread", "t-offline", timeout=120)
    assert done.returncode == 1 and "model error" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "orchestrator resume t-offline" in " ".join(done.stderr.split())  # the thread's own id, not a placeholder
    listed = json.loads(cli(offline, "threads", "--json").stdout)
    assert [(t["id"], t["stopped_mid_run"]) for t in listed] == [("t-offline", True)]
