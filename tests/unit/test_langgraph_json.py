"""Every graph langgraph.json lists imports and is compiled without a checkpointer (LangGraph Server refuses one)."""

from __future__ import annotations

import importlib
import json

import pytest
from langgraph.pregel import Pregel

from tests.conftest import REPO_ROOT

ENTRIES = json.loads((REPO_ROOT / "langgraph.json").read_text())["graphs"]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_entry_is_a_compiled_graph_without_checkpointer(name: str) -> None:
    path, attr = ENTRIES[name].split(":")
    module = importlib.import_module(path.removeprefix("./").removesuffix(".py").replace("/", "."))
    graph = getattr(module, attr)
    assert isinstance(graph, Pregel)
    assert graph.checkpointer is None
    assert graph.name == name


def test_the_po_graph_has_both_teams_and_the_approval() -> None:
    from graphs.product_owner import graph

    nodes = set(graph.get_graph().nodes)
    assert {"zavhoz", "engineering", "request_deploy_approval", "deploy_project", "wait_for_resources"} <= nodes
