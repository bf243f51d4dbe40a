"""Fuzz the real API server from its own OpenAPI schema with schemathesis.

One server (``orchestrator api`` in a subprocess, as in test_api.py) serves the whole module. schemathesis makes
one test per operation of the schema and sends it generated requests with the admin key: valid ones, edge cases of
every parameter (its coverage phase) and invalid ones. Every response must pass every check schemathesis has for a
single response: no 5xx, a documented status code, content type, headers and body schema, refused invalid data,
accepted valid data, enforced auth (a probe without the key must get 401), a 405 for undocumented methods. Only
127.0.0.1 is reached: the schema is built in-process (and compared with what the server serves), nothing is
fetched from anywhere else.

``POST /threads/{thread_id}/messages`` starts a real graph run on the recorded model (``replay/hello-api``) for
each valid message; generated text matches no recording, so the run ends at once with an ``error`` event (the first
one waits for the model library to load, a few seconds). Nothing else here starts work: ``POST /servers`` only
registers rows (no sync service runs), and resume/continue find no thread to act on.

Set ``ORCH_FUZZ_SEED`` to try another seed (the default is fixed, so a failure reproduces) and
``ORCH_FUZZ_EXAMPLES`` to fuzz deeper than the default 20 requests per operation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis

from api.app import create_app
from core.settings import Settings
from tests.conftest import free_port_block
from tests.fixtures.api_server import ApiServer, start_api, stop_api

pytestmark = pytest.mark.slow  # a server start, then ~1000 requests: about a minute

MAX_EXAMPLES = int(os.environ.get("ORCH_FUZZ_EXAMPLES", "20"))
"""Generated requests per operation in the fuzzing phase (the coverage phase adds its own, a fixed set)."""
SEED = int(os.environ.get("ORCH_FUZZ_SEED", "20240601"))

OPENAPI: dict[str, Any] = json.loads(json.dumps(create_app(Settings(model="replay/hello-api")).openapi()))
"""The schema, built like the server builds it (the JSON round trip makes it what GET /openapi.json returns)."""

schema = schemathesis.openapi.from_dict(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 60,  # the first run waits for litellm to load: seconds on a loaded machine
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},  # no .hypothesis/ in the tree
        }
    ),
)


@schema.hook
def map_case(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Order the port range of a generated ``POST /servers`` body: the one rule of it a JSON schema cannot state.

    ``port_range_start`` above ``port_range_end`` is refused (422, as the schema's description says); left to
    chance, half the valid bodies would break that rule, and positive_data_acceptance would flag them.
    """
    body = case.body
    if case.operation.label != "POST /servers" or not isinstance(body, dict):
        return case
    start, end = body.get("port_range_start", 8100), body.get("port_range_end", 8199)
    if all(type(port) in (int, float) for port in (start, end)) and start > end:  # 1128.0 is an integer to JSON
        case.body = {**body, "port_range_start": end, "port_range_end": start}
    return case


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    base = free_port_block()
    settings = Settings(
        data_dir=tmp / "data",
        model="replay/hello-api",
        port_range_start=base,
        port_range_end=base + 19,
        health_timeout_s=15,
        deploy_timeout_s=120,
        test_timeout_s=60,
    )
    server = start_api(settings, tmp / "api.log")
    try:
        served = httpx.get(f"{server.base_url}/openapi.json", headers=server.headers("viewer"), trust_env=False)
        assert served.status_code == 200 and served.json() == OPENAPI, "the server serves another schema"
        yield server
    finally:
        stop_api(server)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy settings of the environment: requests go straight to 127.0.0.1."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


@schema.parametrize()
def test_api_answers_as_documented(case: schemathesis.Case, fuzz_api: ApiServer, http: requests.Session) -> None:
    case.call_and_validate(base_url=fuzz_api.base_url, session=http, headers=fuzz_api.headers("admin"))


def test_405_names_every_method_of_the_path(fuzz_api: ApiServer) -> None:
    shared = {path: {m.upper() for m in ops} for path, ops in OPENAPI["paths"].items() if len(ops) > 1}
    assert shared, "some paths serve several methods"
    for path, methods in shared.items():
        url = f"{fuzz_api.base_url}{path}"
        answer = httpx.request("OPTIONS", url, headers=fuzz_api.headers("admin"), trust_env=False)
        assert answer.status_code == 405
        assert {m.strip() for m in answer.headers["allow"].split(",")} == methods, path
