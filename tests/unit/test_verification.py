"""Signed verifications: sign/verify round trip, every refusal, the key (file or environment)."""

from __future__ import annotations

import dataclasses
import json
import stat
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from core.settings import Settings
from services import verification
from services.verification import Attestation, VerificationRefused

COMMIT = "abc1234" + "0" * 33
OTHER_COMMIT = "def5678" + "1" * 33
TREE = "7ee7ee7" + "2" * 33
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KEY = SecretStr("k" * 32)


def attestation(**changes: object) -> Attestation:
    base = Attestation(
        project="hello-api",
        project_id=1,
        commit=COMMIT,
        tree=TREE,
        tests_hash="ab" * 32,
        tests={"passed": 12, "failed": 0, "command": "pytest -q", "rounds": 2},
        contract_version="1.3",
        contract_digest="cd" * 32,
        mode="permissive",
        warnings=("tool shell used outside the allow-list",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture()
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"signing_key": KEY})


def check(settings: Settings, token: str | None, **changes: object) -> Attestation:
    args: dict = {"project": "hello-api", "project_id": 1, "commit": COMMIT, "tree": TREE, "now": NOW} | changes
    return verification.verify(settings, token, **args)


def test_sign_then_verify_round_trips_every_field(keyed: Settings) -> None:
    sent = attestation()
    token = verification.sign(keyed, sent, now=NOW + timedelta(microseconds=500))
    got = check(keyed, token)
    assert dataclasses.replace(got, issued_at=None, expires_at=None) == sent
    assert got.issued_at == NOW, "iat is whole seconds, aware UTC"
    assert got.expires_at == NOW + timedelta(seconds=keyed.verification_ttl_s)
    text = got.describe()
    assert "abc1234" in text and "1.3" in text and "12 passed, 0 failed" in text and "1 permissive-mode warning" in text
    assert "2024-06-08 12:00:00 UTC" in text
    claims = got.claims()
    assert json.loads(json.dumps(claims)) == claims
    assert (
        claims["commit"] == COMMIT
        and claims["issued_at"] == NOW.isoformat()
        and claims["warnings"] == list(sent.warnings)
    )
    assert "not signed yet" in sent.describe().lower()
    readable = jwt.decode(token, options={"verify_signature": False})
    assert readable["iss"] == "orchestrator" and readable["sub"] == "hello-api" and readable["commit"] == COMMIT


def test_decode_checks_against_the_clock(keyed: Settings) -> None:
    fresh = verification.sign(keyed, attestation())
    assert verification.decode(keyed, fresh).commit == COMMIT
    with pytest.raises(VerificationRefused, match=r"^expired at 2024-06-08 12:00:00 UTC"):
        verification.decode(keyed, verification.sign(keyed, attestation(), now=NOW))


def test_a_token_from_another_key_is_forged(keyed: Settings) -> None:
    token = verification.sign(keyed, attestation(), now=NOW)
    other = keyed.model_copy(update={"signing_key": SecretStr("o" * 32)})
    with pytest.raises(VerificationRefused, match="^forged or damaged: signature does not match$"):
        check(other, token)


def test_a_flipped_byte_in_the_payload_is_refused(keyed: Settings) -> None:
    header, payload, signature = verification.sign(keyed, attestation(), now=NOW).split(".")
    i = len(payload) // 2
    flipped = payload[:i] + ("A" if payload[i] != "A" else "B") + payload[i + 1 :]
    with pytest.raises(VerificationRefused, match="^forged or damaged: signature does not match$"):
        check(keyed, f"{header}.{flipped}.{signature}")


