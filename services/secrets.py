"""Project secrets: environment variables of a project's service, Fernet-encrypted in the database.

Only names travel: listings, graph state, approval payloads and logs see names, never values. A value is
decrypted only by :func:`deploy_env`, for a deploy (which hands it over through a private file, see
services/deploys.py).

The key: ``ORCH_SECRETS_KEY``, one or several comma-separated Fernet keys (a ``MultiFernet``: the first
encrypts, every one decrypts, so a new key goes first and the old one stays after it until
:func:`rotate_secrets` has re-encrypted everything). Without it, ``<data_dir>/secrets.key`` (one key a line, the
same rules), created 0600 on first use; a key file that group or others may read is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.keyfile import KeyFileError, create_once, read_private
from core.settings import Settings
from models.tables import Project, Secret, utcnow
from services.identities import record

SECRET_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
RESERVED_NAMES = frozenset({"PORT", "PATH", "HOME", "PWD", "SHELL", "USER", "PYTHONUNBUFFERED", "PYTHONPATH"})
"""Set by the deploy itself or by the shell that starts the service: a secret cannot override them."""
MAX_VALUE_BYTES = 64 * 1024
KEY_FILE_NAME = "secrets.key"


class SecretsError(RuntimeError):
    """Something about secrets went wrong; the message says what and what to do (never a value or ciphertext)."""


class SecretsInputError(SecretsError, ValueError):
    """Bad input (unknown project, bad name, bad value); nothing was changed."""


class InvalidSecretName(SecretsInputError):
    """The name is not an environment variable name this project accepts."""


class UnknownProject(SecretsInputError):
    """No project has this name."""


class SecretsKeyError(SecretsError):
    """The key is unusable: malformed, or a key file others may read."""


class SecretDecryptError(SecretsError):
    """A stored value does not decrypt with the configured key(s)."""


@dataclass(frozen=True, repr=False)
class Keyring:
    """The keys in force; ``repr`` shows no key.

    Attributes:
        multi: encrypts with the first key, decrypts with any.
        mac_key: derived from the first key; keys :func:`env_digest`.
        count: how many keys.
    """

    multi: MultiFernet
    mac_key: bytes
    count: int

    def __repr__(self) -> str:
        return f"Keyring(<{self.count} key(s)>)"


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a secret: its name and when it was set."""

    name: str
    created_at: datetime
    updated_at: datetime


def validate_secret_name(name: str) -> str:
    """Return ``name`` if it is a usable environment variable name, else raise.

    Raises:
        InvalidSecretName: with what was wrong and an example of a valid name.
    """
    if not SECRET_NAME_RE.fullmatch(name):
        raise InvalidSecretName(
            f"secret name {name!r} is not an environment variable name: use upper-case letters, digits and "
            "underscores, not starting with a digit, at most 128 characters (e.g. DATABASE_URL)"
        )
    if name in RESERVED_NAMES:
        raise InvalidSecretName(f"secret name {name!r} is reserved (set by the deploy itself); choose another name")
    return name


def _validate_value(value: str) -> str:
    if not value:
        raise SecretsInputError("the secret value is empty; nothing was stored")
    if "\0" in value:
        raise SecretsInputError("the secret value contains a NUL byte, which no environment variable can hold")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise SecretsInputError(f"the secret value is longer than {MAX_VALUE_BYTES} bytes")
    return value


def key_file_path(settings: Settings) -> Path:
    """Where the key file lives when ``ORCH_SECRETS_KEY`` is not set."""
    return settings.data_dir.resolve() / KEY_FILE_NAME


def _fernets(keys: Iterable[str], origin: str) -> Keyring:
    found = [k.strip() for k in keys if k.strip()]
    if not found:
        raise SecretsKeyError(f"{origin} holds no key; generate one with: {_GENERATE}")
    fernets = []
    for i, key in enumerate(found, 1):
        try:
            fernets.append(Fernet(key.encode()))
        except (ValueError, TypeError):
            raise SecretsKeyError(
                f"key #{i} in {origin} is not a Fernet key (32 url-safe base64-encoded bytes); "
                f"generate one with: {_GENERATE}"
            ) from None
    mac_key = hashlib.sha256(b"orchestrator env digest\0" + found[0].encode()).digest()
    return Keyring(multi=MultiFernet(fernets), mac_key=mac_key, count=len(fernets))


_GENERATE = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def _read_key_file(path: Path) -> Keyring:
    try:
        text = read_private(path, "secrets key")
    except KeyFileError as exc:
        raise SecretsKeyError(str(exc)) from exc
    return _fernets(text.splitlines(), str(path))


