"""Plumbing: settings, the database engine and sessions, checkpoints, the LLM seam and its replay provider."""
