"""Core runtime pieces: settings, database, the LLM seam, forges and the graph runtime."""