def load_keys(settings: Settings) -> Keyring:
    """The keys in force: ``ORCH_SECRETS_KEY`` if set and not empty, else the data dir's key file (made on first use).

    Raises:
        SecretsKeyError: a malformed key, or a key file group or others may read (or another user owns).
    """
    configured = settings.secrets_key.get_secret_value() if settings.secrets_key is not None else ""
    if configured.strip():  # set and not empty (compose passes an unset variable as "")
        return _fernets(configured.split(","), "ORCH_SECRETS_KEY")
    path = key_file_path(settings)
    if not path.exists():
        settings.ensure_data_dir()
        create_once(path, Fernet.generate_key().decode())
    return _read_key_file(path)


def encrypt_value(keys: Keyring, value: str) -> str:
    """Encrypt ``value`` with the first key; returns the Fernet token as text."""
    return keys.multi.encrypt(value.encode()).decode()


def decrypt_value(keys: Keyring, token: str, *, what: str = "a secret") -> str:
    """Decrypt a Fernet token with any of the keys.

    Raises:
        SecretDecryptError: no key opens it; the message names ``what``, never the token.
    """
    try:
        return keys.multi.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptError(
            f"{what} cannot be decrypted with the configured key(s): ORCH_SECRETS_KEY or the key file changed. "
            "Put the key it was stored with back (after a new one, to rotate), or set the secret again"
        ) from None


async def _project(db: Database, project: str) -> Project:
    async with db.session() as s:
        row = (await s.exec(select(Project).where(Project.name == project))).first()
    if row is None or row.id is None:
        raise UnknownProject(f"no project named {project!r} (see `orchestrator projects`)")
    return row


async def set_secret(db: Database, project: str, name: str, value: str, *, keys: Keyring, actor: str) -> bool:
    """Store (or replace) secret ``name`` of ``project``, encrypted; returns True if it is new.

    The trail gets ``secret_set`` on the project, naming ``actor`` and the secret (never its value).

    Raises:
        UnknownProject: no such project.
        InvalidSecretName: ``name`` is not an accepted environment variable name.
        SecretsInputError: the value is empty, holds a NUL byte or is too long.
    """
    validate_secret_name(name)
    token = encrypt_value(keys, _validate_value(value))
    row = await _project(db, project)
    async with db.session() as s:
        found = (await s.exec(select(Secret).where(Secret.project_id == row.id, Secret.name == name))).first()
        if found is None:
            s.add(Secret(project_id=row.id or 0, name=name, value_encrypted=token))
        else:
            found.value_encrypted, found.updated_at = token, utcnow()
            s.add(found)
        why = f"secret {name} {'stored' if found is None else 'replaced'}"
        await record(s, subject_type="project", subject_id=row.id or 0, action="secret_set", reason=why, actor=actor)
    return found is None


async def delete_secret(db: Database, project: str, name: str, *, actor: str) -> bool:
    """Delete secret ``name`` of ``project``; returns whether there was one (a deletion goes on the trail).

    Raises:
        UnknownProject: no such project.
        InvalidSecretName: ``name`` is not an accepted environment variable name.
    """
    validate_secret_name(name)
    row = await _project(db, project)
    async with db.session() as s:
        found = (await s.exec(select(Secret).where(Secret.project_id == row.id, Secret.name == name))).first()
        if found is not None:
            await s.delete(found)
            why = f"secret {name} removed"
            await record(
                s, subject_type="project", subject_id=row.id or 0, action="secret_removed", reason=why, actor=actor
            )
    return found is not None


async def list_secret_names(db: Database, project: str) -> list[SecretInfo]:
    """The names of ``project``'s secrets with their times, sorted by name (never a value).

    Raises:
        UnknownProject: no such project.
    """
    row = await _project(db, project)
    async with db.session() as s:
        found = (await s.exec(select(Secret).where(Secret.project_id == row.id).order_by(col(Secret.name)))).all()
    return [SecretInfo(name=r.name, created_at=r.created_at, updated_at=r.updated_at) for r in found]


async def secret_status(db: Database, project: str) -> tuple[list[SecretInfo], list[str]]:
    """``project``'s stored secrets (names and times) and the required names not stored yet.

    Raises:
        UnknownProject: no such project.
    """
    row = await _project(db, project)
    return await list_secret_names(db, project), await missing_secrets(db, row.id or 0)


async def missing_secrets(db: Database, project_id: int, required: Iterable[str] | None = None) -> list[str]:
    """The names in ``required`` (default: the project's ``required_secrets``) that have no stored secret, sorted."""
    async with db.session() as s:
        if required is None:
            project = await s.get(Project, project_id)
            required = (project.required_secrets if project else None) or []
        stored = set((await s.exec(select(Secret.name).where(Secret.project_id == project_id))).all())
    return sorted(set(required) - stored)