def test_an_unsigned_token_is_refused(keyed: Settings) -> None:
    unsigned = jwt.encode({"iss": "orchestrator", "sub": "hello-api", "iat": 1, "exp": 2}, "", algorithm="none")
    with pytest.raises(VerificationRefused, match="^forged or damaged: not signed with HS256"):
        check(keyed, unsigned)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"project": "other-api", "project_id": 2}, "token attests project hello-api (#1), not other-api (#2)"),
        ({"project_id": 7}, "token attests project hello-api (#1), not hello-api (#7)"),
        (
            {"commit": OTHER_COMMIT},
            "token attests commit abc1234, the deploy would check out def5678: a commit pushed after verification",
        ),
        ({"commit": COMMIT[:-1] + "f"}, f"token attests commit {COMMIT}, the deploy would check out {COMMIT[:-1]}f"),
        ({"tree": "9" * 40}, "token attests tree 7ee7ee7, commit abc1234 has tree 9999999"),
    ],
)
def test_another_project_commit_or_tree_is_refused_naming_both(
    keyed: Settings, changes: dict[str, object], message: str
) -> None:
    token = verification.sign(keyed, attestation(), now=NOW)
    with pytest.raises(VerificationRefused) as exc:
        check(keyed, token, **changes)
    assert str(exc.value).startswith(message)


def test_expiry_uses_now_and_can_be_waived_for_recovery(keyed: Settings) -> None:
    token = verification.sign(keyed, attestation(), now=NOW)
    later = NOW + timedelta(seconds=keyed.verification_ttl_s + 60)
    with pytest.raises(VerificationRefused, match=r"^expired at 2024-06-08 12:00:00 UTC \(issued 2024-06-01 12:00"):
        check(keyed, token, now=later)
    assert check(keyed, token, now=later, check_expiry=False).commit == COMMIT
    assert check(keyed, token, now=later - timedelta(seconds=120)).commit == COMMIT
    with pytest.raises(VerificationRefused, match="^issued in the future"):
        check(keyed, token, now=NOW - timedelta(hours=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        check(keyed, token, now=NOW.replace(tzinfo=None))


def test_no_token_and_garbage_are_refused(keyed: Settings) -> None:
    with pytest.raises(VerificationRefused, match="^commit abc1234 of hello-api was never verified"):
        check(keyed, None)
    with pytest.raises(VerificationRefused, match="^malformed: "):
        check(keyed, "not a token")
    with pytest.raises(VerificationRefused, match="^malformed: "):
        check(keyed, "a.b.c")


def test_a_genuine_token_with_bad_claims_is_malformed(keyed: Settings) -> None:
    key = verification.signing_key(keyed)
    base = {"iss": "orchestrator", "sub": "hello-api", "iat": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60}
    with pytest.raises(VerificationRefused, match="^malformed: claim 'project_id' is missing or not an integer"):
        check(keyed, jwt.encode(base | attestation().claims() | {"project_id": "1"}, key, algorithm="HS256"))
    with pytest.raises(VerificationRefused, match="^malformed: not issued by orchestrator"):
        check(keyed, jwt.encode(base | {"iss": "someone"}, key, algorithm="HS256"))
    with pytest.raises(VerificationRefused, match="^malformed: .*exp"):
        check(keyed, jwt.encode({k: v for k, v in base.items() if k != "exp"}, key, algorithm="HS256"))


def test_key_file_is_created_0600_once_and_reused(settings: Settings) -> None:
    path = settings.data_dir / verification.KEY_FILE_NAME
    assert not path.exists()
    first = verification.signing_key(settings)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verification.signing_key(settings) == first, "the same key is read back, not a new one"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".signing-key-")] == []
    token = verification.sign(settings, attestation(), now=NOW)
    assert check(settings, token).commit == COMMIT


def test_a_readable_or_damaged_key_file_is_refused(settings: Settings) -> None:
    verification.signing_key(settings)
    path = settings.data_dir / verification.KEY_FILE_NAME
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by group or others .*chmod 600"):
        verification.signing_key(settings)
    path.chmod(0o600)
    path.write_text("too short\n")
    with pytest.raises(ValueError, match="is not at least 32 bytes as hex digits"):
        verification.signing_key(settings)


def test_a_short_configured_key_is_refused_without_being_shown(settings: Settings) -> None:
    short = settings.model_copy(update={"signing_key": SecretStr("s3cret-but-short")})
    with pytest.raises(ValueError, match=r"ORCH_SIGNING_KEY is 16 bytes; .* at least 32 \(RFC 7518") as exc:
        verification.signing_key(short)
    assert "s3cret" not in str(exc.value)
    assert verification.signing_key(settings.model_copy(update={"signing_key": KEY})) == b"k" * 32
    assert not (settings.data_dir / verification.KEY_FILE_NAME).exists(), "a configured key creates no key file"
