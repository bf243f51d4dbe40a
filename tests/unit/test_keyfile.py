"""Key files: made once and 0600, refused when no longer private or not the file itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.keyfile import KeyFileError, create_once, read_private


def test_the_first_creator_wins_and_the_file_is_private(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    create_once(key, "first")
    create_once(key, "second")
    assert read_private(key, "test key") == "first\n"
    assert (key.stat().st_mode & 0o777) == 0o600 and os.listdir(tmp_path) == ["k.key"]


def test_a_key_others_may_read_a_symlink_and_a_folder_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    create_once(key, "secret")
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_private(key, "test key")
    key.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(key)
    with pytest.raises(KeyFileError, match="symbolic link"):
        read_private(link, "test key")
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_private(tmp_path, "test key")
