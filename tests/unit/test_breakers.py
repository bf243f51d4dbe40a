"""What counts against a circuit breaker, and the in-process state machine: open, refuse at once, trial, close."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
import requests
from github import GithubException

from core.breakers import Breakers, ServiceUnavailable, http_unavailable
from core.settings import Settings
from infra.forge.github_http import unavailable
from infra.ssh import HostUnavailable, describe_error, host_unavailable


def test_only_no_answer_429_and_5xx_are_unavailability() -> None:
    assert [http_unavailable(s) for s in (None, 429, 500, 502, 503, 599)] == [True] * 6
    assert [http_unavailable(s) for s in (200, 304, 400, 401, 403, 404, 409, 422, 451)] == [False] * 9


def test_github_failures_that_count() -> None:
    assert unavailable(requests.exceptions.ConnectionError("refused"))
    assert unavailable(requests.exceptions.ReadTimeout("slow"))
    assert unavailable(GithubException(502, {"message": "Bad Gateway"}, {}))
    assert unavailable(GithubException(429, {"message": "slow down"}, {}))
    assert unavailable(GithubException(403, {"message": "API rate limit exceeded"}, {"x-ratelimit-remaining": "0"}))
    assert not unavailable(GithubException(404, {"message": "Not Found"}, {}))
    assert not unavailable(GithubException(422, {"message": "Validation Failed"}, {}))
    assert not unavailable(GithubException(403, {"message": "Resource not accessible by integration"}, {}))
    assert not unavailable(ValueError("not a request failure"))


def test_ssh_failures_that_count() -> None:
    assert host_unavailable(ConnectionRefusedError(111, "Connection refused"))
    assert host_unavailable(TimeoutError())
    assert host_unavailable(asyncssh.ConnectionLost("reset"))
    assert not host_unavailable(asyncssh.PermissionDenied("key refused"))
    assert not host_unavailable(asyncssh.HostKeyNotVerifiable("changed"))
    assert not host_unavailable(asyncssh.ProcessError(None, "false", None, 1, None, None, "", ""))


async def fail(breakers: Breakers, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breakers.guard("svc", "The service", counts=lambda e: isinstance(e, OSError)):
            raise exc


async def test_in_memory_breaker_opens_refuses_then_closes_after_one_good_trial() -> None:
    breakers = Breakers(Settings(breaker_failures=2, breaker_cooldown_s=0.2), None)
    await fail(breakers, ConnectionRefusedError())
    await fail(breakers, ValueError("an answer, not unavailability"))  # resets the count
    await fail(breakers, ConnectionRefusedError())
    await fail(breakers, ConnectionRefusedError())
    ran = []
    with pytest.raises(ServiceUnavailable, match=r"^The service unavailable since .+Z \(2 failures in a row\), next"):
        async with breakers.guard("svc", "The service", counts=lambda e: True):
            ran.append(1)
    assert ran == []
    await asyncio.sleep(0.25)
    async with breakers.guard("svc", "The service", counts=lambda e: True):
        ran.append(2)
    async with breakers.guard("svc", "The service", counts=lambda e: True):
        ran.append(3)
    assert ran == [2, 3]


async def test_a_cancelled_call_neither_counts_nor_resets() -> None:
    breakers = Breakers(Settings(breaker_failures=2, breaker_cooldown_s=60), None)
    await fail(breakers, ConnectionRefusedError())
    with pytest.raises(asyncio.CancelledError):
        async with breakers.guard("svc", "The service", counts=lambda e: True):
            raise asyncio.CancelledError
    await fail(breakers, ConnectionRefusedError())
    with pytest.raises(ServiceUnavailable):
        async with breakers.guard("svc", "The service", counts=lambda e: True):
            pass


def test_a_refusal_reads_as_an_ssh_error() -> None:
    text = "SSH host 10.0.0.5:22 unavailable since 12:03:01Z (5 failures in a row), next try at 12:04:01Z"
    assert describe_error(HostUnavailable(text), 10) == text
