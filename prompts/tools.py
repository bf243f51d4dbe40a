"""How tools are described to a model whose server refuses native tool calls (see ``core.llm.LLM.chat``)."""

TOOLS_IN_PROMPT = """

This model server cannot take tool calls natively, so write them as JSON. To call tools, answer with one JSON
object: {{"tool_calls": [{{"name": "<tool>", "arguments": {{...}}}}]}} (one call or more, run in order).{talk}
The tools, each with its arguments' JSON Schema:
{tools}"""

PO_TALK = " To answer the person instead, write plain words with no JSON."

TOOL_LINE = "- {name}: {description}\n  arguments: {parameters}"
