"""The console in a real browser: Playwright driving Debian's chromium against a real `orchestrator api` on 127.0.0.1.

One API serves the module; its fixture takes hello-api (the recorded replay scenario) to the deploy approval over
the JSON API, as a person's operator key would. The tests then sign in with keys made by `orchestrator token create`,
read the projects and the inbox, try what must be refused (a wrong key, a viewer's or an operator's approve, posts
without the session's CSRF token), and last approve the deploy from the inbox and follow it to ``active`` and to the
run's waterfall. The screenshots they take are the README's (docs/console/*.png).

The tests run in file order: the last one answers the approval the others look at.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from api.console.pages import usd
from core.settings import Settings
from tests.conftest import REPO_ROOT, free_port_block
from tests.fixtures.api_server import ApiServer, start_api, stop_api
from tests.integration.test_api import HELLO, parse_sse, stop_service

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO_ROOT / "docs" / "console"
COOKIE = "orch_console"
WRONG_KEY = "orch_" + "A" * 43


@dataclass
class Served:
    """The API, its settings, and the thread waiting at hello-api's deploy approval (with the interrupt's id)."""

    api: ApiServer
    settings: Settings
    thread_id: str
    interrupt_id: str

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.settings.data_dir / "orchestrator.db")

    def pending(self) -> list[dict[str, object]]:
        answer = httpx.get(
            f"{self.api.base_url}/threads/{self.thread_id}/interrupts",
            headers=self.api.headers("approver"),
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("console")
    base = free_port_block()
    releases = Path(tempfile.mkdtemp(prefix="orchestrator-test-releases-"))
    releases.chmod(0o755)
    settings = Settings(
        data_dir=tmp / "data",
        model="replay/hello-api",
        port_range_start=base,
        port_range_end=base + 19,
        health_timeout_s=15,
        deploy_timeout_s=120,
        test_timeout_s=60,
        release_root=releases,
    )
    api = start_api(settings, tmp / "api.log")
    try:
        timeout = httpx.Timeout(10, read=240)
        with httpx.Client(
            base_url=api.base_url, headers=api.headers("operator"), trust_env=False, timeout=timeout
        ) as c:
            thread_id = c.post("/threads").json()["thread_id"]
            with c.stream("POST", f"/threads/{thread_id}/messages", json={"text": HELLO}) as response:
                assert response.status_code == 200, response.read().decode()
                events = list(parse_sse(response.iter_lines()))
        asked = [data for kind, data in events if kind == "interrupt"]
        assert len(asked) == 1 and asked[0]["payload"]["kind"] == "deploy_approval", events
        yield Served(api, settings, thread_id, asked[0]["interrupt_id"])
        assert "Traceback" not in api.log.read_text(), api.log.read_text()[-4000:]
    finally:
        try:
            asyncio.run(stop_service(settings, "hello-api"))
        finally:
            stop_api(api)
            shutil.rmtree(releases, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser: Browser, served: Served, role: str) -> tuple[BrowserContext, Page]:
    """A fresh browser context signed in with ``role``'s key through the sign-in form; its page shows Projects."""
    context = browser.new_context(base_url=served.api.base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    first = page.goto("/")
    assert first is not None and first.status == 401, "nobody is signed in yet"
    page.fill("#key", served.api.keys[role])
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#identity")).to_have_text(f"token:{role}", timeout=15_000)
    return context, page


def session_of(served: Served, role: str) -> tuple[httpx.Client, str]:
    """An httpx client signed in with ``role``'s key (its cookie jar holds the session) and the session's CSRF token."""
    client = httpx.Client(base_url=served.api.base_url, trust_env=False, timeout=30)
    signed = client.post("/console/sign-in", json={"key": served.api.keys[role], "next": "/"})
    assert signed.status_code == 200 and signed.headers["hx-redirect"] == "/", signed.text
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "every page has the sign-out form, with the session's CSRF token"
    return client, found.group(1)


def test_a_wrong_key_cannot_sign_in(served: Served, browser: Browser) -> None:
    context = browser.new_context(base_url=served.api.base_url)
    page = context.new_page()
    page.goto("/console/sign-in")
    page.fill("#key", WRONG_KEY)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#flash")).to_have_text("unknown or revoked API key")
    assert [c for c in context.cookies() if c["name"] == COOKIE] == []
    assert page.goto("/") is not None and page.locator("h1").text_content() == "Sign in"
    context.close()

    refused = httpx.post(f"{served.api.base_url}/console/sign-in", json={"key": WRONG_KEY}, trust_env=False)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    anonymous = httpx.get(f"{served.api.base_url}/", headers={"Accept": "text/html"}, trust_env=False)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert 'id="sign-in"' in anonymous.text


def test_the_session_cookie_is_http_only_and_same_site_strict(served: Served, browser: Browser) -> None:
    signed = httpx.post(
        f"{served.api.base_url}/console/sign-in", json={"key": served.api.keys["viewer"]}, trust_env=False
    )
    assert signed.status_code == 200
    header = signed.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")}
    assert attributes["httponly"] and attributes["samesite"].lower() == "samesite=strict", header
    assert attributes["path"] == "Path=/" and "secure" not in attributes, "plain http: no Secure"
    assert served.api.keys["viewer"] not in header and served.api.keys["viewer"][5:20] not in header

    context, page = sign_in(browser, served, "viewer")
    cookies = [c for c in context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict", cookies
    assert COOKIE not in page.evaluate("document.cookie"), "no script on the page can read the session"
    context.close()


def test_a_viewer_and_an_operator_see_no_approve_button(served: Served, browser: Browser) -> None:
    assert [p["id"] for p in served.pending()] == [served.interrupt_id]

    context, page = sign_in(browser, served, "viewer")
    expect(page.locator('tr[data-project="hello-api"]')).to_be_visible()
    page.goto("/console/inbox")
    expect(page.locator("h1")).to_contain_text("Inbox")
    assert page.locator("button", has_text="Approve").count() == 0
    context.close()

    context, page = sign_in(browser, served, "operator")  # the thread's owner: sees the question, may not approve
    page.goto("/console/inbox")
    card = page.locator(f'article[data-interrupt="{served.interrupt_id}"]')
    expect(card).to_contain_text("needs a higher role")
    assert page.locator("button", has_text="Approve").count() == 0
    context.close()

    for role, why in (("viewer", "needs the operator role"), ("operator", "needs the approver role")):
        client, csrf = session_of(served, role)
        with closing(client):
            body = {"csrf": csrf, "interrupt_id": served.interrupt_id, "action": "approve"}
            forged = client.post(f"/console/threads/{served.thread_id}/answer", json=body)
        assert forged.status_code == 403 and why in forged.json()["detail"], (role, forged.text)
    assert [p["id"] for p in served.pending()] == [served.interrupt_id], "the refused answers changed nothing"


def test_posts_without_the_sessions_csrf_token_are_refused(served: Served) -> None:
    approve = {"interrupt_id": served.interrupt_id, "action": "approve"}
    path = f"/console/threads/{served.thread_id}/answer"
    client, csrf = session_of(served, "approver")
    other, other_csrf = session_of(served, "admin")
    with closing(client), closing(other):
        assert other_csrf != csrf
        for token in (None, "", "x" * 43, other_csrf, csrf[:-1]):
            body = approve if token is None else {**approve, "csrf": token}
            forged = client.post(path, json=body)
            assert forged.status_code == 403 and "CSRF" in forged.json()["detail"], (token, forged.text)
        as_form = client.post(path, data={**approve, "csrf": csrf})
        assert as_form.status_code == 415, "a form body (all a cross-site form can send) never reaches a route"
        assert client.post("/console/sign-out", json={}).status_code == 403
        assert client.get("/", headers={"Accept": "text/html"}).status_code == 200, "still signed in"
    assert [p["id"] for p in served.pending()] == [served.interrupt_id], "nothing was answered"


def test_an_approver_approves_from_the_inbox_and_reads_the_run(served: Served, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = sign_in(browser, served, "approver")
    page.goto("/console/inbox")
    card = page.locator(f'article[data-interrupt="{served.interrupt_id}"]')
    expect(card).to_contain_text("hello-api")
    expect(card).to_contain_text("4 passed")
    page.screenshot(path=str(SHOTS / "inbox.png"), full_page=True)

    followed: list[str] = []
    page.on("request", lambda r: followed.append(r.url) if "/live" in r.url else None)
    card.locator("button", has_text="Approve").click()
    page.wait_for_url(f"**/console/threads/{served.thread_id}")
    expect(page.locator("#run-state")).to_have_text("done", timeout=150_000)
    # The page follows the live part's event stream while the run goes (unless the run ended before it loaded):
    # it never polls.
    assert all(u.endswith("/live/stream") for u in followed), f"the live part streams, it does not poll: {followed}"
    client, _ = session_of(served, "approver")
    try:
        with client.stream("GET", f"/console/threads/{served.thread_id}/live/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            said = stream.read().decode()
    finally:
        client.close()
    assert said.startswith("event: live\n") and 'id="run-state"' in said and "\nevent: done\n" in said, said[:300]
    expect(page.locator("#project-status")).to_have_text("active")
    assert served.pending() == []

    page.goto("/")
    row = page.locator('tr[data-project="hello-api"]')
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("approved by token:approver")
    page.screenshot(path=str(SHOTS / "projects.png"), full_page=True)

    page.goto(f"/console/threads/{served.thread_id}")
    page.locator("#runs tr", has_text="message").locator("a").click()
    page.wait_for_url("**/console/runs/r-*")
    run_id = page.url.rsplit("/", 1)[-1]
    with served.db() as db:
        nodes = db.execute("SELECT node, path, duration_ms FROM node_run WHERE run_id = ?", (run_id,)).fetchall()
        tokens, cost = db.execute(
            "SELECT SUM(prompt_tokens + completion_tokens), SUM(cost_usd) FROM llmcall WHERE run_id = ?", (run_id,)
        ).fetchone()
    assert nodes and tokens, "the first run ran nodes and called the model"
    expect(page.locator("#waterfall tbody tr")).to_have_count(len(nodes))
    expect(page.locator("#tokens")).to_have_text(f"{tokens:,}")
    expect(page.locator("#cost")).to_have_text(usd(cost or 0.0))
    slowest = page.locator("#waterfall tr.slowest")
    expect(slowest).to_have_count(1)
    leaves = [n for n in nodes if not any(p[1] == _label(n) or p[1].startswith(_label(n) + "/") for p in nodes)]
    assert _label(max(leaves, key=lambda n: n[2])) in (slowest.locator("td.label").text_content() or "")
    page.screenshot(path=str(SHOTS / "run-waterfall.png"), full_page=True)

    page.goto("/console/projects/hello-api")
    expect(page.locator("#deployments")).to_contain_text("succeeded")
    expect(page.locator("#trail")).to_contain_text("active")
    expect(page.locator("ol.phases")).to_contain_text("COMPLETE")
    page.goto("/console/threads")
    expect(page.locator("#threads")).to_contain_text(served.thread_id)
    page.goto("/console/servers")
    expect(page.locator("#servers")).to_contain_text("localhost")
    assert page.goto("/console/incidents") is not None and page.locator("h1").text_content() == "Incidents"
    context.close()


def _label(node: tuple[str, str, float]) -> str:
    return f"{node[1]}/{node[0]}" if node[1] else node[0]
