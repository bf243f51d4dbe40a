"""Console pages: sign-in and sign-out, projects, a project, incidents, servers, and the console's static files.

Every route declares its role rule (:mod:`api.console.access`) and stays out of the OpenAPI document. Pages answer
HTML; a refused POST answers JSON ``{"detail": ...}`` like the API (the page shows the sentence). Threads, the inbox
and runs are in :mod:`api.console.routes_threads`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import crud
from api.auth import Public
from api.console.access import CHALLENGE, SignInNeeded, Viewer
from api.console.pages import SECURITY_HEADERS, error_page, render
from api.console.session import COOKIE, check_csrf, clear_session_cookie, set_session_cookie, store_of
from api.console.views import health_of, phases_of, project_events, project_rows
from api.deps import RuntimeDep, SessionDep
from api.schemas import ProjectPublic
from services.budgets import budget_of
from services.identities import authenticate
from services.lifecycle import deployments_of
from services.secrets import UnknownProject, secret_status

router = APIRouter(include_in_schema=False)

STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "htmx.LICENSE.txt": "text/plain; charset=utf-8",
}
"""The files ``/console/static/{name}`` serves, with their media types; any other name is a 404."""

ProjectName = Annotated[str, Path(max_length=64)]


class SignInForm(BaseModel):
    """The sign-in form: an API key, and the console page to go to after."""

    key: str = Field(default="", max_length=200)
    next: str = Field(default="/", max_length=2000)


class CsrfForm(BaseModel):
    """A form that carries only its CSRF token (sign-out)."""

    csrf: str = Field(default="", max_length=200)


def local_path(target: str) -> str:
    """``target`` if it is a path on this site (``/...``, not ``//host`` nor a backslash trick), else ``/``."""
    if target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target and "\r" not in target:
        return target
    return "/"


def redirect(target: str) -> Response:
    """Send the browser to ``target``: HTMX follows ``HX-Redirect``; the body says where for anyone else."""
    return Response(f"see {target}\n", media_type="text/plain", headers={"HX-Redirect": target, **SECURITY_HEADERS})


async def sign_in_needed(request: Request, exc: Exception) -> Response:
    """Answer a :class:`SignInNeeded`: the sign-in page (401) to a browser, JSON ``{"detail"}`` to anyone else.

    An HTMX request (a poll after the session ended) is sent to the sign-in page with ``HX-Redirect``.
    """
    assert isinstance(exc, SignInNeeded)
    next_page = local_path(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    if request.headers.get("hx-request"):
        target = f"/console/sign-in?next={quote(next_page, safe='/')}"
        return Response(status_code=401, headers={**CHALLENGE, "HX-Redirect": target})
    if "text/html" in request.headers.get("accept", ""):
        page = render(request, None, "sign_in.html", status_code=401, next=next_page, message=exc.detail)
        page.headers.update(CHALLENGE)
        return page
    return JSONResponse({"detail": exc.detail}, status_code=401, headers=CHALLENGE)


@router.get("/console/static/{name}", dependencies=[Public])
async def static_file(name: Annotated[str, Path(max_length=64)]) -> Response:
    """One of the console's static files (:data:`STATIC`); 404 for any other name."""
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return Response(_static_bytes(name), media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


@cache
def _static_bytes(name: str) -> bytes:
    return resources.files("api.console").joinpath("static", name).read_bytes()


@router.get("/console/sign-in", dependencies=[Public])
async def sign_in_page(
    request: Request, next_page: Annotated[str, Query(alias="next", max_length=2000)] = "/"
) -> Response:
    """The sign-in form: paste an API key."""
    return render(request, None, "sign_in.html", next=local_path(next_page), message="")


@router.post("/console/sign-in", dependencies=[Public])
async def sign_in(request: Request, form: SignInForm, rt: RuntimeDep) -> Response:
    """Check the key as every API call does (:func:`services.identities.authenticate`), then start a session.

    200 with the session cookie and ``HX-Redirect`` to ``next``; 401 for an unknown or revoked key; 422 for none.
    """
    if not form.key.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "paste an API key (orch_...)")
    identity = await authenticate(rt.db, form.key.strip())
    if identity is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=CHALLENGE)
    store = store_of(request)
    store.end(request.cookies.get(COOKIE))  # a sign-in always gets a new session id (no session fixation)
    session_id, _ = store.create(identity)
    response = redirect(local_path(form.next))
    set_session_cookie(request, response, session_id)
    return response


@router.post("/console/sign-out")
async def sign_out(request: Request, form: CsrfForm, who: Viewer) -> Response:
    """End the session (its cookie is cleared) and go to the sign-in page."""
    check_csrf(request, form.csrf)
    store_of(request).end(request.cookies.get(COOKIE))
    response = redirect("/console/sign-in")
    clear_session_cookie(request, response)
    return response


@router.get("/")
async def projects_page(request: Request, session: SessionDep, who: Viewer) -> Response:
    """Projects: status, URL and health, last deploy, open incidents, budget spent."""
    return render(request, who, "projects.html", rows=await project_rows(session), nav="projects")


@router.get("/console/projects/{name}")
async def project_page(
    name: ProjectName, request: Request, rt: RuntimeDep, session: SessionDep, who: Viewer
) -> Response:
    """A project: its facts, deployments, phases passed, secrets by name, and its audit trail as a timeline."""
    row = await crud.get_project(session=session, name=name)
    if row is None or row[0].id is None:
        return error_page(request, who, 404, f"unknown project {name!r}")
    project, server, live = row
    public = ProjectPublic.from_row(project, server, live, budget=await budget_of(session, project.id or 0))
    try:
        secrets, missing = await secret_status(rt.db, name)
    except UnknownProject:
        secrets, missing = [], []
    incidents = await crud.list_incidents(session=session, open_only=True, limit=500)
    mine = [i for i in incidents if i.subject_type == "project" and i.subject_id == project.id]
    return render(
        request,
        who,
        "project.html",
        p=public,
        health=health_of(project, mine),
        incidents=mine,
        deployments=await deployments_of(rt.db, name),
        phases=await phases_of(rt, project.thread_id),
        secrets=secrets,
        missing=missing,
        events=await project_events(session, project.id or 0),
        nav="projects",
    )


@router.get("/console/incidents")
async def incidents_page(
    request: Request,
    session: SessionDep,
    who: Viewer,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> Response:
    """Incidents, newest first (only the open ones with ``?open=true``)."""
    rows = await crud.list_incidents(session=session, open_only=open_only, limit=500)
    return render(request, who, "incidents.html", incidents=rows, open_only=open_only, nav="incidents")


@router.get("/console/servers")
async def servers_page(request: Request, session: SessionDep, who: Viewer) -> Response:
    """Servers: address, status, port range, failures, when last seen."""
    return render(request, who, "servers.html", servers=await crud.list_servers(session=session), nav="servers")
