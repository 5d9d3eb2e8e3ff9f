"""Ignore-file cases through the whole `bootc-build build` command.

For each case the files that `COPY . /ctx/` puts in the image must be the same
through bootc-build as through the local podman CLI on the same storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PodmanService, run_cli
from tests.integration.ignore_helpers import (
    build_with_cli,
    describe_difference,
    list_image_files,
    load_cases,
    make_case_tree,
)

pytestmark = pytest.mark.integration

CASES = load_cases()


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
def test_build_command_copies_like_podman(
    name: str,
    case: dict[str, Any],
    podman_service: PodmanService,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    context, containerfile = make_case_tree(case, tmp_path / "tree")
    cli_image = build_with_cli(podman_service, context, containerfile)
    new_images.add(cli_image)

    result = run_cli(
        "build",
        str(context),
        "--file",
        str(containerfile),
        "--log-format",
        "json",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    tool_image = result.stdout.strip()
    new_images.add(tool_image)
    expected = list_image_files(podman_service, cli_image, tmp_path)
    actual = list_image_files(podman_service, tool_image, tmp_path)
    assert actual == expected, describe_difference(expected, actual)
