"""BuildMonitor against build streams recorded from Podman 4.3.1."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from bootc_builder.buildstream import BuildMonitor, BuildResult
from bootc_builder.containerfile import parse_containerfile, read_containerfile
from bootc_builder.errors import BuildFailedError, StepFailedError
from bootc_builder.stages import resolve_target

REPO = Path(__file__).resolve().parents[2]
STREAMS = Path(__file__).parent / "streams"
TWO_STAGE = REPO / "Containerfiles" / "two-stage" / "Containerfile"


def _messages(name: str) -> list[dict[str, Any]]:
    lines = (STREAMS / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def _monitor(containerfile_path: Path, target: str | None) -> BuildMonitor:
    containerfile = read_containerfile(containerfile_path)
    stage = resolve_target(containerfile, target)
    ticks = itertools.count()
    return BuildMonitor(
        containerfile, stage, structlog.get_logger(), clock=lambda: float(next(ticks))
    )


def _run(monitor: BuildMonitor, messages: list[dict[str, Any]]) -> BuildResult:
    for message in messages:
        monitor.feed(message)
    return monitor.finish()


def test_full_build_attributes_output_to_builder() -> None:
    monitor = _monitor(TWO_STAGE, None)

    with capture_logs() as events:
        result = _run(monitor, _messages("two-stage-full.jsonl"))

    output = [e for e in events if e["event"] == "step.output"]
    assert [e["line"] for e in output] == ["example.com/hello", "COMMIT"]
    assert output[0]["stage"] == "builder"
    assert output[0]["stage_index"] == 0
    assert output[1]["stage_index"] == 1
    assert result.image_id.startswith("4acb383012ce")


def test_full_build_reports_each_stage() -> None:
    monitor = _monitor(TWO_STAGE, None)

    with capture_logs() as events:
        result = _run(monitor, _messages("two-stage-full.jsonl"))

    finished = [e for e in events if e["event"] == "stage.finished"]
    assert [e["stage"] for e in finished] == ["builder", "1"]
    assert [e["steps"] for e in finished] == [5, 3]
    assert [e["cached_steps"] for e in finished] == [0, 0]
    assert all(e["duration_s"] > 0 for e in finished)
    assert [s.status for s in result.stages] == ["done", "done"]


def test_step_events_carry_containerfile_line() -> None:
    monitor = _monitor(TWO_STAGE, None)

    with capture_logs() as events:
        _run(monitor, _messages("two-stage-full.jsonl"))

    steps = [e for e in events if e["event"] == "step.started"]
    go_build = next(e for e in steps if e["instruction"].startswith("RUN CGO_ENABLED"))
    source_line = TWO_STAGE.read_text().splitlines()[go_build["line"] - 1]
    assert source_line.startswith("RUN CGO_ENABLED=0")
    assert go_build["step"] == 5
    assert go_build["steps"] == 5


def test_cached_build_counts_cache_hits() -> None:
    monitor = _monitor(TWO_STAGE, None)

    with capture_logs() as events:
        result = _run(monitor, _messages("two-stage-cached.jsonl"))

    finished = {e["stage"]: e for e in events if e["event"] == "stage.finished"}
    assert finished["builder"]["cached_steps"] == 4
    assert finished["1"]["cached_steps"] == 2
    assert result.tags == ("localhost/bootc-build-demo/rec:1",)
    layer_events = [e for e in events if e["event"] == "step.finished"]
    assert all(e["cached"] for e in layer_events)


def test_single_stage_stream_maps_to_target() -> None:
    monitor = _monitor(TWO_STAGE, "builder")

    with capture_logs() as events:
        result = _run(monitor, _messages("two-stage-target-builder.jsonl"))

    output = [e for e in events if e["event"] == "step.output"]
    assert output[0]["line"] == "example.com/hello"
    assert {e["stage"] for e in output} == {"builder"}
    assert [s.label for s in result.stages] == ["builder"]


def test_failed_run_names_stage_step_and_line() -> None:
    monitor = _monitor(STREAMS / "failed-run.Containerfile", None)

    with capture_logs(), pytest.raises(StepFailedError) as failure:
        _run(monitor, _messages("failed-run.jsonl"))

    error = failure.value
    assert error.stage == "builder"
    assert error.step == 3
    assert error.line == 3
    assert error.exit_status == 7
    assert error.tail == ["preparing", "about to fail", "oops"]
    assert error.last_layer == "d654dbabce1"
    assert "podman run --rm -it d654dbabce1 /bin/sh" in str(error)
    assert "failed-run.Containerfile:3" in str(error)


def test_stream_without_image_id_fails() -> None:
    monitor = _monitor(TWO_STAGE, None)
    truncated = _messages("two-stage-full.jsonl")[:-1]

    with capture_logs(), pytest.raises(BuildFailedError) as failure:
        _run(monitor, truncated)

    assert "without an image id" in str(failure.value)


def test_lines_split_across_messages_are_joined() -> None:
    containerfile = parse_containerfile("FROM scratch AS only\nRUN x\n")
    monitor = BuildMonitor(
        containerfile, containerfile.stages[0], structlog.get_logger()
    )
    messages = [
        {"stream": "STEP 1/2: FROM scratch AS only\nSTEP 2/2: RUN x\npart"},
        {"stream": "ial line\nsecond\n"},
        {"stream": "COMMIT\n--> abcdef12345\n" + "a" * 64 + "\n"},
    ]

    with capture_logs() as events:
        _run(monitor, messages)

    lines = [e["line"] for e in events if e["event"] == "step.output"]
    assert lines == ["partial line", "second", "COMMIT"]


def test_error_before_any_step_is_build_failure() -> None:
    containerfile = parse_containerfile("FROM scratch\n")
    monitor = BuildMonitor(
        containerfile, containerfile.stages[0], structlog.get_logger()
    )

    with capture_logs(), pytest.raises(BuildFailedError) as failure:
        _run(monitor, [{"error": "no such image", "errorDetail": {"message": "x"}}])

    assert not isinstance(failure.value, StepFailedError)
    assert "no such image" in str(failure.value)


def test_failure_after_scratch_offers_no_shell() -> None:
    containerfile = parse_containerfile("FROM scratch AS s\nCOPY a /a\n")
    monitor = BuildMonitor(
        containerfile, containerfile.stages[0], structlog.get_logger()
    )
    messages = [
        {"stream": "STEP 1/2: FROM scratch AS s\n"},
        {"stream": "STEP 2/2: COPY a /a\n"},
        {"error": 'building at STEP "COPY a /a": checking on sources: no such file'},
    ]

    with capture_logs(), pytest.raises(StepFailedError) as failure:
        _run(monitor, messages)

    assert failure.value.last_layer is None
    assert "podman run" not in str(failure.value)


def test_failed_from_offers_no_shell() -> None:
    containerfile = parse_containerfile("FROM localhost/missing:1 AS s\nRUN true\n")
    monitor = BuildMonitor(
        containerfile, containerfile.stages[0], structlog.get_logger()
    )
    messages = [
        {"stream": "STEP 1/2: FROM localhost/missing:1 AS s\n"},
        {"error": "creating build container: localhost/missing:1: image not known"},
    ]

    with capture_logs(), pytest.raises(StepFailedError) as failure:
        _run(monitor, messages)

    assert failure.value.last_layer is None
    assert "podman run" not in str(failure.value)


_TWO_STAGES = "FROM scratch AS one\nRUN x\nFROM scratch AS two\nCOPY --from=one /a /b\n"


def _fed(messages: list[str]) -> tuple[list[dict[str, Any]], BuildMonitor]:
    containerfile = parse_containerfile(_TWO_STAGES)
    monitor = BuildMonitor(
        containerfile, containerfile.stages[1], structlog.get_logger()
    )
    with capture_logs() as events:
        for text in messages:
            monitor.feed({"stream": text})
    return events, monitor


def test_marker_lookalikes_in_output_stay_output() -> None:
    image_id = "c" * 64
    lookalikes = [
        "STEP 9/9: RUN fake",
        "[1/1] STEP 1/1: FROM x",
        "--> abcdef0",
        "more output",
        "[2/2] STEP 1/2: FROM x",
        "b" * 64,
        "still stage one",
    ]
    events, monitor = _fed(
        [
            "[1/2] STEP 1/2: FROM scratch AS one\n[1/2] STEP 2/2: RUN x\n",
            "".join(line + "\n" for line in lookalikes),
            "--> 1234567\n[2/2] STEP 1/2: FROM scratch AS two\n",
            "[2/2] STEP 2/2: COPY --from=one /a /b\nCOMMIT\n--> 89abcde\n",
            f"{image_id}\n",
        ]
    )
    result = monitor.finish()

    output = [(e["stage"], e["line"]) for e in events if e["event"] == "step.output"]
    assert output == [("one", line) for line in lookalikes] + [("two", "COMMIT")]
    steps = [(e["stage"], e["step"]) for e in events if e["event"] == "step.started"]
    assert steps == [("one", 1), ("one", 2), ("two", 1), ("two", 2)]
    layers = [e["layer"] for e in events if e["event"] == "step.finished"]
    assert layers == ["1234567", "89abcde"]
    assert result.image_id == image_id


def test_failure_after_lookalike_blames_running_step() -> None:
    _, monitor = _fed(
        [
            "[1/2] STEP 1/2: FROM scratch AS one\n[1/2] STEP 2/2: RUN x\n",
            "[2/2] STEP 1/2: FROM x\nstill stage one\n",
        ]
    )
    monitor.feed({"error": "error building at STEP: exit status 5"})

    with pytest.raises(StepFailedError) as failure:
        monitor.finish()

    assert failure.value.stage == "one"
    assert failure.value.step == 2
    assert failure.value.exit_status == 5
    assert failure.value.tail == ["[2/2] STEP 1/2: FROM x", "still stage one"]


def test_layer_line_split_from_next_step() -> None:
    events, monitor = _fed(
        [
            "[1/2] STEP 1/2: FROM scratch AS one\n[1/2] STEP 2/2: RUN x\n--> 1234567\n",
            "[2/2] STEP 1/2: FROM scratch AS two\n",
        ]
    )

    finished = [e for e in events if e["event"] == "step.finished"]
    assert [e["layer"] for e in finished] == ["1234567"]
    assert monitor.current_stage is not None
    assert monitor.current_stage.label == "two"
