"""Registry credentials: where they come from and how they reach the service.

Credentials travel to the Podman service only in the ``X-Registry-Auth``
header of each request, never on a command line, and every password read here
is registered with the log redaction before anything could print it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootc_builder.errors import InputError
from bootc_builder.logs import register_secret


@dataclass(frozen=True, slots=True)
class Credential:
    """A user name and password for one registry."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for a request: one pair for any registry, or a map by host."""

    explicit: Credential | None = None
    by_registry: Mapping[str, Credential] = field(default_factory=dict, repr=False)

    def header(self) -> dict[str, str]:
        """Return the ``X-Registry-Auth`` header, or no header when there is nothing."""
        if self.explicit is not None:
            payload: object = {
                "username": self.explicit.username,
                "password": self.explicit.password,
            }
        elif self.by_registry:
            payload = {
                host: {"username": cred.username, "password": cred.password}
                for host, cred in self.by_registry.items()
            }
        else:
            return {}
        encoded = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        return {"X-Registry-Auth": encoded}

    def for_registry(self, host: str) -> Credential | None:
        """Return the credential that applies to ``host``, if any."""
        if self.explicit is not None:
            return self.explicit
        return self.by_registry.get(host)


def parse_creds(creds: str, *, password_from_stdin: str | None = None) -> Credential:
    """Parse ``--creds USER[:PASSWORD]``; the password may come from stdin instead.

    Raises:
        InputError: no user name, or no password from either place.
    """
    username, sep, password = creds.partition(":")
    if not username:
        raise InputError("invalid --creds: expected USER[:PASSWORD] with a user name")
    if password_from_stdin is not None:
        if sep:
            raise InputError(
                "pass the password either in --creds or with --password-stdin"
            )
        password = password_from_stdin
    elif not sep:
        raise InputError(
            "--creds has no password: use --creds USER:PASSWORD or add --password-stdin"
        )
    register_secret(password)
    return Credential(username, password)


def default_authfile() -> Path | None:
    """Return the first auth file that exists, in the order containers tools use."""
    from_env = os.environ.get("REGISTRY_AUTH_FILE")
    if from_env:
        return Path(from_env)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    candidates = [
        Path(runtime_dir) / "containers" / "auth.json",
        Path.home() / ".config" / "containers" / "auth.json",
        Path.home() / ".docker" / "config.json",
    ]
    return next((path for path in candidates if path.is_file()), None)


def read_authfile(path: Path) -> dict[str, Credential]:
    """Read the ``auths`` of a containers or Docker auth file, by registry host.

    Raises:
        InputError: the file is missing or is not a valid auth file.
    """
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"auth file {str(path)!r} not found; check --authfile"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read auth file {str(path)!r}: {exc}") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise InputError(f'auth file {str(path)!r} has no "auths" object')
    result: dict[str, Credential] = {}
    for host, entry in auths.items():
        credential = _credential_from_entry(entry)
        if credential is not None:
            register_secret(credential.password)
            result[_normalise_host(host)] = credential
    return result


def _credential_from_entry(entry: object) -> Credential | None:
    if not isinstance(entry, dict):
        return None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        return Credential(user, secret)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str):
        return Credential(username, password)
    return None


def _normalise_host(key: str) -> str:
    """Reduce an auth file key (``https://host/v1/``, ``host/repo``) to its host."""
    key = key.removeprefix("https://").removeprefix("http://")
    return key.split("/", 1)[0]


def resolve_auth(
    *,
    creds: str | None,
    password_stdin: str | None,
    authfile: Path | None,
) -> RegistryAuth:
    """Combine --creds, --password-stdin and --authfile into what a request sends.

    Without any of them the default auth file is read when one exists; with none
    the service falls back to its own.
    """
    if creds is not None:
        return RegistryAuth(
            explicit=parse_creds(creds, password_from_stdin=password_stdin)
        )
    if password_stdin is not None:
        raise InputError("--password-stdin needs --creds USER for the user name")
    path = authfile if authfile is not None else default_authfile()
    if path is None:
        return RegistryAuth()
    return RegistryAuth(by_registry=read_authfile(path))
