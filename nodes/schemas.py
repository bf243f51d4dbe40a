"""Structured answers the Engineering roles must give (validated; invalid ones are re-asked)."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, Field, field_validator

from services.secrets import RESERVED_NAMES, SECRET_NAME_RE


class FilePlan(BaseModel):
    """One file the Architect wants."""

    path: str
    purpose: str


class Criterion(BaseModel):
    """One acceptance criterion of a plan: observable, testable by a unit test."""

    id: str = Field(pattern=r"^AC[0-9]+$")
    text: str = Field(min_length=5)


class Design(BaseModel):
    """The Architect's plan (the PLAN phase's artifact)."""

    summary: str
    acceptance_criteria: list[Criterion] = Field(min_length=1)
    files: list[FilePlan] = Field(min_length=1)
    entrypoint: str = "app.py"
    health_path: str = "/health"
    dependencies: list[str] = Field(
        default_factory=list,
        description="Third-party packages the service or its tests import, as requirement lines (e.g. "
        "'flask>=3,<4'); they become requirements.txt. Empty for the standard library only. pytest is provided.",
    )
    test_command: str | None = Field(
        default=None,
        description="How the tests run, e.g. 'python -m pytest -q' (python and pytest are the project's own); "
        "empty for the default",
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Names of environment variables holding secrets the service reads (e.g. DATABASE_URL); never "
        "values: a person sets those",
    )

    @field_validator("secrets")
    @classmethod
    def _env_var_names(cls, value: list[str]) -> list[str]:
        bad = [n for n in value if not SECRET_NAME_RE.fullmatch(n)]
        if bad:
            raise ValueError(f"secrets must be environment variable names like DATABASE_URL, not {bad}")
        return sorted(set(value) - RESERVED_NAMES)  # PORT and the like come from the deploy itself

    @field_validator("dependencies")
    @classmethod
    def _plain_requirements(cls, value: list[str]) -> list[str]:
        out = []
        for line in value:
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                raise ValueError(f"dependency {line!r} is not a requirement like 'flask>=3': {exc}") from None
            if req.url:
                raise ValueError(f"dependency {line!r} names a URL: use a package name and version specifiers")
            out.append(str(req))
        return out

    @field_validator("test_command")
    @classmethod
    def _runs_python_or_pytest(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"test_command {value!r} is not a command line: {exc}") from None
        if argv[0] not in ("python", "python3", "pytest"):
            raise ValueError("test_command must start with python, python3 or pytest (the project's own)")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _relative_python_file(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or path.suffix != ".py":
            raise ValueError("entrypoint must be a relative path to a .py file inside the repository")
        return value

    @field_validator("health_path")
    @classmethod
    def _absolute_url_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError("health_path must be a URL path starting with '/'")
        return value
