"""Repository forges: :class:`~core.forge.local.LocalForge` (default) and GitHub."""

from core.forge.base import Forge, ForgeError, ForgeUnavailable, RepoInfo, ensure_repo

__all__ = ["Forge", "ForgeError", "ForgeUnavailable", "RepoInfo", "ensure_repo"]
