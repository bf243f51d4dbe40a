"""Unsuccessful playbook runs keep their private data dirs for inspection, within a bound."""

from __future__ import annotations

import os
from pathlib import Path

from infra.ansible import prune_kept_runs


def test_only_the_newest_kept_playbook_runs_stay(tmp_path: Path) -> None:
    for i in range(5):
        run = tmp_path / f"deploy-{i}"
        run.mkdir()
        os.utime(run, (1_000_000 + i, 1_000_000 + i))
    removed = prune_kept_runs(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["deploy-0", "deploy-1", "deploy-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy-3", "deploy-4"]
