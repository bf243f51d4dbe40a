"""Where in a graph run a model call is made: the run id and the node's path through subgraphs."""

from __future__ import annotations


def graph_position() -> tuple[str | None, str | None]:
    """``(run_id, node)`` of the graph node making the current call; ``(None, None)`` outside a graph run.

    The node is its path through subgraphs, read from LangGraph's per-task config: ``configurable.checkpoint_ns``
    (``engineering:<task id>|run_phase:<task id>`` becomes ``engineering/run_phase``; a top-level node's is
    ``po_turn:<task id>``). The run id is the run's ``Context.run_id``, read through ``get_runtime()``
    (https://langchain-ai.github.io/langgraph/agents/context/). LangGraph keeps both in context variables, so a
    call made in a task or a worker thread the node started still finds them.
    """
    from langgraph.config import get_config
    from langgraph.runtime import get_runtime

    try:
        config = get_config()
        context = get_runtime().context
    except RuntimeError:  # not inside a graph node (a sync worker, a model probe)
        return None, None
    ns = config.get("configurable", {}).get("checkpoint_ns") or config.get("metadata", {}).get("langgraph_node")
    node = "/".join(part.split(":")[0] for part in str(ns or "").split("|") if part)
    run_id = getattr(context, "run_id", None)
    return (str(run_id) if run_id else None), (node[:512] or None)
