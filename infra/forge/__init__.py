"""Repository forges: :class:`~infra.forge.local.LocalForge` (default) and GitHub."""

from infra.forge.base import Forge, ForgeError, ForgeUnavailable, RepoInfo, ensure_repo

__all__ = ["Forge", "ForgeError", "ForgeUnavailable", "RepoInfo", "ensure_repo"]
