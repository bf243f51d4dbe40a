"""What the CLI prints is the data as it is: Rich markup in a title, a reply or a payload is shown, never read.

Also: Ctrl-C during a prompt read raises at once (a real SIGINT), and the chat's look at the model's address.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket

import pytest
from rich.console import Console

from cli.app import PromptInterrupted, read_input
from cli.model_probe import model_base, unreachable
from cli.render import Renderer, error_line, line, literal
from core.settings import Settings
from runtime.events import RunEvent

MARKUP = ["[/health]", "[bold]x[/bold]", "[red]", "a trailing \\", "x\\[/y]", "[]", "[link=http://e/]e[/link]"]


def printed(*renderables: object) -> str:
    """What a plain 200-column console prints for ``renderables``."""
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for r in renderables:
        console.print(r)
    return out.getvalue()


@pytest.mark.parametrize("text", MARKUP)
def test_literal_line_and_error_line_print_the_text_as_it_is(text: str) -> None:
    assert printed(literal(text)).rstrip("\n") == text
    assert printed(line(("error:", "red"), " ", text)).rstrip("\n") == f"error: {text}"
    assert printed(error_line(text, "model error:")).rstrip("\n") == f"model error: {text}"
    assert printed(literal(None)) == "\n"


def test_every_event_kind_prints_its_texts_literally() -> None:
    out = io.StringIO()
    renderer = Renderer(Console(file=out, width=200, color_system=None))
    payload: dict[str, object] = {"kind": "deploy_[/k]", "question": "Deploy [/x] to [bold]web-1[/bold]?"}
    payload |= {"commit": "[/c]", "phases": ["IMPL [/p]"], "last_failure": "E   [/assert]", "attested": "[sig]"}
    for ev in (
        RunEvent("node_start", node="[/n]", path=("[/sub]",)),
        RunEvent("node_end", node="[/n]", path=("[/sub]",), duration_s=0.5, text="IMPL round 1: failed: [/t]"),
        RunEvent("message", node="call_po", text="Noted: [/x] and [bold]y[/bold]"),
        RunEvent("interrupt", payload=payload, interrupt_id="[/i]"),
        RunEvent("drained", text="stopped [/d]"),
    ):
        renderer.event(ev)
    shown = out.getvalue()
    for text in (
        "[/sub] › [/n]",
        "failed: [/t]",
        "Noted: [/x] and [bold]y[/bold]",
        "Deploy [/x] to [bold]web-1[/bold]?",
    ):
        assert text in shown, text
    for text in ('"commit": "[/c]"', "IMPL [/p]", "E   [/assert]", "[sig]", "deploy_[/k] ([/i])", "stopped [/d]"):
        assert text in shown, text
    assert "[/sub]" in printed(renderer.timeline_table())


def test_ctrl_c_during_a_prompt_read_raises_at_once_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGINT)

    def read() -> str:
        signal.raise_signal(signal.SIGINT)  # the person presses Ctrl-C while the read waits
        return "never"

    with pytest.raises(PromptInterrupted):
        read_input(read)
    assert signal.getsignal(signal.SIGINT) is before
    assert read_input(lambda: "typed") == "typed"


def test_inside_asyncio_run_the_first_ctrl_c_ends_the_read() -> None:
    """asyncio.run's own SIGINT handler only cancels its task, which a blocking read never lets run."""

    def read() -> str:
        signal.raise_signal(signal.SIGINT)
        return "lost"

    async def prompt() -> str:
        return read_input(read)

    with pytest.raises(PromptInterrupted):
        asyncio.run(prompt())


async def test_the_model_probe_tells_a_closed_port_from_a_listening_one() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = Settings(model="openai/gpt-4o-mini", api_base=f"http://127.0.0.1:{closed}")
    why = await unreachable(settings)
    assert why == f"nothing listens at http://127.0.0.1:{closed} (Connection refused)"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        listening = settings.model_copy(update={"api_base": f"http://127.0.0.1:{server.getsockname()[1]}"})
        assert await unreachable(listening) is None


def test_the_model_probe_checks_only_addresses_of_our_own() -> None:
    assert model_base(Settings(model="replay/hello-api", api_base="/some/folder")) is None
    assert model_base(Settings(model="openai/gpt-4o-mini")) is None  # the provider's own address
    assert model_base(Settings(model="ollama_chat/qwen2.5-coder:7b")) == "http://localhost:11434"
    assert model_base(Settings(model="openai/x", api_base="http://10.0.0.5:8000/v1")) == "http://10.0.0.5:8000/v1"
