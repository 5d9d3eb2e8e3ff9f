"""Ignore-file cases: the packer's archive must give COPY what `podman build` gives.

Each case is built twice on the fixtures' Podman service: once by the local
podman CLI, once through the REST build endpoint with the archive from
ContextArchive. The files under /ctx of the two images must be the same.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from podman.api import APIClient

from bootc_builder.context import ContextArchive
from tests.conftest import PodmanService
from tests.integration.ignore_helpers import (
    build_with_cli,
    describe_difference,
    image_id_from_stream,
    list_image_files,
    load_cases,
    make_case_tree,
)

pytestmark = pytest.mark.integration

CASES = load_cases()


def build_with_packer(service: PodmanService, archive: ContextArchive) -> str:
    """Build through the service's REST API with the packer's archive."""
    client = APIClient(base_url=service.url, version="4.0.0", timeout=600)
    params = {
        "dockerfile": archive.containerfile_name,
        "layers": "true",
        "forcerm": "true",
        "rm": "true",
    }
    with client:
        response = client.post(
            "/build",
            params=params,
            data=archive.chunks(),
            headers={"Content-Type": "application/x-tar"},
            stream=True,
        )
        assert response.status_code == 200, response.text
        return image_id_from_stream(response.iter_lines())


def assert_same_ctx(
    service: PodmanService,
    tmp_path: Path,
    context: Path,
    containerfile: Path,
    new_images: set[str],
) -> ContextArchive:
    cli_image = build_with_cli(service, context, containerfile)
    new_images.add(cli_image)
    archive = ContextArchive(context, containerfile, chunk_size=4096)
    service_image = build_with_packer(service, archive)
    new_images.add(service_image)

    expected = list_image_files(service, cli_image, tmp_path)
    actual = list_image_files(service, service_image, tmp_path)
    assert sorted(actual) == sorted(expected), describe_difference(expected, actual)
    assert actual == expected, describe_difference(expected, actual)
    return archive


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
def test_ignore_case(
    name: str,
    case: dict[str, Any],
    podman_service: PodmanService,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    context, containerfile = make_case_tree(case, tmp_path / "tree")
    archive = assert_same_ctx(
        podman_service, tmp_path, context, containerfile, new_images
    )
    assert archive.files > 0


def test_fifo_is_copied_like_podman(
    podman_service: PodmanService, tmp_path: Path, new_images: set[str]
) -> None:
    context, containerfile = make_case_tree(
        {"files": ["a", "sub/b"], "ignore_files": {".containerignore": ["sub"]}},
        tmp_path / "tree",
    )
    os.mkfifo(context / "pipe")
    os.mkfifo(context / "sub" / "pipe")
    assert_same_ctx(podman_service, tmp_path, context, containerfile, new_images)


def test_hard_links_are_copied_like_podman(
    podman_service: PodmanService, tmp_path: Path, new_images: set[str]
) -> None:
    context, containerfile = make_case_tree(
        {"files": ["a", "dir/b"], "ignore_files": {".containerignore": ["x"]}},
        tmp_path / "tree",
    )
    os.link(context / "a", context / "dir" / "a-link")
    os.link(context / "a", context / "z-link")
    (context / "mode-0700").write_text("private")
    (context / "mode-0700").chmod(0o700)
    assert_same_ctx(podman_service, tmp_path, context, containerfile, new_images)


def full_tar(context: Path) -> bytes:
    """Return a tar of every path in ``context``, with no ignore rules applied."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(context.rglob("*")):
            tar.add(path, arcname=path.relative_to(context).as_posix(), recursive=False)
    return buffer.getvalue()


def post_build(service: PodmanService, data: bytes) -> tuple[int, str]:
    client = APIClient(base_url=service.url, version="4.0.0", timeout=600)
    params = {"dockerfile": "Containerfile", "layers": "true", "rm": "true"}
    with client:
        response = client.post(
            "/build",
            params=params,
            data=data,
            headers={"Content-Type": "application/x-tar"},
        )
        return response.status_code, response.text


def test_service_applies_shipped_ignore_file(
    podman_service: PodmanService, tmp_path: Path, new_images: set[str]
) -> None:
    # The packer relies on this: what it cannot decide it sends, and the
    # service filters COPY with the ignore file found in the archive.
    case = {
        "ignore_files": {".dockerignore": ["*.md", "!keep.md", "docs", "a(b)"]},
        "files": ["a.md", "keep.md", "docs/x", "ab", "a(b)", "other"],
    }
    context, containerfile = make_case_tree(case, tmp_path / "tree")
    cli_image = build_with_cli(podman_service, context, containerfile)
    new_images.add(cli_image)
    status, output = post_build(podman_service, full_tar(context))
    assert status == 200, output
    service_image = image_id_from_stream(output.encode().splitlines())
    new_images.add(service_image)

    expected = list_image_files(podman_service, cli_image, tmp_path)
    actual = list_image_files(podman_service, service_image, tmp_path)
    assert "a.md" not in actual
    assert "docs" not in actual
    # Podman reads "a(b)" as a regular expression, which matches "ab".
    assert "ab" not in actual
    assert "a(b)" in actual
    assert actual == expected, describe_difference(expected, actual)


def test_service_rejects_link_out_of_context(
    podman_service: PodmanService, tmp_path: Path
) -> None:
    # The reason ContextArchive raises ContextError for such a link up front.
    context, _containerfile = make_case_tree({"files": ["a"]}, tmp_path / "tree")
    target = f"../outside-{uuid.uuid4().hex}"
    (context / "up").symlink_to(target)
    scratch = Path("/var/tmp")
    before = set(scratch.glob("libpod_builder*"))
    try:
        status, output = post_build(podman_service, full_tar(context))
    finally:
        # Podman 4.3 leaves the upload behind in its scratch directory when it
        # rejects it. The unique link target identifies this test's upload.
        for leftover in set(scratch.glob("libpod_builder*")) - before:
            upload = leftover / "tarBall"
            if upload.is_file() and target.encode() in upload.read_bytes():
                shutil.rmtree(leftover)
    assert status == 500
    assert "invalid symlink" in output
