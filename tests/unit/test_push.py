"""Digest files, reference splitting and which bases a build pulls."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootc_builder.containerfile import parse_containerfile
from bootc_builder.pipeline import BuildPlan, external_bases
from bootc_builder.podman_api import split_reference
from bootc_builder.push import PushedImage, write_digestfile
from bootc_builder.stages import needed_stages, resolve_target

DIGEST = "sha256:" + "ab" * 32


def test_digestfile_single_destination_is_bare(tmp_path: Path) -> None:
    path = tmp_path / "digest"

    write_digestfile(path, [PushedImage("127.0.0.1:5000/a:1", DIGEST)])

    assert path.read_text() == DIGEST
    assert list(tmp_path.iterdir()) == [path]


def test_digestfile_several_destinations(tmp_path: Path) -> None:
    path = tmp_path / "digest"

    write_digestfile(
        path,
        [PushedImage("r1/a:1", DIGEST), PushedImage("r2/a:1", "sha256:" + "cd" * 32)],
    )

    lines = path.read_text().splitlines()
    assert lines == [f"{DIGEST} r1/a:1", f"sha256:{'cd' * 32} r2/a:1"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000", "a/b", "1")),
        ("localhost/app", ("localhost", "app", "latest")),
        ("quay.io/org/app:v2", ("quay.io", "org/app", "v2")),
        ("app:3", ("registry-1.docker.io", "library/app", "3")),
        ("host:5000/app", ("host:5000", "app", "latest")),
        (f"quay.io/org/app@{DIGEST}", ("quay.io", "org/app", DIGEST)),
    ],
)
def test_split_reference(reference: str, expected: tuple[str, str, str]) -> None:
    assert split_reference(reference) == expected


def _plan(text: str, target: str | None) -> BuildPlan:
    containerfile = parse_containerfile(text)
    stage = resolve_target(containerfile, target)
    return BuildPlan(containerfile, stage, needed_stages(containerfile, stage), None)  # type: ignore[arg-type]


def test_external_bases_skip_stages_and_scratch() -> None:
    plan = _plan(
        "FROM quay.io/a/toolset:1 AS builder\n"
        "FROM builder AS test\n"
        "FROM scratch AS ctx\n"
        "FROM quay.io/a/base:1\n"
        "COPY --from=builder /x /x\n"
        "COPY --from=ctx /y /y\n",
        None,
    )

    assert external_bases(plan) == ["quay.io/a/toolset:1", "quay.io/a/base:1"]


def test_external_bases_only_for_needed_stages() -> None:
    plan = _plan(
        "FROM quay.io/a/toolset:1 AS builder\nFROM quay.io/a/base:1 AS final\n",
        "builder",
    )

    assert external_bases(plan) == ["quay.io/a/toolset:1"]
