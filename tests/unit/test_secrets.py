"""Project secrets: encryption at rest, the key (file or environment, rotation), names, and the graph's checks."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError
from sqlalchemy import text
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Project, Secret
from nodes import devops
from nodes.approval import request_deploy_approval
from nodes.po_tools import get_project_status
from nodes.schemas import Design
from nodes.zavhoz import check_secrets
from services import secrets
from services.secrets import (
    InvalidSecretName,
    SecretDecryptError,
    SecretsInputError,
    SecretsKeyError,
    ServiceEnv,
    UnknownProject,
)
from tests.unit.test_nodes import ScriptedLLM, deploy_state, fake_playbook, make_project, runtime

VALUE = "postgres://app:s3cr3t-VALUE@127.0.0.1/app"


def with_key(settings: Settings, *keys: bytes) -> Settings:
    return settings.model_copy(update={"secrets_key": SecretStr(",".join(k.decode() for k in keys))})


async def project_row(db: Database, pid: int) -> Project:
    async with db.session() as s:
        row = await s.get(Project, pid)
    assert row is not None
    return row


async def test_round_trip_stores_only_ciphertext(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.verified)
    keys = secrets.load_keys(settings)

    assert await secrets.set_secret(db, "hello-api", "DATABASE_URL", VALUE, keys=keys, actor="cli:test") is True
    assert await secrets.set_secret(db, "hello-api", "API_TOKEN", "t0ken", keys=keys, actor="cli:test") is True
    assert (
        await secrets.set_secret(db, "hello-api", "API_TOKEN", "t0ken-2", keys=keys, actor="cli:test") is False
    )  # replaced

    assert project.id is not None
    assert await secrets.deploy_env(db, project.id, keys=keys) == {
        "DATABASE_URL": VALUE,
        "API_TOKEN": "t0ken-2",
    }
    assert [i.name for i in await secrets.list_secret_names(db, "hello-api")] == ["API_TOKEN", "DATABASE_URL"]
    async with db.session() as s:
        raw = (await s.exec(text("SELECT value_encrypted FROM secret"))).all()  # type: ignore[call-overload]
    assert len(raw) == 2 and all("s3cr3t" not in r[0] and "t0ken" not in r[0] for r in raw)
    db_bytes = b"".join(p.read_bytes() for p in settings.data_dir.glob("orchestrator.db*"))
    assert b"s3cr3t-VALUE" not in db_bytes and b"t0ken" not in db_bytes

    assert await secrets.delete_secret(db, "hello-api", "API_TOKEN", actor="cli:test") is True
    assert await secrets.delete_secret(db, "hello-api", "API_TOKEN", actor="cli:test") is False
    assert [i.name for i in await secrets.list_secret_names(db, "hello-api")] == ["DATABASE_URL"]


async def test_key_file_is_created_0600_once_and_a_readable_one_is_refused(settings: Settings) -> None:
    path = secrets.key_file_path(settings)
    assert not path.exists()
    first = secrets.load_keys(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = secrets.encrypt_value(first, "v")
    again = secrets.load_keys(settings)
    assert secrets.decrypt_value(again, token) == "v", "the same key is read back, not a new one"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".secrets-key-")] == []

    os.chmod(path, 0o644)
    with pytest.raises(SecretsKeyError, match=r"readable by group or others \(mode 0644\).*chmod 600"):
        secrets.load_keys(settings)
    os.chmod(path, 0o640)
    with pytest.raises(SecretsKeyError):
        secrets.load_keys(settings)
    os.chmod(path, 0o600)
    assert secrets.decrypt_value(secrets.load_keys(settings), token) == "v"


def test_a_bad_key_is_named_without_being_shown(settings: Settings) -> None:
    bad = settings.model_copy(update={"secrets_key": SecretStr(f"{Fernet.generate_key().decode()},nope")})
    with pytest.raises(SecretsKeyError, match="key #2 in ORCH_SECRETS_KEY is not a Fernet key") as exc:
        secrets.load_keys(bad)
    assert "nope" not in str(exc.value)
    with pytest.raises(SecretsKeyError, match="holds no key"):
        secrets.load_keys(settings.model_copy(update={"secrets_key": SecretStr(" , ")}))
    assert not secrets.key_file_path(settings).exists(), "a key from the environment creates no key file"
    secrets.load_keys(settings.model_copy(update={"secrets_key": SecretStr("")}))  # empty means unset
    assert secrets.key_file_path(settings).exists()


async def test_wrong_key_is_a_clear_error_without_ciphertext(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.verified)
    assert project.id is not None
    await secrets.set_secret(db, "hello-api", "API_TOKEN", "t0ken", keys=secrets.load_keys(settings), actor="cli:test")
    async with db.session() as s:
        token = (await s.exec(select(Secret))).one().value_encrypted
    other = secrets.load_keys(with_key(settings, Fernet.generate_key()))

    with pytest.raises(SecretDecryptError) as exc:
        await secrets.deploy_env(db, project.id, keys=other)
    assert "secret API_TOKEN cannot be decrypted with the configured key(s)" in str(exc.value)
    assert token not in str(exc.value) and token[:20] not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__, "no chained InvalidToken traceback"


async def test_multifernet_rotation(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.verified)
    assert project.id is not None
    old, new = Fernet.generate_key(), Fernet.generate_key()
    await secrets.set_secret(
        db, "hello-api", "API_TOKEN", "t0ken", keys=secrets.load_keys(with_key(settings, old)), actor="cli:test"
    )

    both = secrets.load_keys(with_key(settings, new, old))  # the new key first: it encrypts; both decrypt
    assert await secrets.deploy_env(db, project.id, keys=both) == {"API_TOKEN": "t0ken"}
    with pytest.raises(SecretDecryptError):
        await secrets.deploy_env(db, project.id, keys=secrets.load_keys(with_key(settings, new)))

    assert await secrets.rotate_secrets(db, keys=both, actor="cli:test") == 1
    only_new = secrets.load_keys(with_key(settings, new))
    assert await secrets.deploy_env(db, project.id, keys=only_new) == {"API_TOKEN": "t0ken"}
    with pytest.raises(SecretDecryptError):
        await secrets.deploy_env(db, project.id, keys=secrets.load_keys(with_key(settings, old)))
    with pytest.raises(SecretDecryptError, match="nothing was re-encrypted"):
        await secrets.rotate_secrets(
            db, keys=secrets.load_keys(with_key(settings, Fernet.generate_key())), actor="cli:test"
        )


@pytest.mark.parametrize("name", ["database_url", "1ABC", "A-B", "", "A B", "X" * 129, "PORT", "PATH", "ÄPI"])
async def test_bad_names_are_refused(settings: Settings, db: Database, name: str) -> None:
    await make_project(db, ProjectStatus.verified)
    with pytest.raises(InvalidSecretName):
        await secrets.set_secret(db, "hello-api", name, "v", keys=secrets.load_keys(settings), actor="cli:test")
    async with db.session() as s:
        assert (await s.exec(select(Secret))).all() == []


async def test_unknown_project_and_bad_values_are_refused(settings: Settings, db: Database) -> None:
    await make_project(db, ProjectStatus.verified)
    keys = secrets.load_keys(settings)
    with pytest.raises(UnknownProject, match="no project named 'nope'"):
        await secrets.set_secret(db, "nope", "API_TOKEN", "v", keys=keys, actor="cli:test")
    with pytest.raises(UnknownProject):
        await secrets.list_secret_names(db, "nope")
    for bad in ("", "a\0b", "x" * (secrets.MAX_VALUE_BYTES + 1)):
        with pytest.raises(SecretsInputError):
            await secrets.set_secret(db, "hello-api", "API_TOKEN", bad, keys=keys, actor="cli:test")
    assert secrets.validate_secret_name("_PRIVATE_1") == "_PRIVATE_1"


def test_env_file_quotes_for_sh_and_digest_hides_values(settings: Settings) -> None:
    keys = secrets.load_keys(settings)
    env = {"B": "it's $HOME `id`", "A": "two\nlines"}
    assert secrets.env_file_text(env) == "A='two\nlines'\nB='it'\"'\"'s $HOME `id`'\n"
    digest = secrets.env_digest(env, keys)
    assert len(digest) == 32 and digest == secrets.env_digest(dict(env), keys)
    assert digest != secrets.env_digest({**env, "B": "other"}, keys)
    assert digest != secrets.env_digest(env, secrets.load_keys(with_key(settings, Fernet.generate_key())))
    assert secrets.env_digest({}, keys) == ""
    shown = repr(ServiceEnv.of(env, keys)) + str(ServiceEnv.of(env, keys)) + repr(keys)
    assert "lines" not in shown and "HOME" not in shown and "['A', 'B']" in shown


def test_design_declares_secret_names_and_defaults_to_none() -> None:
    base: dict[str, Any] = {
        "summary": "s",
        "acceptance_criteria": [{"id": "AC1", "text": "it answers"}],
        "files": [{"path": "app.py", "purpose": "p"}],
    }
    assert Design.model_validate(base).secrets == []
    design = Design.model_validate({**base, "secrets": ["DATABASE_URL", "API_TOKEN", "PORT", "API_TOKEN"]})
    assert design.secrets == ["API_TOKEN", "DATABASE_URL"], "sorted, unique, PORT comes from the deploy"
    with pytest.raises(ValidationError, match="environment variable names"):
        Design.model_validate({**base, "secrets": ["database-url"]})


async def test_zavhoz_flags_missing_secrets_by_name(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.verified, required_secrets=["API_TOKEN", "DATABASE_URL"])
    assert project.id is not None
    rt = runtime(settings, db, ScriptedLLM())
    await secrets.set_secret(db, "hello-api", "API_TOKEN", "t0ken", keys=secrets.load_keys(settings), actor="cli:test")

    out = await check_secrets({"project_id": project.id, "project_name": "hello-api"}, rt)  # type: ignore[arg-type]
    assert out == {"missing_secrets": ["DATABASE_URL"]}
    assert (await project_row(db, project.id)).setup_required is True

    await secrets.set_secret(db, "hello-api", "DATABASE_URL", VALUE, keys=secrets.load_keys(settings), actor="cli:test")
    out = await check_secrets({"project_id": project.id, "project_name": "hello-api"}, rt)  # type: ignore[arg-type]
    assert out == {"missing_secrets": []}


async def test_approval_lists_missing_secrets_and_the_deploy_refuses_then_deploys(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, state = await deploy_state(settings, db, monkeypatch)
    assert project.id is not None
    async with db.session() as s:
        row = await s.get(Project, project.id)
        assert row is not None
        row.required_secrets = ["API_TOKEN"]
        s.add(row)
    rt = runtime(settings, db, ScriptedLLM())
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr("nodes.approval.interrupt", lambda payload: asked.append(payload) or {"decision": "approve"})

    await request_deploy_approval(state, rt)  # type: ignore[arg-type]
    assert asked[0]["missing_secrets"] == ["API_TOKEN"]
    assert "orchestrator secret-set hello-api API_TOKEN" in asked[0]["question"]

    calls: list[str] = []
    envs: list[Any] = []

    async def run_deploy(settings: Settings, *, env: ServiceEnv, **kw: Any) -> Any:
        envs.append(env)
        return await fake_playbook(True, calls)(settings, **kw)

    monkeypatch.setattr(devops, "run_deploy", run_deploy)
    refused = await devops.deploy_project(state, rt)  # type: ignore[arg-type]
    assert calls == [] and refused["deployment"]["missing_secrets"] == ["API_TOKEN"]
    assert "orchestrator secret-set hello-api API_TOKEN" in refused["deployment"]["summary"]
    assert "orchestrator secret-set hello-api API_TOKEN" in refused["messages"][0].content
    row = await project_row(db, project.id)
    assert row.status == ProjectStatus.verified and row.setup_required is True

    from graphs.product_owner import route_deploy

    assert route_deploy({**state, **refused}) == "request_deploy_approval"  # type: ignore[typeddict-item]

    await secrets.set_secret(db, "hello-api", "API_TOKEN", "t0ken", keys=secrets.load_keys(settings), actor="cli:test")
    await request_deploy_approval(state, rt)  # type: ignore[arg-type]
    assert asked[1]["missing_secrets"] == [] and "secret-set" not in asked[1]["question"]
    done = await devops.deploy_project(state, rt)  # type: ignore[arg-type]
    assert done["deployment"]["status"] == "succeeded" and calls == ["c" * 40]
    assert envs[0].names == ("API_TOKEN",) and "t0ken" in envs[0].text
    assert route_deploy({**state, **done}) == "settle_project"  # type: ignore[typeddict-item]
    assert (await project_row(db, project.id)).setup_required is False
    assert "t0ken" not in repr(done)


async def test_a_project_without_secrets_needs_no_key(settings: Settings, db: Database) -> None:
    project = await make_project(db, ProjectStatus.verified)
    assert project.id is not None
    env = await secrets.service_env(settings.model_copy(update={"secrets_key": SecretStr("broken")}), db, project.id)
    assert not env and env.digest == "" and env.text == ""
    assert not secrets.key_file_path(settings).exists()
    assert await secrets.missing_secrets(db, project.id) == []
    assert await secrets.missing_secrets(db, project.id, ["B", "A"]) == ["A", "B"]
    assert isinstance(secrets.key_file_path(settings), Path)


async def test_api_shows_names_and_missing_never_values(settings: Settings, db: Database) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.enums import AccessRole
    from services.identities import create_token

    await make_project(db, ProjectStatus.verified, required_secrets=["API_TOKEN", "DATABASE_URL"])
    await secrets.set_secret(db, "hello-api", "DATABASE_URL", VALUE, keys=secrets.load_keys(settings), actor="cli:test")

    key = await create_token(db, "watcher", AccessRole.viewer, actor="cli:test")

    def call() -> tuple[Any, Any]:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:  # in process: no socket
            client.headers["Authorization"] = f"Bearer {key}"
            return client.get("/projects/hello-api/secrets"), client.get("/projects/nope/secrets")

    found, unknown = await asyncio.to_thread(call)
    assert found.status_code == 200 and "s3cr3t" not in found.text
    body = found.json()
    assert body["project"] == "hello-api" and body["missing"] == ["API_TOKEN"]
    assert [s["name"] for s in body["secrets"]] == ["DATABASE_URL"] and set(body["secrets"][0]) == {
        "name",
        "updated_at",
    }
    assert unknown.status_code == 404 and "unknown project 'nope'" in unknown.json()["detail"]


async def test_po_status_tool_names_missing_secrets_and_the_command(settings: Settings, db: Database) -> None:
    await make_project(db, ProjectStatus.verified, required_secrets=["API_TOKEN"], setup_required=True)
    status = json.loads(await get_project_status(db, "hello-api"))
    assert status["missing_secrets"] == ["API_TOKEN"] and status["setup_required"] is True
    assert status["set_missing_secrets_with"] == "orchestrator secret-set hello-api API_TOKEN"
    await secrets.set_secret(
        db, "hello-api", "API_TOKEN", "t0ken-VALUE", keys=secrets.load_keys(settings), actor="cli:test"
    )
    raw = await get_project_status(db, "hello-api")
    assert json.loads(raw)["missing_secrets"] == [] and "set_missing_secrets_with" not in raw and "t0ken" not in raw
