"""Typed options for each command, and the checks that turn raw flags into them."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bootc_builder.errors import InputError


class PullPolicy(enum.StrEnum):
    """When the service pulls base images; the values of `podman build --pull`."""

    ALWAYS = "always"
    MISSING = "missing"
    NEVER = "never"
    NEWER = "newer"


class ImageFormat(enum.StrEnum):
    """Manifest format of the built image, as `podman build --format`."""

    OCI = "oci"
    DOCKER = "docker"


class LogFormat(enum.StrEnum):
    """The rendering of log events on stderr."""

    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class SecretSpec:
    """A build secret: ``--secret id=ID,src=PATH`` or ``--secret id=ID,env=VAR``."""

    id: str
    source: Path | None = None
    env: str | None = None


def parse_secret(value: str) -> SecretSpec:
    """Parse one ``--secret`` value as ``podman build`` accepts it.

    ``type=file`` and ``type=env`` may name the kind; ``src`` defaults to the id
    for files, as in Podman, and ``target`` is accepted as a spelling of ``src``.

    Raises:
        InputError: the value is malformed, or the file or variable is missing.
    """
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.partition("=")
        if not sep or not key:
            raise InputError(
                f"invalid --secret {value!r}: expected id=ID,src=PATH or id=ID,env=VAR"
            )
        fields[key.strip()] = item
    secret_id = fields.pop("id", "")
    kind = fields.pop("type", "")
    source = fields.pop("src", None) or fields.pop("source", None)
    env = fields.pop("env", None)
    if not secret_id or fields or kind not in ("", "file", "env"):
        raise InputError(
            f"invalid --secret {value!r}: expected id=ID,src=PATH or id=ID,env=VAR"
        )
    if kind == "env" or (env is not None and source is None):
        name = env or secret_id
        if name not in os.environ:
            raise InputError(
                f"--secret {secret_id}: environment variable {name!r} is not set"
            )
        return SecretSpec(secret_id, env=name)
    path = Path(source or secret_id)
    if not path.is_file():
        raise InputError(
            f"--secret {secret_id}: file {str(path)!r} not found; check src="
        )
    return SecretSpec(secret_id, source=path)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """Everything `bootc-build build` sends to the Podman service."""

    context: Path
    containerfile: Path
    target: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    pull: PullPolicy = PullPolicy.MISSING
    no_cache: bool = False
    platform: str | None = None
    image_format: ImageFormat = ImageFormat.OCI
    secrets: tuple[SecretSpec, ...] = ()


_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")


def validate_platform(platform: str) -> str:
    """Return ``platform`` if it has the form OS/ARCH[/VARIANT].

    Raises:
        InputError: it does not.
    """
    if not _PLATFORM.match(platform):
        raise InputError(
            f"invalid --platform {platform!r}: expected OS/ARCH[/VARIANT], "
            "for example linux/amd64 or linux/arm64/v8"
        )
    return platform


def parse_key_values(values: Iterable[str], *, option: str) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options into a dict; later keys win.

    Raises:
        InputError: a value has no ``=`` or an empty key.
    """
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise InputError(
                f"invalid {option} {item!r}: expected KEY=VALUE, for example "
                f"{option} VERSION=1.2"
            )
        parsed[key.strip()] = value
    return parsed


# A reference as containers/image accepts it: an optional registry host with a
# port, lower-case path components, an optional tag and an optional digest.
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<name>{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


def validate_image_reference(reference: str, *, option: str = "--tag") -> str:
    """Return ``reference`` unchanged if it is a valid image name.

    Raises:
        InputError: the reference is malformed; the message gives the reason.
    """
    if _REFERENCE.match(reference):
        return reference
    repository = reference.split("@", 1)[0]
    if repository.rsplit(":", 1)[0] != repository.rsplit(":", 1)[0].lower():
        raise InputError(
            f"invalid {option} {reference!r}: repository names must be lower-case"
        )
    raise InputError(
        f"invalid {option} {reference!r}: expected NAME[:TAG], "
        "for example localhost/my-image:latest"
    )
