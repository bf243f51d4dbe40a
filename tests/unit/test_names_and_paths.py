"""Names and paths that end up on disk, in git and in Ansible: the guards refuse anything unsafe."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.git import run_git
from infra.workspace import PathOutsideWorkspace, listing, safe_path, write_files
from models.names import InvalidProjectName, validate_slug
from nodes.schemas import Criterion, Design, FilePlan


@pytest.mark.parametrize("name", ["hello-api", "a1b", "x" * 40, "api-v2-beta"])
def test_valid_slugs(name: str) -> None:
    assert validate_slug(name) == name


@pytest.mark.parametrize(
    "name", ["", "Hello", "-x", "x-", "a--b", "a/b", "../x", "a b", "x" * 41, "a;rm -rf", "ab", "1ab", "abc\n"]
)
def test_invalid_slugs_say_what_is_valid(name: str) -> None:
    with pytest.raises(InvalidProjectName) as err:
        validate_slug(name)
    message = str(err.value)
    assert repr(name) in message
    assert "3-40 lower-case letters, digits and single hyphens" in message
    assert "hello-api" in message


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git("init", "--quiet", str(repo))
    return repo


@pytest.mark.parametrize(
    "rel",
    [
        "/etc/passwd",
        "../outside.py",
        "pkg/../../x.py",
        ".git/config",
        "pkg/.git/hooks/pre-commit",
        "pkg\\mod.py",
        "",
        ".",
        "./",
    ],
)
def test_safe_path_rejects(root: Path, rel: str) -> None:
    with pytest.raises(PathOutsideWorkspace) as err:
        safe_path(root, rel)
    assert repr(rel) in str(err.value)


def test_safe_path_rejects_symlink_escape(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "evil.py").symlink_to(outside / "evil.py")
    for rel in ("link/x.py", "evil.py"):
        with pytest.raises(PathOutsideWorkspace, match="outside the working copy"):
            safe_path(root, rel)


@pytest.mark.parametrize("rel", ["app.py", "pkg/mod.py", "./app.py", "a/b/c/d.txt"])
def test_safe_path_accepts_inside(root: Path, rel: str) -> None:
    target = safe_path(root, rel)
    assert target.is_relative_to(root.resolve())
    assert target == (root.resolve() / rel).resolve()


def test_write_files_writes_nothing_when_one_path_is_bad(root: Path) -> None:
    files = [("app.py", "print(1)\n"), ("pkg/mod.py", "x = 1\n"), ("../escape.py", "boom"), ("z.py", "z")]
    with pytest.raises(PathOutsideWorkspace, match="escape.py"):
        write_files(root, files)
    assert sorted(p.name for p in root.iterdir()) == [".git"]
    assert not (root.parent / "escape.py").exists()


def test_write_files_writes_good_files(root: Path) -> None:
    assert write_files(root, [("app.py", "A\n"), ("pkg/mod.py", "M\n")]) == ["app.py", "pkg/mod.py"]
    assert (root / "app.py").read_text() == "A\n"
    assert (root / "pkg" / "mod.py").read_text() == "M\n"
    run_git("add", "-A", cwd=root)
    assert listing(root) == ["app.py", "pkg/mod.py"]


def design(**kw: str) -> Design:
    return Design(
        summary="s",
        acceptance_criteria=[Criterion(id="AC1", text="it answers")],
        files=[FilePlan(path="app.py", purpose="p")],
        **kw,
    )


def test_design_defaults_are_valid() -> None:
    d = design()
    assert (d.entrypoint, d.health_path) == ("app.py", "/health")
    assert design(entrypoint="src/main.py", health_path="/healthz").entrypoint == "src/main.py"


@pytest.mark.parametrize("entrypoint", ["/etc/x.py", "../a.py", "app.txt", "pkg/../../a.py", "app"])
def test_design_rejects_bad_entrypoint(entrypoint: str) -> None:
    with pytest.raises(ValidationError, match="entrypoint must be a relative path to a .py file"):
        design(entrypoint=entrypoint)


@pytest.mark.parametrize("health_path", ["health", "/he alth", "http://x/health", ""])
def test_design_rejects_bad_health_path(health_path: str) -> None:
    with pytest.raises(ValidationError, match="health_path must be a URL path"):
        design(health_path=health_path)


def test_design_needs_a_file() -> None:
    with pytest.raises(ValidationError, match="files"):
        Design(summary="s", files=[])


def test_symlink_to_git_dir_is_refused(tmp_path):
    root = tmp_path / "wc"
    (root / ".git").mkdir(parents=True)
    (root / "g").symlink_to(root / ".git")
    with pytest.raises(PathOutsideWorkspace, match=".git"):
        safe_path(root, "g/config")


def test_file_folder_clash_writes_nothing(tmp_path):
    root = tmp_path / "wc"
    root.mkdir()
    with pytest.raises(PathOutsideWorkspace, match="clashes"):
        write_files(root, [("a", "x"), ("a/b", "y")])
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.py", "a/../../x", ".git/hooks/post-commit", ""])
def test_tool_paths_outside_the_repository_are_refused(bad):
    from core.contract import DEFAULT_CONTRACT, load_contract

    impl = load_contract(DEFAULT_CONTRACT).phase("IMPL")
    reason = impl.check_tool("write_file", {"path": bad, "content": "x"})
    assert reason is not None and bad[:3] in reason or bad == ""
