"""Run the ``orchestrator`` CLI with one graph node wrapped to SIGKILL this process right after it returns.

``CRASH_AFTER=NODE`` (or ``NODE:N`` for its N-th call in this process) is read here and nowhere else: the node's
side effects are committed, its step's checkpoint is not, which is exactly a kill -9 at a node boundary. Without
the variable this is the plain CLI. Usage: ``python -m tests.integration.crash_after ARGS...`` (the CLI's args).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

NODE_MODULES = {
    "run_po_tools": "graphs.product_owner",
    "provision_repository": "graphs.product_owner",
    "deploy_project": "graphs.product_owner",
    "lease_port": "graphs.zavhoz",
    "run_phase": "graphs.engineering",
}


def wrap(node: str, nth: int) -> None:
    """Replace ``node`` in the graph module that wires it by a copy that kills the process after its ``nth`` return."""
    import importlib

    module = importlib.import_module(NODE_MODULES[node])
    original: Callable[..., Awaitable[dict[str, Any]]] = getattr(module, node)
    calls = 0

    @functools.wraps(original)
    async def node_then_die(state: Any, runtime: Any) -> dict[str, Any]:
        nonlocal calls
        result = await original(state, runtime)
        calls += 1
        if calls == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, node, node_then_die)


def main() -> None:
    """Wrap the node named by ``CRASH_AFTER`` (if set), then run the CLI."""
    spec = os.environ.get("CRASH_AFTER")
    if spec:
        node, _, nth = spec.partition(":")
        wrap(node, int(nth or 1))
    from cli.main import app

    app(prog_name="orchestrator")


if __name__ == "__main__":
    main()
