"""Reusing an image built from the same inputs, and every change that prevents it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PodmanService, run_cli

pytestmark = pytest.mark.integration


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _build(service: PodmanService, context: Path, *args: str) -> tuple[str, list[str]]:
    result = run_cli(
        "build", str(context), "--log-format", "json", *args, url=service.url
    )
    assert result.exit_code == 0, result.describe()
    names = [event["event"] for event in _events(result.stderr)]
    return result.stdout.strip(), names


@pytest.fixture
def context(tmp_path: Path, busybox_image: str) -> Path:
    folder = tmp_path / "context"
    folder.mkdir()
    (folder / "data.txt").write_text("first\n")
    (folder / "Containerfile").write_text(
        f"ARG BASE={busybox_image}\n"
        "FROM ${BASE} AS builder\n"
        "ARG GREETING=hello\n"
        "COPY data.txt /data.txt\n"
        'RUN echo "$GREETING" > /greeting\n'
        "FROM builder\n"
        "RUN cat /data.txt /greeting\n"
    )
    return folder


def test_same_inputs_reuse_the_image(
    podman_service: PodmanService, context: Path, new_images: set[str]
) -> None:
    first, first_events = _build(podman_service, context)
    second, second_events = _build(
        podman_service, context, "-t", "localhost/bootc-build-test/reused:1"
    )

    assert "build.reused" not in first_events
    assert "build.reused" in second_events
    assert "step.started" not in second_events
    assert second == first
    inspect = json.loads(
        podman_service.podman(
            "image", "inspect", "localhost/bootc-build-test/reused:1"
        ).stdout
    )[0]
    assert inspect["Id"] == first


@pytest.mark.parametrize(
    "change",
    ["no-cache", "context file", "build arg", "label", "target", "base image"],
)
def test_changed_input_builds_again(
    podman_service: PodmanService,
    context: Path,
    busybox_image: str,
    new_images: set[str],
    change: str,
) -> None:
    # The base is named by a tag that the "base image" case moves to another image.
    movable = "localhost/bootc-build-test/movable-base:1"
    podman_service.podman("tag", busybox_image, movable)
    base_args = ["--build-arg", f"BASE={movable}"]
    _build(podman_service, context, *base_args)
    args: list[str] = []
    if change == "no-cache":
        args = ["--no-cache"]
    elif change == "context file":
        (context / "data.txt").write_text("second\n")
    elif change == "build arg":
        args = ["--build-arg", "GREETING=bonjour"]
    elif change == "label":
        args = ["--label", "flavour=server"]
    elif change == "target":
        args = ["--target", "builder"]
    elif change == "base image":
        base_context = context.parent / "base"
        base_context.mkdir()
        (base_context / "Containerfile").write_text(
            f"FROM {busybox_image}\nRUN echo changed > /changed\n"
        )
        podman_service.podman("build", "-q", "-t", movable, str(base_context))

    _, events = _build(podman_service, context, *base_args, *args)

    assert "build.reused" not in events
    assert "step.started" in events
    podman_service.podman("untag", movable, movable, check=False)


def test_image_copied_from_is_never_reused(
    podman_service: PodmanService,
    tmp_path: Path,
    busybox_image: str,
    new_images: set[str],
) -> None:
    folder = tmp_path / "copier"
    folder.mkdir()
    (folder / "Containerfile").write_text(
        f"FROM {busybox_image}\nCOPY --from={busybox_image} /bin/busybox /copied\n"
    )

    _build(podman_service, folder)
    _, events = _build(podman_service, folder)

    assert "build.reused" not in events
    assert "build.fingerprint_skipped" in events


def test_removed_image_is_built_again(
    podman_service: PodmanService, context: Path, new_images: set[str]
) -> None:
    first, _ = _build(podman_service, context)
    podman_service.podman("rmi", "--force", first)

    second, events = _build(podman_service, context)

    assert "build.reused" not in events
    assert "step.started" in events
    assert len(second) == 64
