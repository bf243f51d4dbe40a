"""The ``orchestrator`` command line (Typer + Rich)."""
