"""Recognise a build whose inputs have not changed, and reuse its image.

A fully cached rebuild still costs a full round through the Podman service,
about as long as the build took to check its cache. Instead, bootc-build
records the digest of each build's inputs with the id of the image it
produced: the Containerfile, the bytes of the context archive, the build
arguments and labels, the target, platform, format and pull policy, and the
ids of the base images. When a later build has the same digest and the image
still exists, that image is the result: Podman's own layer cache would
have matched every step on the same inputs. An image id is the digest of the
image's configuration, so an image with the recorded id is the one that build
produced. The records live in ``reused-images.json`` under
``$XDG_CACHE_HOME/bootc-build`` (default ``~/.cache``).

Builds whose inputs the digest cannot see always run: images
named in ``COPY --from`` or ``RUN --mount=...,from=``, ``ADD`` from a URL or a
git repository, build secrets, and contexts larger than
``MAX_HASHED_CONTEXT_BYTES``. ``--no-cache`` turns it off.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootc_builder.config import BuildOptions
from bootc_builder.containerfile import Containerfile, Stage
from bootc_builder.context import ContextArchive
from bootc_builder.podman_api import PodmanConnection

SCHEME = "bootc-build-inputs-v1"
# Reading a large context twice (once here, once to send it) would cost more
# than the build it could save.
MAX_HASHED_CONTEXT_BYTES = 64 * 1024 * 1024

_REMOTE_SOURCES = ("http://", "https://", "git@", "git://")
# Records kept in the index; older ones are dropped first.
MAX_RECORDS = 500


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The digest of a build's inputs, or why there is none."""

    digest: str | None
    reason: str = ""


def fingerprint_build(
    connection: PodmanConnection,
    options: BuildOptions,
    containerfile: Containerfile,
    needed: list[int],
    archive: ContextArchive,
    bases: list[str],
) -> Fingerprint:
    """Compute the digest of the build's inputs, or the reason it cannot be trusted."""
    if options.no_cache:
        return Fingerprint(None, "--no-cache")
    if options.secrets:
        return Fingerprint(None, "the build uses secrets")
    blocker = _unseen_input(containerfile, needed)
    if blocker:
        return Fingerprint(None, blocker)

    digest = hashlib.sha256(SCHEME.encode())
    _add(digest, "containerfile", options.containerfile.read_bytes())
    settings = {
        "target": options.target,
        "build_args": options.build_args,
        "labels": options.labels,
        "platform": options.platform,
        "format": str(options.image_format),
        "pull": str(options.pull),
        "containerfile_name": archive.containerfile_name,
    }
    _add(digest, "settings", json.dumps(settings, sort_keys=True).encode())
    for base in bases:
        base_id = connection.image_id(base)
        if base_id is None:
            return Fingerprint(None, f"base image {base} is not in local storage")
        _add(digest, "base", f"{base}={base_id}".encode())

    context = hashlib.sha256()
    size = 0
    for chunk in archive.chunks():
        size += len(chunk)
        if size > MAX_HASHED_CONTEXT_BYTES:
            return Fingerprint(None, "the context is too large to hash first")
        context.update(chunk)
    _add(digest, "context", context.digest())
    return Fingerprint(digest.hexdigest())


def _add(digest: hashlib._Hash, name: str, value: bytes) -> None:
    # Length prefixes keep one field's end from passing for the next one's start.
    digest.update(f"{name}:{len(value)}:".encode())
    digest.update(value)


def _unseen_input(containerfile: Containerfile, needed: list[int]) -> str | None:
    """Name an input of the needed stages that the digest cannot cover, if any."""
    stages = containerfile.stages
    for index in needed:
        stage = stages[index]
        known = _stage_names(stages[:index])
        for instruction in stage.instructions[1:]:
            for flag in instruction.flags:
                source = _from_value(flag)
                if source is not None and source not in known:
                    return f"line {instruction.line} reads from image {source}"
            if instruction.keyword == "ADD" and any(
                value.startswith(_REMOTE_SOURCES) for value in instruction.value
            ):
                return f"line {instruction.line} adds a remote source"
    return None


def _stage_names(earlier: tuple[Stage, ...]) -> set[str]:
    names = {stage.name for stage in earlier if stage.name}
    return names | {str(stage.index) for stage in earlier}


def _from_value(flag: str) -> str | None:
    """Return the source named by ``--from=X`` or a mount's ``from=X``, if any."""
    if flag.startswith("--from="):
        return flag.removeprefix("--from=")
    if flag.startswith("--mount="):
        fields = next(csv.reader([flag.removeprefix("--mount=")]), [])
        for field in fields:
            key, _, value = field.partition("=")
            if key.strip() == "from":
                return value
    return None


def _index_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bootc-build" / "reused-images.json"


def _read_index() -> dict[str, str]:
    try:
        records = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(records, dict):
        return {}
    return {str(key): str(value) for key, value in records.items()}


def recall(digest: str) -> str | None:
    """Return the id of the final image recorded for ``digest``, if any."""
    return _read_index().get(digest)


def remember(digest: str, image_id: str) -> None:
    """Record that ``digest`` produced the final image ``image_id``.

    The index is a cache: failing to write it only means the next build runs.
    """
    records = _read_index()
    records.pop(digest, None)
    records[digest] = image_id
    kept = dict(list(records.items())[-MAX_RECORDS:])
    path = _index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".reused-")
        with os.fdopen(handle, "w") as stream:
            json.dump(kept, stream)
        os.replace(temporary, path)
    except OSError:
        return
