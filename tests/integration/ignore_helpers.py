"""Build the ignore-file cases and list what an image has under /ctx.

A case is a JSON file in tests/cases/ignore/ with:

* ``ignore_files``: file name to lines, each file written with a final newline;
* ``files``: paths created with their own path as content;
* ``symlinks`` (optional): link path to target;
* ``containerfile`` (optional, default ``Containerfile``): its path.

Every path is relative to the context. A path that starts with ``../`` lands
beside the context, which is how a case puts the Containerfile (or its
``<Containerfile>.containerignore``) outside the context. The Containerfile is
``FROM scratch`` then ``COPY . /ctx/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, PodmanService

CASES_DIR = REPO / "tests" / "cases" / "ignore"
CONTAINERFILE_TEXT = "FROM scratch\nCOPY . /ctx/\n"
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One path under /ctx in an image.

    ``detail`` is the SHA-256 of a regular file's content, a symbolic link's
    target, and empty for other kinds.
    """

    kind: str
    mode: int
    detail: str


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    """Return every case as (file stem, parsed JSON), sorted by name."""
    return [
        (path.stem, json.loads(path.read_text()))
        for path in sorted(CASES_DIR.glob("*.json"))
    ]


def make_case_tree(case: dict[str, Any], base: Path) -> tuple[Path, Path]:
    """Create the case under ``base``; return (context dir, Containerfile path)."""
    context = base / "context"
    context.mkdir(parents=True)
    for name in case["files"]:
        _write(context / name, name)
    for name, lines in case.get("ignore_files", {}).items():
        _write(context / name, "".join(line + "\n" for line in lines))
    for link, target in case.get("symlinks", {}).items():
        path = context / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    containerfile = context / case.get("containerfile", "Containerfile")
    _write(containerfile, CONTAINERFILE_TEXT)
    return context, containerfile


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")


def build_with_cli(service: PodmanService, context: Path, containerfile: Path) -> str:
    """Build with the local podman CLI and return the image id.

    ``--layers=false`` keeps the CLI from leaving cache entries that a later
    build through the service could reuse instead of copying the context.
    """
    done = service.podman(
        "build",
        "--quiet",
        "--layers=false",
        "--file",
        str(containerfile),
        str(context),
        check=False,
    )
    assert done.returncode == 0, f"podman build failed:\n{done.stderr}"
    return done.stdout.split()[-1]


def image_id_from_stream(lines: Iterable[bytes]) -> str:
    """Return the image id from the build endpoint's JSON lines.

    Raise AssertionError with the service's message when the build failed.
    """
    image_id = None
    output: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("error"):
            raise AssertionError(f"build failed: {message['error']}\n{''.join(output)}")
        stream = message.get("stream") or ""
        output.append(stream)
        if _IMAGE_ID.fullmatch(stream.strip()):
            image_id = stream.strip()
    assert image_id is not None, f"no image id in the build output:\n{''.join(output)}"
    return image_id


def list_image_files(
    service: PodmanService, image: str, tmp_path: Path, root: str = "ctx"
) -> dict[str, Entry]:
    """List every path under ``/root`` in ``image``, relative to it.

    A FROM scratch image has no shell to run ``find``, so this exports the
    filesystem of a container created (not started) from the image.
    """
    created = service.podman("create", image, "/not-run")
    container = created.stdout.strip()
    archive = tmp_path / f"export-{container[:12]}.tar"
    try:
        service.podman("export", "--output", str(archive), container)
    finally:
        service.podman("rm", "--force", container, check=False)
    try:
        return dict(_entries_under(archive, root))
    finally:
        archive.unlink()


def _entries_under(archive: Path, root: str) -> Iterator[tuple[str, Entry]]:
    prefix = root.strip("/") + "/"
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            if not name.startswith(prefix):
                continue
            yield name[len(prefix) :], _entry(tar, member)


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Entry:
    if member.isfile() or member.islnk():
        # A hard link reads as the content of the file it links to.
        content = tar.extractfile(member)
        assert content is not None
        digest = hashlib.sha256(content.read()).hexdigest()
        return Entry("file", member.mode, digest)
    if member.issym():
        return Entry("symlink", member.mode, member.linkname)
    if member.isdir():
        return Entry("directory", member.mode, "")
    if member.isfifo():
        return Entry("fifo", member.mode, "")
    return Entry(f"type {member.type!r}", member.mode, "")


def describe_difference(expected: dict[str, Entry], actual: dict[str, Entry]) -> str:
    """Return one line per path that differs, for an assertion message."""
    lines = []
    for name in sorted(expected.keys() | actual.keys()):
        if expected.get(name) != actual.get(name):
            lines.append(
                f"{name!r}: cli={expected.get(name)} service={actual.get(name)}"
            )
    return "\n".join(lines)
