"""Playbooks run with Mitogen's strategy when it is installed, unless ORCH_ANSIBLE_MITOGEN turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.ansible import mitogen_strategy


def test_the_strategy_names_mitogens_installed_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_ANSIBLE_MITOGEN", raising=False)
    env = mitogen_strategy()
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()


@pytest.mark.parametrize("off", ["0", "false", "OFF"])
def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, off: str) -> None:
    monkeypatch.setenv("ORCH_ANSIBLE_MITOGEN", off)
    assert mitogen_strategy() == {}
