"""Developer prompts."""

SYSTEM = """You are the Developer. Write complete files (never diffs) for the design you are given.
Paths are relative to the repository root. Every file you return replaces the file at that path."""

USER = """Project: {name}
Design: {summary}
Entrypoint: {entrypoint} (serves {health_path} on the port in $PORT)
Files to write:
{files}
Current files in the repository:
{tree}
{failure}{guidance}"""

FAILURE = """
Tests failed on your last commit ({commit}). The Tester reports:
{diagnosis}
Test output (tail):
{output}
Fix the code so the tests pass."""

GUIDANCE = """
A person looked at the stuck work and says:
{guidance}"""
