"""Pick the forge the settings ask for."""

from __future__ import annotations

from core.settings import Settings
from infra.forge.base import Forge
from infra.forge.local import LocalForge


def make_forge(settings: Settings) -> Forge:
    """GitHub when ``ORCH_GITHUB_TOKEN`` and ``ORCH_GITHUB_ORG`` are set, else the local forge in the data dir.

    GitHub's rate-limit pauses are stored in ``<data_dir>/github-pause.json``, shared by every process.
    """
    if settings.github_token and settings.github_org:
        from infra.forge.github import GitHubForge

        return GitHubForge(
            token=settings.github_token.get_secret_value(),
            org=settings.github_org,
            base_url=settings.github_base_url,
            retries=settings.github_retries,
            pause_file=settings.data_dir / "github-pause.json",
        )
    return LocalForge(settings.data_dir / "forge")
