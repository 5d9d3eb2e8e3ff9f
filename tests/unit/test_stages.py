"""Tests for target resolution, needed stages and the ``stages --json`` report.

Target rules were checked with podman 4.3.1: ``--target`` is case-sensitive, and
an index works only for an unnamed stage.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from bootc_builder.containerfile import Containerfile, parse_containerfile
from bootc_builder.errors import ExitCode, TargetNotFoundError
from bootc_builder.stages import (
    REPORT_SCHEMA,
    needed_stages,
    resolve_target,
    stages_report,
)

CHAIN = """
    FROM img AS base
    FROM base AS lint
    FROM base AS build
    FROM img AS release
    COPY --from=build /app /app
    FROM release AS debug
    FROM img
    """


def parse(text: str) -> Containerfile:
    return parse_containerfile(textwrap.dedent(text).lstrip("\n"))


def target_error(cf: Containerfile, target: str) -> TargetNotFoundError:
    with pytest.raises(TargetNotFoundError) as raised:
        resolve_target(cf, target)
    assert "\n" not in str(raised.value)
    assert raised.value.exit_code == ExitCode.USAGE
    return raised.value


@pytest.mark.parametrize("target", [None, ""])
def test_resolve_default_is_last(target: str | None) -> None:
    cf = parse(CHAIN)
    assert resolve_target(cf, target).index == 5


def test_resolve_by_name() -> None:
    cf = parse(CHAIN)
    assert resolve_target(cf, "build").index == 2


def test_resolve_index_of_unnamed_stage() -> None:
    cf = parse(CHAIN)
    assert resolve_target(cf, "5").index == 5


def test_resolve_index_of_named_stage_rejected() -> None:
    cf = parse(CHAIN)
    error = target_error(cf, "2")
    assert error.suggestion == "build"
    assert "did you mean build?" in str(error)


def test_resolve_wrong_case_suggests_name() -> None:
    cf = parse("FROM img AS Build\nFROM img\n")
    error = target_error(cf, "build")
    assert error.suggestion == "Build"


def test_resolve_typo_suggests_close_name() -> None:
    cf = parse(CHAIN)
    error = target_error(cf, "bulid")
    assert error.suggestion == "build"
    assert error.names == ["base", "lint", "build", "release", "debug", "5"]


def test_resolve_unrelated_has_no_suggestion() -> None:
    cf = parse(CHAIN)
    error = target_error(cf, "zzzzzz")
    assert error.suggestion is None
    assert str(error).startswith("unknown target 'zzzzzz'; the stages are named:")


@pytest.mark.parametrize("target", ["99", "-1", "9" * 50])
def test_resolve_out_of_range_index(target: str) -> None:
    cf = parse(CHAIN)
    error = target_error(cf, target)
    assert error.target == target


@pytest.mark.parametrize(
    ("target", "needed"),
    [
        ("base", [0]),
        ("lint", [0, 1]),
        ("build", [0, 2]),
        ("release", [0, 2, 3]),
        ("debug", [0, 2, 3, 4]),
        (None, [5]),
    ],
)
def test_needed_stages(target: str | None, needed: list[int]) -> None:
    cf = parse(CHAIN)
    assert needed_stages(cf, resolve_target(cf, target)) == needed


def test_needed_stages_shared_dependency() -> None:
    cf = parse(
        """
        FROM img AS common
        FROM common AS left
        FROM common AS right
        FROM img
        COPY --from=right / /
        RUN --mount=from=left,target=/l true
        """
    )
    assert needed_stages(cf, cf.stages[-1]) == [0, 1, 2, 3]


def test_stages_report() -> None:
    cf = parse(CHAIN)
    report = stages_report(cf, resolve_target(cf, "release"))
    assert report["schema"] == REPORT_SCHEMA
    assert report["target"] == 3
    assert report["needed"] == [0, 2, 3]
    assert report["stages"] == [
        {"index": 0, "name": "base", "base": "img", "depends_on": []},
        {"index": 1, "name": "lint", "base": "base", "depends_on": [0]},
        {"index": 2, "name": "build", "base": "base", "depends_on": [0]},
        {"index": 3, "name": "release", "base": "img", "depends_on": [2]},
        {"index": 4, "name": "debug", "base": "release", "depends_on": [3]},
        {"index": 5, "name": None, "base": "img", "depends_on": []},
    ]


def test_stages_report_is_json() -> None:
    cf = parse(CHAIN)
    report = stages_report(cf, resolve_target(cf, None))
    assert json.loads(json.dumps(report)) == report
