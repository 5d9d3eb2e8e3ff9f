"""Credentials from --creds, stdin and auth files, and their redaction."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bootc_builder.credentials import (
    default_authfile,
    parse_creds,
    read_authfile,
    resolve_auth,
)
from bootc_builder.errors import InputError
from bootc_builder.logs import redact


def _decode_header(header: dict[str, str]) -> object:
    return json.loads(base64.urlsafe_b64decode(header["X-Registry-Auth"]))


def test_creds_with_password() -> None:
    credential = parse_creds("alice:s3cret-pass")

    assert credential.username == "alice"
    assert credential.password == "s3cret-pass"
    assert "s3cret-pass" not in repr(credential)


def test_password_is_redacted_once_parsed() -> None:
    parse_creds("bob:hunter2-hunter2")

    assert redact("login bob:hunter2-hunter2 failed") == "login bob:*** failed"


def test_creds_without_password_needs_stdin() -> None:
    with pytest.raises(InputError) as failure:
        parse_creds("alice")

    assert "--password-stdin" in str(failure.value)


def test_password_from_stdin() -> None:
    credential = parse_creds("alice", password_from_stdin="from-stdin-pw")

    assert credential.password == "from-stdin-pw"


def test_password_in_both_places_rejected() -> None:
    with pytest.raises(InputError):
        parse_creds("alice:x", password_from_stdin="y")


def test_explicit_header_is_single_config() -> None:
    auth = resolve_auth(creds="alice:pw-one", password_stdin=None, authfile=None)

    assert _decode_header(auth.header()) == {"username": "alice", "password": "pw-one"}


def test_authfile_entries_by_host(tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(b"carol:file-password").decode()
    authfile.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5000": {"auth": token},
                    "https://index.docker.io/v1/": {"auth": token},
                    "broken": {"auth": 5},
                }
            }
        )
    )

    credentials = read_authfile(authfile)

    assert set(credentials) == {"127.0.0.1:5000", "index.docker.io"}
    assert credentials["127.0.0.1:5000"].password == "file-password"
    assert redact("file-password") == "***"


def test_authfile_header_is_map(tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(b"dave:map-password").decode()
    authfile.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": token}}}))

    auth = resolve_auth(creds=None, password_stdin=None, authfile=authfile)

    assert _decode_header(auth.header()) == {
        "reg.example:5000": {"username": "dave", "password": "map-password"}
    }
    assert auth.for_registry("reg.example:5000") is not None
    assert auth.for_registry("other") is None


@pytest.mark.parametrize("content", ["not json", "[]", '{"auths": 3}'])
def test_bad_authfile_is_input_error(tmp_path: Path, content: str) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text(content)

    with pytest.raises(InputError) as failure:
        read_authfile(authfile)

    assert str(authfile) in str(failure.value)


def test_missing_authfile_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_authfile(tmp_path / "none.json")


def test_default_authfile_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "given.json"))

    assert default_authfile() == tmp_path / "given.json"


def test_no_credentials_sends_no_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))

    auth = resolve_auth(creds=None, password_stdin=None, authfile=None)

    assert auth.header() == {}
