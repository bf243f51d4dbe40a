"""Why a model call failed, in words that fit: the cause read from the provider's exception, and advice.

:func:`classify` turns whatever litellm (or the openai SDK under it) raised into a :class:`Failure` (cause, HTTP
status, the wait the provider asked for); :func:`advice` says what to change for that cause; :func:`refuses_tools`
recognises a server that takes no tool calls. ``core.llm`` retries the causes in :data:`RETRYABLE` and raises
:class:`ModelUnreachable` with the cause for the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from core.settings import Role, Settings


class ModelUnreachable(RuntimeError):
    """The model provider could not be reached or failed; says which model, where, why, and what to do.

    Args:
        message: ``model '<model>' at <api_base> failed (<cause>)...: <the provider's words>. <advice>``.
        cause: one of :data:`CAUSES` (see :func:`classify`).
    """

    def __init__(self, message: str, cause: str = "error") -> None:
        super().__init__(message)
        self.cause = cause


CAUSES = (
    "connection",
    "timeout",
    "auth",
    "not_found",
    "rate_limited",
    "server_error",
    "context_window",
    "bad_request",
    "replay_mismatch",
    "error",
)
"""Why a model call failed; ``error`` is anything else."""
RETRYABLE = frozenset({"connection", "rate_limited", "server_error"})
"""The causes a retry can fix: a server that is busy, failing for a moment, or not up yet."""
RETRY_WAIT_MAX_S = 20.0
"""Longest backoff between two attempts, in seconds (a provider's ``Retry-After`` may ask for more)."""
_CONNECTION_WORDS = ("Connection refused", "Failed to establish a new connection", "All connection attempts failed")


@dataclass(frozen=True)
class Failure:
    """Why one model request failed, read from its exception by :func:`classify`."""

    cause: str
    """One of :data:`CAUSES`."""
    status: int | None
    """The provider's HTTP status; None for a connection error or a timeout (no answer came)."""
    retry_after_s: float | None
    """How long the provider asked to wait (``Retry-After`` / ``retry-after-ms``), in seconds; None if it did not."""
    detail: str
    """The exception's class and words, on one line (``InternalServerError: OpenAIException - ...``)."""

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed (:data:`RETRYABLE`)."""
        return self.cause in RETRYABLE

    def row(self, outcome: str) -> str:
        """The ``llmcall.error`` of this attempt: ``<cause> (<status>): <detail>; <outcome>``, at most 500 chars."""
        tag = f"{self.cause} ({self.status})" if self.status else self.cause
        room = max(0, 500 - len(tag) - len(outcome) - 4)
        return f"{tag}: {self.detail[:room]}; {outcome}"


def classify(exc: BaseException) -> Failure:
    """Read a failed request's cause, HTTP status and asked wait from the exception litellm (or the SDK) raised.

    The exception's type decides first (timeout, connection, context window), then its ``status_code``
    (401/403 auth, 404 not found, 429 rate limited, 5xx server error, other 4xx bad request).
    """
    import openai

    from core.replay import MISMATCH_PREFIX

    name, text = type(exc).__name__, " ".join(str(exc).split())
    text = text.removeprefix(f"litellm.{name}: ")
    while text.startswith(f"{name}: "):
        text = text.removeprefix(f"{name}: ")
    detail = f"{name}: {text}"
    raw_status = getattr(exc, "status_code", None)
    status = raw_status if isinstance(raw_status, int) else None
    if MISMATCH_PREFIX in text:
        return Failure("replay_mismatch", None, None, text[text.index(MISMATCH_PREFIX) :])
    # litellm wraps the SDK's error, which wraps httpx's: a refused connect arrives as a "500". A 4xx was an answer.
    chain = [] if status is not None and 400 <= status < 500 else list(_chain(exc))
    if status == 408 or any(isinstance(link, openai.APITimeoutError | TimeoutError) for link in chain):
        return Failure("timeout", None, None, detail)
    if any(isinstance(link, openai.APIConnectionError | ConnectionError) for link in chain) or (
        status in (None, 503) and any(words in text for words in _CONNECTION_WORDS)
    ):
        return Failure("connection", None, None, detail)
    window = any(c.__name__ == "ContextWindowExceededError" for c in type(exc).__mro__)  # litellm's, by name
    if window or "context_length_exceeded" in text:
        return Failure("context_window", status, None, detail)
    cause = _CAUSE_BY_STATUS.get(status or 0) or (
        "server_error" if (status or 0) >= 500 else "bad_request" if (status or 0) >= 400 else "error"
    )
    return Failure(cause, status, retry_after_s(exc), detail)


_CAUSE_BY_STATUS = {401: "auth", 403: "auth", 404: "not_found", 429: "rate_limited"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``, else ``__context__``), at most 10."""
    link: BaseException | None = exc
    for _ in range(10):
        if link is None:
            return
        yield link
        link = link.__cause__ or link.__context__


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait, from the response headers the exception carries; None if none.

    Reads ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds, or an HTTP date) from litellm's
    ``litellm_response_headers``, the exception's ``response.headers`` or its ``headers``.
    """
    response = getattr(exc, "response", None)
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(response, "headers", None),
        getattr(exc, "headers", None),
    ):
        if not isinstance(headers, Mapping):
            continue
        lower = {str(k).lower(): str(v).strip() for k, v in headers.items()}
        try:
            if "retry-after-ms" in lower:
                return max(0.0, float(lower["retry-after-ms"]) / 1000)
            if "retry-after" in lower:
                return max(0.0, float(lower["retry-after"]))
        except ValueError:
            try:
                when = parsedate_to_datetime(lower["retry-after"])
            except (KeyError, TypeError, ValueError):
                continue
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def advice(failure: Failure, *, role: Role, settings: Settings) -> str:
    """What to do about ``failure`` of ``role``'s model, naming the settings (``ORCH_...``) that fit its cause."""
    model, base = settings.model_for(role), settings.api_base
    if failure.retryable and (failure.retry_after_s or 0.0) > settings.llm_retry_after_max_s:
        return (
            f"The provider asked to wait {failure.retry_after_s:g} s before trying again, longer than "
            f"ORCH_LLM_RETRY_AFTER_MAX_S ({settings.llm_retry_after_max_s:g} s): try again then, or lower the load."
        )
    hints = {
        "connection": f"Nothing answered at {base or 'the provider default address'}: is the server running there "
        "(for Ollama: `ollama serve`)? Or point ORCH_API_BASE at it.",
        "timeout": f"The model took longer than {settings.timeout_for(role):g} s: raise ORCH_LLM_TIMEOUT_S or "
        f"ORCH_LLM_TIMEOUT_S_{role.upper()}, or use a smaller model.",
        "auth": "The provider refused the key: check ORCH_API_KEY.",
        "not_found": f"The provider does not know the model: check ORCH_MODEL / ORCH_MODEL_{role.upper()}; for Ollama "
        f"`ollama pull {model.split('/', 1)[-1]}`.",
        "rate_limited": "The provider keeps refusing (rate limit) after every retry: wait, or lower the load "
        "(ORCH_LLM_RETRIES sets the retries).",
        "server_error": "The provider kept failing after every retry: try again later, or check its logs.",
        "context_window": "The prompt does not fit: raise ORCH_LLM_CONTEXT_TOKENS (Ollama num_ctx) or use a model "
        "with a larger context.",
        "bad_request": f"The provider refused the request: check that {model!r} supports chat with tools, and "
        "ORCH_LLM_MAX_TOKENS.",
    }
    return hints.get(
        failure.cause,
        "Check ORCH_MODEL / ORCH_API_BASE / ORCH_API_KEY, or run the recorded demo model (replay/hello-api).",
    )


REFUSED_TOOLS = ("does not support tools", "--enable-auto-tool-choice", "tool choice requires")
"""How servers say they take no tool calls: Ollama for a model whose template has none ("registry.ollama.ai/library/X
does not support tools"), vLLM started without a tool-call parser ("auto" tool choice requires
--enable-auto-tool-choice and --tool-call-parser to be set)."""


def refuses_tools(error: str) -> bool:
    """Whether a 400's words say the server takes no tool calls (:data:`REFUSED_TOOLS`)."""
    return any(words in error for words in REFUSED_TOOLS)
