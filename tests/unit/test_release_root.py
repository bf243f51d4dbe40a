"""A release root the service's user cannot reach is refused before a deploy starts, with what to do."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from services.deploys import local_release_problem


def test_a_release_root_behind_a_closed_folder_is_refused(settings: Settings, tmp_path: Path) -> None:
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    behind = settings.model_copy(update={"release_root": closed / "releases"})
    problem = local_release_problem(behind)
    assert problem is not None and str(closed) in problem and "ORCH_RELEASE_ROOT" in problem
    assert local_release_problem(settings) is None, "the tests' own root is open to others"
    assert local_release_problem(behind.model_copy(update={"service_user": ""})) is None, "no user to switch to"
