"""The local forge never leaves the data dir (or its own folder) readable by other users."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from infra.forge.factory import make_forge
from infra.forge.local import LocalForge, make_private_dirs


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common 022: without care, new folders would be 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_building_the_forge_creates_nothing(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "data" / "forge")
    assert not (tmp_path / "data").exists()
    assert forge.get_repo("hello-api") is None
    assert not (tmp_path / "data").exists()


def test_first_repo_creates_data_dir_and_forge_0700(tmp_path: Path) -> None:
    info = LocalForge(tmp_path / "data" / "forge").create_repo("hello-api", "hi")
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "forge") == 0o700
    assert Path(info.clone_url).is_dir()


def test_runtime_order_forge_first_then_ensure_data_dir_gives_0700(tmp_path: Path) -> None:
    """The runtime builds the forge before ``ensure_data_dir``: the data dir must still end up 0700."""
    settings = Settings(data_dir=tmp_path / "nested" / "data")
    forge = make_forge(settings)
    settings.ensure_data_dir()
    forge.create_repo("hello-api", "hi")
    assert mode(settings.data_dir) == 0o700
    assert mode(settings.data_dir / "forge") == 0o700


def test_existing_folders_are_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    make_private_dirs(shared / "a" / "b")
    assert mode(shared) == 0o755
    assert mode(shared / "a") == 0o700 and mode(shared / "a" / "b") == 0o700
    make_private_dirs(shared / "a" / "b")  # idempotent
    assert mode(shared / "a" / "b") == 0o700


def test_an_existing_data_dir_keeps_its_permissions_and_a_new_one_is_private(tmp_path: Path) -> None:
    data = tmp_path / "shared"  # `--data-dir /tmp` must not close /tmp to everyone (issue #15)
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    Settings(data_dir=data).ensure_data_dir()
    assert data.stat().st_mode & 0o777 == 0o755
    Settings(data_dir=tmp_path / "new").ensure_data_dir()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