async def flag_missing_secrets(db: Database, project_id: int) -> list[str]:
    """:func:`missing_secrets` of the project's required ones; when some are missing, set ``setup_required``."""
    missing = await missing_secrets(db, project_id)
    if missing:
        async with db.session() as s:
            flag = update(Project).where(col(Project.id) == project_id).values(setup_required=True)
            await s.exec(flag)  # type: ignore[call-overload]
    return missing


def secret_set_commands(project: str, names: Iterable[str]) -> str:
    """The exact commands that set ``names``, e.g. ``orchestrator secret-set hello-api API_TOKEN``, joined."""
    return "; ".join(f"orchestrator secret-set {project} {n}" for n in names)


def missing_message(project: str, names: list[str]) -> str:
    """Plain words: which secrets ``project`` lacks and how to set each (values are read from stdin or a prompt)."""
    return (
        f"{project} needs secret(s) that are not set: {', '.join(names)}. Set each with "
        f"`{secret_set_commands(project, names)}` (it reads the value from stdin or a hidden prompt, never from "
        "the command line), then approve the deploy again"
    )


async def deploy_env(db: Database, project_id: int, *, keys: Keyring) -> dict[str, str]:
    """Every stored secret of the project, decrypted, for a deploy: ``{NAME: value}``.

    Keep the result out of graph state, logs and extravars (see services/deploys.py).

    Raises:
        SecretDecryptError: a value does not decrypt with the configured key(s) (named, never shown).
    """
    async with db.session() as s:
        found = (await s.exec(select(Secret).where(Secret.project_id == project_id))).all()
    return {r.name: decrypt_value(keys, r.value_encrypted, what=f"secret {r.name}") for r in found}


async def rotate_secrets(db: Database, *, keys: Keyring, actor: str) -> int:
    """Re-encrypt every stored secret with the first key (after adding a new key in front); returns how many.

    The trail gets one ``secrets_rotated`` event per project touched, naming ``actor``.

    Raises:
        SecretDecryptError: a value opens with none of the keys (nothing is changed then).
    """
    async with db.session() as s:
        found = (await s.exec(select(Secret))).all()
        for r in found:
            try:
                r.value_encrypted = keys.multi.rotate(r.value_encrypted.encode()).decode()
            except InvalidToken:
                raise SecretDecryptError(
                    f"secret {r.name} of project #{r.project_id} opens with none of the configured keys; nothing "
                    "was re-encrypted. Keep the old key in ORCH_SECRETS_KEY (after the new one) while rotating"
                ) from None
            s.add(r)
        for project_id in sorted({r.project_id for r in found}):
            why = "secrets re-encrypted with the first configured key"
            await record(
                s, subject_type="project", subject_id=project_id, action="secrets_rotated", reason=why, actor=actor
            )
    return len(found)


def env_file_text(env: Mapping[str, str]) -> str:
    """``env`` as a POSIX sh file that ``set -a; . FILE`` exports: one ``NAME='value'`` line each, sorted."""
    return "".join(f"{validate_secret_name(k)}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


def env_digest(env: Mapping[str, str], keys: Keyring) -> str:
    """An opaque fingerprint of ``env`` (empty for none): changes when a value changes, reveals nothing of it.

    It is an HMAC keyed by the secrets key, so it can sit in extravars and on the target (the deploy compares
    it with the running service's to decide on a restart) without letting anyone test guesses of a value.
    """
    if not env:
        return ""
    return hmac.new(keys.mac_key, env_file_text(env).encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, repr=False)
class ServiceEnv:
    """A deploy's secrets as the playbook takes them: the env file's text and its opaque digest (``repr``: names).

    Attributes:
        names: the variable names, sorted.
        text: the env file (values in clear: keep it out of state, logs and extravars).
        digest: :func:`env_digest` of it ("" for none); the deploy restarts the service when it changes.
    """

    names: tuple[str, ...] = ()
    text: str = ""
    digest: str = ""

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"ServiceEnv(names={list(self.names)!r})"

    __str__ = __repr__

    @classmethod
    def of(cls, env: Mapping[str, str], keys: Keyring) -> ServiceEnv:
        """Build it from ``{NAME: value}``."""
        return cls(names=tuple(sorted(env)), text=env_file_text(env), digest=env_digest(env, keys))


async def service_env(settings: Settings, db: Database, project_id: int) -> ServiceEnv:
    """The project's stored secrets, decrypted, ready for ``services.deploys.run_deploy(env=...)``.

    Raises:
        SecretsKeyError: the key is unusable.
        SecretDecryptError: a value does not decrypt with the configured key(s).
    """
    async with db.session() as s:
        any_stored = (await s.exec(select(Secret.id).where(Secret.project_id == project_id))).first()
    if any_stored is None:
        return ServiceEnv()  # no key needed (and no key file created) for a project without secrets
    keys = load_keys(settings)
    return ServiceEnv.of(await deploy_env(db, project_id, keys=keys), keys)
