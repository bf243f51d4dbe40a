"""Shared fixtures: settings in a temp data dir, on the recorded model, with ports no other test uses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port_block(size: int = 20) -> int:
    """The first port of ``size`` consecutive ports that are free now (best effort, checked by binding)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size > 65000:
            continue
        ok = True
        for port in range(base, base + size):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


@pytest.fixture()
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: fresh data dir, replay model, a private port range, short timeouts."""
    base = free_port_block()
    yield Settings(
        data_dir=tmp_path / "data",
        model="replay/hello-api",
        port_range_start=base,
        port_range_end=base + 19,
        health_timeout_s=15,
        deploy_timeout_s=120,
        test_timeout_s=60,
    )
