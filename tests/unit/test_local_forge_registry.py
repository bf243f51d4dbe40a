"""The local forge's registry under concurrent processes, and its ids namespaced away from GitHub's."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from infra.forge.local import LocalForge
from tests.conftest import REPO_ROOT

WRITER = """
import sys
from pathlib import Path
from infra.forge.local import LocalForge

forge = LocalForge(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    forge.create_repo(f"new-project-{i:03d}", "made while others read")
print("done", flush=True)
"""


def seed(root: Path, entries: int) -> None:
    """A registry as large as a long-lived data dir's (each rewrite then takes a while), and one real repository."""
    LocalForge(root).create_repo("hello-api", "the one that is read")
    registry = json.loads((root / "registry.json").read_text())
    registry.update({f"old-project-{i:06d}": 2000 + i for i in range(entries)})
    (root / "registry.json").write_text(json.dumps(registry, indent=2))


def test_readers_never_see_a_half_written_registry_while_another_process_creates(tmp_path: Path) -> None:
    root = tmp_path / "forge"
    seed(root, 40_000)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "25"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    reader = LocalForge(root)
    reads, errors = 0, []
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        try:
            assert reader.get_repo("hello-api") is not None
        except (ValueError, AssertionError) as e:  # json.JSONDecodeError is a ValueError
            errors.append(repr(e)[:80])
        reads += 1
    out, _ = writer.communicate(timeout=60)
    assert out.strip() == "done"
    assert reads > 50
    assert errors == [], f"{len(errors)} of {reads} reads failed, first: {errors[:3]}"
    assert all(reader.get_repo(f"new-project-{i:03d}") is not None for i in range(25))
    assert not list(root.glob(".registry-*")), "no temporary file is left behind"


def test_local_ids_are_negative_and_stable(tmp_path: Path) -> None:
    forge = LocalForge(tmp_path / "forge")
    first, second = forge.create_repo("hello-api", ""), forge.create_repo("other-api", "")
    assert (first.id, second.id) == (-1001, -1002)
    assert forge.get_repo("hello-api") == first
    assert json.loads((tmp_path / "forge" / "registry.json").read_text()) == {"hello-api": 1001, "other-api": 1002}
