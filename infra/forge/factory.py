"""Pick the forge the settings ask for."""

from __future__ import annotations

from core.settings import Settings
from infra.forge.base import Forge
from infra.forge.local import LocalForge


def make_forge(settings: Settings) -> Forge:
    """GitHub when ``ORCH_GITHUB_TOKEN`` and ``ORCH_GITHUB_ORG`` are set, else the local forge in the data dir.

    GitHub's rate-limit pauses are stored in ``<data_dir>/github-pause.json``, shared by every process, and every
    GitHub call goes through GitHub's circuit breaker (``github``, :func:`core.breakers.sync_breakers`), stored in
    the database of ``settings.db_url`` so the CLI, the API and the sync service see one state: while it is open,
    each call raises ``ForgeUnavailable`` at once ("GitHub unavailable since ..., next try at ...").
    """
    if settings.github_token and settings.github_org:
        from core.breakers import sync_breakers
        from infra.forge.github import GitHubForge

        return GitHubForge(
            token=settings.github_token.get_secret_value(),
            org=settings.github_org,
            base_url=settings.github_base_url,
            retries=settings.github_retries,
            pause_file=settings.data_dir / "github-pause.json",
            breakers=sync_breakers(settings),
        )
    return LocalForge(settings.data_dir / "forge")
