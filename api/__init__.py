"""The HTTP API: the orchestrator runtime over FastAPI (threads, messages with SSE, approvals, projects, servers)."""
