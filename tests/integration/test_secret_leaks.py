"""A service that prints its secret and dies, through the whole graph: the person sees ``[secret NAME]``, and the
value reaches no checkpoint, no database row, no kept Ansible artifact and no stream (the CLI prints what the API
streams: the same run events).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from models.tables import Deployment
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, rows, run_turn, stop_service
from tests.integration.test_deploy_private_repo import files_holding

pytestmark = pytest.mark.slow

VALUE = "leaky-VALUE-4d2e9b"
LEAK = '    print("starting with token " + os.environ["API_TOKEN"], flush=True)\n    raise SystemExit(3)\n'


def leaky_scenario(folder: Path) -> Path:
    """hello-api, but its design declares API_TOKEN and its service prints it at start, then exits."""
    raw = json.loads((REPO_ROOT / "core" / "scenarios" / "hello-api.json").read_text())
    raw["name"] = "leaky"
    for exchange in raw["exchanges"]:
        for call in exchange["reply"].get("tool_calls", []):
            args = call["arguments"]
            if exchange["role"] == "architect" and call["name"] == "finish" and "acceptance_criteria" in args:
                args["secrets"] = ["API_TOKEN"]
            if call["name"] == "write_file" and args["path"] == "app.py":
                assert args["content"].endswith('if __name__ == "__main__":\n    main()\n')
                args["content"] = args["content"].removesuffix("    main()\n") + LEAK
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "leaky.json").write_text(json.dumps(raw))
    return folder


async def test_a_printed_secret_is_redacted_everywhere_it_could_be_kept(settings: Settings, tmp_path: Path) -> None:
    leaky = settings.model_copy(
        update={"replay_dir": leaky_scenario(tmp_path / "scenarios"), "model": "replay/leaky", "health_timeout_s": 3}
    )
    events = await run_turn(leaky, REQUEST, "t-leak")
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload is not None and ask.payload["missing_secrets"] == ["API_TOKEN"]
    stored = cli(leaky, "secret-set", "hello-api", "API_TOKEN", stdin=VALUE)
    assert stored.returncode == 0, stored.stderr
    try:
        done = cli(leaky, "resume", "t-leak", "--approve")
        assert done.returncode == 0, done.stderr
        assert "The deploy of hello-api failed" in done.stdout
        assert VALUE not in done.stdout + done.stderr
        [deployment] = await rows(leaky, Deployment)
        assert deployment.status == "failed" and "starting with token [secret API_TOKEN]" in deployment.summary
        assert files_holding(leaky.data_dir, [VALUE.encode()]) == [], "not the checkpoints, the database or artifacts"
    finally:
        await stop_service(leaky)
