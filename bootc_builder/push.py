"""Pushing images and pulling bases, with retries, and the digests registries serve.

1. ``push_image``: for each destination, push with retries, then ask the
   registry for the digest it serves for the tag (with the same retries).
2. ``write_digestfile``: record the digest as ``podman push --digestfile`` does.
3. ``pull_bases``: before a build, pull the base images the target's stages
   need, under the build's pull policy, with the same retries.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bootc_builder.config import PullPolicy
from bootc_builder.credentials import RegistryAuth
from bootc_builder.errors import InputError
from bootc_builder.podman_api import (
    PodmanConnection,
    fetch_manifest_digest,
    split_reference,
)
from bootc_builder.retry import RetryPolicy, run_with_retries

log = structlog.get_logger("bootc_builder")


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """How to reach registries: TLS, credentials and the retry policy."""

    tls_verify: bool = True
    auth: RegistryAuth = field(default_factory=RegistryAuth)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class PushedImage:
    """One destination and the manifest digest its registry serves for it."""

    ref: str
    digest: str

    def as_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "digest": self.digest}


def push_image(
    connection: PodmanConnection,
    source: str,
    destinations: Iterable[str],
    options: RegistryOptions,
    *,
    manifest_format: str | None = None,
) -> list[PushedImage]:
    """Push ``source`` to every destination in turn; stop at the first failure.

    Raises:
        RegistryError: a destination failed for good or ran out of retries.
        PodmanUnreachableError: the service went away.
    """
    pushed = []
    for destination in destinations:
        log.info("image.pushing", source=source, ref=destination)
        run_with_retries(
            functools.partial(
                connection.push,
                source,
                destination,
                tls_verify=options.tls_verify,
                manifest_format=manifest_format,
                headers=options.auth.header(),
            ),
            policy=options.retry,
            action="push",
            reference=destination,
            logger=log,
        )
        digest = registry_digest(destination, options)
        log.info("image.pushed", ref=destination, digest=digest)
        pushed.append(PushedImage(destination, digest))
    return pushed


def registry_digest(reference: str, options: RegistryOptions) -> str:
    """Ask the registry for the digest it serves for ``reference``, with retries."""
    host, _, _ = split_reference(reference)
    credential = options.auth.for_registry(host)
    pair = (credential.username, credential.password) if credential else None
    return run_with_retries(
        functools.partial(
            fetch_manifest_digest,
            reference,
            tls_verify=options.tls_verify,
            credential=pair,
        ),
        policy=options.retry,
        action="digest lookup",
        reference=reference,
        logger=log,
    )


def check_digestfile(path: Path) -> None:
    """Reject a digest file path that could not be written, before any push.

    Raises:
        InputError: the path is a directory or its folder does not exist.
    """
    if path.is_dir():
        raise InputError(f"--digestfile {str(path)!r} is a directory; name a file")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(
            f"--digestfile {str(path)!r}: folder {str(folder)!r} does not exist"
        )
    if not os.access(folder, os.W_OK):
        raise InputError(f"--digestfile {str(path)!r}: folder is not writable")


def write_digestfile(path: Path, pushed: list[PushedImage]) -> None:
    """Write the digest as ``podman push --digestfile`` does.

    One destination gives the bare digest with no newline, as podman writes it.
    Several give one ``DIGEST REF`` line each, because each registry may serve
    a different digest. The file is replaced atomically.
    """
    if len(pushed) == 1:
        content = pushed[0].digest
    else:
        content = "".join(f"{image.digest} {image.ref}\n" for image in pushed)
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(content)
        # mkstemp makes the file private; a digest is not secret, and podman
        # writes its digest file with the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# The pull endpoint's names for the pull policies of `podman build --pull`.
_PULL_ENDPOINT_POLICIES = {
    PullPolicy.ALWAYS: "always",
    PullPolicy.MISSING: "missing",
    PullPolicy.NEWER: "newer",
}


def pull_bases(
    connection: PodmanConnection,
    bases: Iterable[str],
    pull: PullPolicy,
    options: RegistryOptions,
    *,
    platform: str | None,
) -> bool:
    """Pull each base image under ``pull`` with retries; return whether any ran.

    With ``never`` nothing is pulled and the build finds out on its own.

    Raises:
        RegistryError: a base could not be pulled.
    """
    policy = _PULL_ENDPOINT_POLICIES.get(pull)
    if policy is None:
        return False
    pulled = False
    for base in bases:
        if pull is PullPolicy.MISSING and connection.image_exists(base):
            continue
        log.info("image.pulling", ref=base, policy=policy)
        run_with_retries(
            functools.partial(
                connection.pull,
                base,
                policy=policy,
                tls_verify=options.tls_verify,
                platform=platform,
                headers=options.auth.header(),
            ),
            policy=options.retry,
            action="pull",
            reference=base,
            logger=log,
        )
        log.info("image.pulled", ref=base)
        pulled = True
    return pulled
