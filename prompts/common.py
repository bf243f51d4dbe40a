"""Prompt pieces shared by every role that answers in JSON."""

JSON_INSTRUCTION = (
    "\n\nAnswer with one JSON object only (no prose, no code fences) matching this JSON schema:\n{schema}"
)

REASK = (
    "Your previous answer was not a valid {schema}: {error}\n"
    "Answer again with one JSON object only that fixes these errors."
)
