"""The end-of-build summary and the --json document, on recorded builds."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bootc_builder.errors import BootcBuildError, PodmanUnreachableError
from bootc_builder.progress import StageBoard
from bootc_builder.push import PushedImage
from bootc_builder.summary import (
    BuildSummary,
    append_step_summary,
    format_size,
    render_markdown,
    render_text,
    result_document,
    summarize,
    summarize_failure,
    write_iidfile,
)
from tests.unit.test_progress import FAILED_RUN, TWO_STAGE, Recording, record_build

SCHEMA = json.loads((Path(__file__).parent / "result_schema.json").read_text())

# Sizes Podman 4.3.1 reported for the images of the demo build's layers.
SIZES = {
    "c10d6cc25f1": 612_400_000,
    "4acb383012c": 4_380_000,
    "4acb383012ce19b13b204428c30e8f150e84c6d167d83053431def44ac042531": 4_380_000,
}
DIGEST = "sha256:" + "ab" * 32


def validation_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """List how ``value`` breaks ``schema``, in the JSON Schema subset used here."""
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        allowed = kinds if isinstance(kinds, list) else [kinds]
        if not any(_has_type(value, kind) for kind in allowed):
            return [f"{path}: {value!r} is not of type {allowed}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    pattern = schema.get("pattern")
    if isinstance(value, str) and pattern and re.search(pattern, value) is None:
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    minimum = schema.get("minimum")
    if _has_type(value, "number") and minimum is not None and value < minimum:
        errors.append(f"{path}: {value!r} is below {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing {name!r}")
        for name, item in value.items():
            if name in properties:
                errors.extend(
                    validation_errors(item, properties[name], f"{path}.{name}")
                )
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {name!r}")
    if isinstance(value, list) and "items" in schema:
        for position, item in enumerate(value):
            errors.extend(
                validation_errors(item, schema["items"], f"{path}[{position}]")
            )
    return errors


def _has_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown JSON Schema type {kind!r}")


@pytest.fixture(scope="module")
def full() -> Recording:
    return record_build("two-stage-full.jsonl", TWO_STAGE)


@pytest.fixture(scope="module")
def cached() -> Recording:
    return record_build("two-stage-cached.jsonl", TWO_STAGE)


@pytest.fixture(scope="module")
def failed() -> Recording:
    return record_build("failed-run.jsonl", FAILED_RUN)


def _summary(recording: Recording, **kwargs: Any) -> BuildSummary:
    assert recording.result is not None
    return summarize(recording.result, SIZES.get, target=None, **kwargs)


def _failure_summary(recording: Recording) -> BuildSummary:
    assert recording.error is not None
    ticks = itertools.count()
    board = StageBoard(clock=lambda: float(next(ticks)))
    for event in recording.events:
        board(None, event["level"], dict(event))
    return summarize_failure(
        recording.error,
        stages=board.records(),
        unstarted=board.unstarted(),
        target="1",
    )


def test_stage_numbers_match_events(cached: Recording) -> None:
    summary = _summary(cached)

    finished = cached.named("stage.finished")
    assert [s.name for s in summary.stages] == [e["stage"] for e in finished]
    assert [s.index for s in summary.stages] == [e["stage_index"] for e in finished]
    assert [s.steps for s in summary.stages] == [e["steps"] for e in finished]
    assert [s.cached_steps for s in summary.stages] == [
        e["cached_steps"] for e in finished
    ]
    assert [s.duration_s for s in summary.stages] == [e["duration_s"] for e in finished]
    assert [s.status for s in summary.stages] == ["cached", "cached"]
    assert summary.tags == ("localhost/bootc-build-demo/rec:1",)


def test_sizes_and_saving(full: Recording) -> None:
    summary = _summary(full)

    assert [s.size for s in summary.stages] == [612_400_000, 4_380_000]
    assert summary.image_size == 4_380_000
    saving = summary.saving
    assert saving is not None
    assert saving.stage == "builder"
    assert saving.saved_bytes == 608_020_000
    assert saving.saved_percent == pytest.approx(99.2847, abs=1e-3)


def test_single_stage_has_no_saving() -> None:
    recording = record_build("two-stage-target-builder.jsonl", TWO_STAGE, "builder")
    assert recording.result is not None

    summary = summarize(recording.result, lambda _: 1000, target="builder")

    assert summary.saving is None


def test_unreadable_size_is_left_empty(full: Recording) -> None:
    assert full.result is not None

    def unreachable(reference: str) -> int | None:
        raise PodmanUnreachableError(f"cannot inspect {reference}")

    with capture_logs() as events:
        summary = summarize(full.result, unreachable, target=None)

    assert [s.size for s in summary.stages] == [None, None]
    assert summary.image_size is None
    assert summary.saving is None
    assert {e["event"] for e in events} == {"image.size_unknown"}


def test_text_table_lists_stages(full: Recording) -> None:
    text = render_text(_summary(full), colour=False)

    rows = [line.split() for line in text.splitlines()]
    assert ["builder", "done", "1.0s", "5/5", "0", "612", "MB"] in rows
    assert ["1", "done", "1.0s", "3/3", "0", "4.38", "MB"] in rows
    assert "image 4acb383012ce (no tags), 4.38 MB" in text
    assert (
        "the final image is 608 MB (99.3%) smaller than the largest build stage, "
        "builder (612 MB)"
    ) in text
    assert "\x1b" not in text


def test_markdown_table_and_image(full: Recording) -> None:
    pushed = [PushedImage("localhost:5000/x:1", DIGEST)]

    markdown = render_markdown(_summary(full, pushed=pushed))

    lines = markdown.splitlines()
    assert lines[0] == "### bootc-build: the last stage built"
    assert "| builder | done | 1.0s | 5/5 | 0 | 612 MB |" in lines
    assert "| 1 | done | 1.0s | 3/3 | 0 | 4.38 MB |" in lines
    header = lines.index("| Stage | Status | Duration | Steps | Cached | Size |")
    assert lines[header + 1] == "| --- | --- | ---: | ---: | ---: | ---: |"
    assert f"`{full.result.image_id if full.result else ''}`" in markdown
    assert f"Pushed `localhost:5000/x:1@{DIGEST}`." in markdown


def test_markdown_failure_fences_message(failed: Recording) -> None:
    markdown = render_markdown(_failure_summary(failed))

    assert markdown.splitlines()[0] == "### bootc-build: `1` failed"
    assert "| builder | failed | 1.0s | 2/3 | 0 | - |" in markdown
    assert "| 1 | skipped | - | - | 0 | - |" in markdown
    assert "```\nstage builder, step 3/3 `RUN echo about to fail" in markdown


def test_markdown_escapes_table_cells() -> None:
    summary = BuildSummary(
        target="a`b",
        image_id=None,
        tags=(),
        image_size=None,
        duration_s=None,
        stages=(),
        error=None,
    )

    assert render_markdown(summary).splitlines()[0] == "### bootc-build: ``a`b`` built"


def test_step_summary_appends_when_set(full: Recording, tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(path)}

    assert append_step_summary(_summary(full), env) == path
    assert append_step_summary(_summary(full), env) == path

    content = path.read_text()
    assert content.startswith("earlier step\n### bootc-build")
    assert content.count("### bootc-build") == 2


def test_step_summary_skipped_without_env(full: Recording) -> None:
    assert append_step_summary(_summary(full), {}) is None


def test_step_summary_write_failure_is_warning(full: Recording, tmp_path: Path) -> None:
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "missing" / "summary.md")}

    with capture_logs() as events:
        assert append_step_summary(_summary(full), env) is None

    assert [e["event"] for e in events] == ["step_summary.write_failed"]


def test_result_document_matches_schema(full: Recording) -> None:
    pushed = [PushedImage("localhost:5000/x:1", DIGEST)]

    document = result_document(_summary(full, pushed=pushed))

    assert validation_errors(document, SCHEMA) == []
    assert document["stages"][0] == {
        "index": 0,
        "name": "builder",
        "status": "done",
        "duration_s": 1.0,
        "steps": 5,
        "cached_steps": 0,
        "size": 612_400_000,
    }
    assert document["pushed"] == [{"ref": "localhost:5000/x:1", "digest": DIGEST}]
    assert document["error"] is None


def test_failure_document_matches_schema(failed: Recording) -> None:
    document = result_document(_failure_summary(failed))

    assert validation_errors(document, SCHEMA) == []
    assert document["image_id"] is None
    error = document["error"]
    assert error["stage"] == "builder"
    assert error["step"] == 3
    assert error["exit_status"] == 7
    assert error["containerfile_line"] == 3
    assert error["message"].startswith("stage builder, step 3/3")
    assert [(s["name"], s["status"]) for s in document["stages"]] == [
        ("builder", "failed"),
        ("1", "skipped"),
    ]
    assert document["stages"][1]["index"] == 1


def test_failure_without_step_matches_schema() -> None:
    summary = summarize_failure(
        BootcBuildError("no Podman service answered"),
        stages=[],
        target=None,
    )

    document = result_document(summary)

    assert validation_errors(document, SCHEMA) == []
    assert document["error"]["stage"] is None


def test_validator_reports_bad_documents(full: Recording) -> None:
    document = result_document(_summary(full))
    document["stages"][0]["status"] = "finished"
    document["stages"][0]["steps"] = True
    del document["tags"]
    document["extra"] = 1

    errors = validation_errors(document, SCHEMA)

    assert "$: missing 'tags'" in errors
    assert "$: unexpected 'extra'" in errors
    assert any(e.startswith("$.stages[0].status:") for e in errors)
    assert any(e.startswith("$.stages[0].steps:") for e in errors)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (2_130_000, "2.13 MB"),
        (612_400_000, "612 MB"),
        (1_500_000_000, "1.5 GB"),
    ],
)
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text


def test_iidfile_has_podman_format(tmp_path: Path) -> None:
    path = tmp_path / "iid"

    write_iidfile(
        path, "4acb383012ce19b13b204428c30e8f150e84c6d167d83053431def44ac042531"
    )

    assert path.read_bytes() == (
        b"sha256:4acb383012ce19b13b204428c30e8f150e84c6d167d83053431def44ac042531"
    )


def test_iidfile_unwritable_is_error(tmp_path: Path) -> None:
    with pytest.raises(BootcBuildError) as failure:
        write_iidfile(tmp_path / "missing" / "iid", "abc")

    assert "--iidfile" in str(failure.value)
