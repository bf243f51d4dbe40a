"""FakeGitHub's answers validated against GitHub's published OpenAPI description, so the fake cannot drift from GitHub.

The description is the npm package @octokit/openapi (``generated/api.github.com.json``, OpenAPI 3.0), which
``make github-openapi`` installs into ``.cache/github-openapi`` (``make test`` and ``make integration`` do it first).
OpenAPI 3.0's ``nullable`` is turned into JSON Schema's ``null`` type; everything else is validated as published.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import REPO_ROOT
from tests.fixtures.fake_github import FakeGitHub

OPENAPI = REPO_ROOT / ".cache/github-openapi/node_modules/@octokit/openapi/generated/api.github.com.json"
TOKEN = "t"
ORG = "acme"


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable: true`` becomes a ``null`` type (or an ``anyOf`` with it)."""
    if isinstance(node, list):
        return [json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k != "nullable"}
    if not node.get("nullable"):
        return out
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        return out
    return {"anyOf": [{"type": "null"}, out]}


@cache
def document() -> dict[str, Any]:
    if not OPENAPI.exists():
        pytest.fail(f"GitHub's OpenAPI description is not installed at {OPENAPI}: run `make github-openapi`")
    return json.loads(OPENAPI.read_text())


@cache
def components() -> dict[str, Any]:
    return json_schema(document()["components"]["schemas"])


def check(instance: Any, schema: str) -> None:
    """Validate ``instance`` against ``#/components/schemas/<schema>``, listing every error."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": {"schemas": components()}}
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:20])


def operation(path: str, method: str) -> dict[str, Any]:
    return document()["paths"][path][method]


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


@pytest.fixture
def client(gh: FakeGitHub) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"token {TOKEN}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=gh.base_url, headers=headers) as c:
        yield c


def test_the_description_names_the_schemas_checked_here() -> None:
    def schema(path: str, method: str, status: str) -> Any:
        return operation(path, method)["responses"][status]["content"]["application/json"]["schema"]

    components()
    assert schema("/orgs/{org}/repos", "get", "200")["items"]["$ref"].endswith("/minimal-repository")
    assert schema("/orgs/{org}/repos", "post", "201")["$ref"].endswith("/full-repository")
    assert schema("/repos/{owner}/{repo}", "get", "200")["$ref"].endswith("/full-repository")
    assert "301" in operation("/repos/{owner}/{repo}", "get")["responses"]


def test_created_and_fetched_repositories_are_full_repositories(gh: FakeGitHub, client: httpx.Client) -> None:
    created = client.post(f"/orgs/{ORG}/repos", json={"name": "hello-api", "private": True, "auto_init": True})
    assert created.status_code == 201 and created.headers["location"] == created.json()["url"]
    check(created.json(), "full-repository")
    assert created.json()["description"] is None, "GitHub sends null for an empty description"

    fetched = client.get(f"/repos/{ORG}/hello-api")
    assert fetched.status_code == 200
    check(fetched.json(), "full-repository")
    by_id = client.get(f"/repositories/{fetched.json()['id']}")
    check(by_id.json(), "full-repository")


def test_listed_repositories_are_minimal_repositories(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.add_repos(3)
    gh.add_repo("described", "A service", private=False)
    listed = client.get(f"/orgs/{ORG}/repos", params={"per_page": 100})
    assert listed.status_code == 200 and len(listed.json()) == 4
    for item in listed.json():
        check(item, "minimal-repository")
    assert [r["description"] for r in listed.json()] == ["A service", None, None, None]


def test_renamed_and_transferred_repositories(gh: FakeGitHub, client: httpx.Client) -> None:
    renamed = gh.add_repo("old-name")
    gh.rename("old-name", "new-name")
    transferred = gh.add_repo("leaving")
    gh.transfer("leaving", "elsewhere")

    for old, repo in (("old-name", renamed), ("leaving", transferred)):
        moved = client.get(f"/repos/{ORG}/{old}")
        assert moved.status_code == 301
        assert moved.headers["location"] == f"{gh.base_url}/repositories/{repo['id']}" == moved.json()["url"]
        check(moved.json(), "basic-error")
        followed = client.get(moved.headers["location"])
        check(followed.json(), "full-repository")
    assert client.get(f"/repositories/{transferred['id']}").json()["owner"]["login"] == "elsewhere"
    assert [r["name"] for r in client.get(f"/orgs/{ORG}/repos").json()] == ["new-name"]


def test_error_answers(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.add_repo("hello-api")
    exists = client.post(f"/orgs/{ORG}/repos", json={"name": "hello-api"})
    assert exists.status_code == 422
    check(exists.json(), "validation-error")
    control = client.post(f"/orgs/{ORG}/repos", json={"name": "other", "description": "two\nlines"})
    assert control.status_code == 422 and "control characters" in control.text
    check(control.json(), "validation-error")
    missing = client.get(f"/repos/{ORG}/nothing-here")
    assert missing.status_code == 404
    check(missing.json(), "basic-error")
    gh.sso_next()
    sso = client.get(f"/repos/{ORG}/hello-api")
    assert sso.status_code == 403 and sso.headers["x-github-sso"].startswith("required; url=https://github.com/")
    check(sso.json(), "basic-error")
    gh.rate_limit_next("secondary", status=429, retry_after=90)
    limited = client.get(f"/repos/{ORG}/hello-api")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "90"
    check(limited.json(), "basic-error")
    gh.block_next()
    # GitHub's description has no 451 yet (github/rest-api-description#3314): its shape is checked by hand
    blocked = client.get(f"/repos/{ORG}/hello-api")
    assert blocked.status_code == 451
    assert blocked.json()["message"] == "Repository access blocked" and blocked.json()["block"]["reason"] == "dmca"
