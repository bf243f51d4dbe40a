"""Validation of project names: they end up in paths, git remotes, Ansible vars and URLs."""

from __future__ import annotations

import re

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")


class InvalidProjectName(ValueError):
    """The name is not a safe slug."""


def validate_slug(name: str) -> str:
    """Return ``name`` if it is a safe slug, else raise.

    A safe slug is 3-40 characters of lower-case ASCII letters, digits and single hyphens, starting with a letter
    and not ending with a hyphen (the intersection of what GitHub, git, file systems and Ansible accept unquoted).

    Raises:
        InvalidProjectName: with what was wrong and an example of a valid name.
    """
    if not SLUG_RE.fullmatch(name) or "--" in name:
        raise InvalidProjectName(
            f"project name {name!r} is not a safe slug: use 3-40 lower-case letters, digits and single hyphens, "
            "starting with a letter (e.g. 'hello-api')"
        )
    return name
