"""Progress renderers on event sequences recorded from Podman 4.3.1 build streams.

The events come from running BuildMonitor on the streams in tests/unit/streams
under ``capture_logs``, with the ``build.*`` events that pipeline.py and
cli.py log around it added in the same shape.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rich.console import Console
from structlog.testing import capture_logs

from bootc_builder import buildstream
from bootc_builder.buildstream import BuildMonitor, BuildResult
from bootc_builder.config import LogFormat
from bootc_builder.containerfile import read_containerfile
from bootc_builder.errors import StepFailedError
from bootc_builder.progress import (
    BoardView,
    BuildOutput,
    GitHubRenderer,
    GitLabRenderer,
    OutputStyle,
    PlainRenderer,
    ProgressMode,
    StageBoard,
    TtyRenderer,
    choose_style,
    open_build_output,
    stage_status,
)
from bootc_builder.stages import needed_stages, resolve_target

REPO = Path(__file__).resolve().parents[2]
STREAMS = Path(__file__).parent / "streams"
TWO_STAGE = REPO / "Containerfiles" / "two-stage" / "Containerfile"
FAILED_RUN = STREAMS / "failed-run.Containerfile"

Event = dict[str, Any]


class Recording:
    """The events of one recorded build, and its result or its error."""

    def __init__(
        self,
        events: list[Event],
        result: BuildResult | None,
        error: StepFailedError | None,
    ) -> None:
        self.events = events
        self.result = result
        self.error = error

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event["event"] == name]


def record_build(
    stream: str, containerfile_path: Path, target: str | None = None
) -> Recording:
    """Run BuildMonitor on a recorded stream and return the events it logged."""
    containerfile = read_containerfile(containerfile_path)
    stage = resolve_target(containerfile, target)
    needed = needed_stages(containerfile, stage)
    ticks = itertools.count()
    log = structlog.get_logger("bootc_builder")
    lines = (STREAMS / stream).read_text().splitlines()
    result: BuildResult | None = None
    error: StepFailedError | None = None
    # Output lines must reach structlog, not the fast path of logs.py, to be
    # captured; another test module may have configured that path.
    original_sink = buildstream.line_sink
    buildstream.line_sink = lambda: None  # type: ignore[assignment]
    try:
        with capture_logs() as captured:
            log.info(
                "build.started",
                target=stage.label,
                needed=[containerfile.stages[i].label for i in needed],
                needed_index=needed,
                url="unix:///run/test.sock",
            )
            monitor = BuildMonitor(
                containerfile, stage, log, clock=lambda: float(next(ticks))
            )
            try:
                for line in lines:
                    if line:
                        monitor.feed(json.loads(line))
                result = monitor.finish()
            except StepFailedError as exc:
                error = exc
                log.error(
                    "build.failed",
                    message=str(exc),
                    error=type(exc).__name__,
                    exit_code=1,
                    stage=exc.stage,
                    step=exc.step,
                    instruction=exc.instruction,
                    containerfile=str(containerfile_path),
                    containerfile_line=exc.line,
                    exit_status=exc.exit_status,
                    last_layer=exc.last_layer,
                )
            else:
                log.info(
                    "build.finished",
                    image_id=result.image_id,
                    tags=list(result.tags),
                    duration_s=result.duration_s,
                    context_files=3,
                    context_bytes=1024,
                )
    finally:
        buildstream.line_sink = original_sink  # type: ignore[assignment]
    events = [
        {"event": e.pop("event"), "level": e.pop("log_level"), **e} for e in captured
    ]
    return Recording(events, result, error)


def play(
    recording: Recording, output: BuildOutput, stream: io.StringIO
) -> Iterator[Event]:
    """Send each event through ``output`` as logs.py would; yield each event after.

    Output lines take the fast path, ``write_line``; other events go through
    the processors and the renderer, and the text it returns is written. In
    the JSON style, where logs.py renders, events are written with json.dumps.
    """
    for event in recording.events:
        if event["event"] == "step.output":
            stage, index, line = event["stage"], event["stage_index"], event["line"]
            if not output.write_line(stage, index, line):
                stream.write(json.dumps(event) + "\n")
            yield event
            continue
        event_dict: Any = dict(event)
        try:
            for processor in output.processors:
                event_dict = processor(None, event["level"], event_dict)
            if output.renderer is None:
                text = json.dumps(event_dict)
            else:
                text = output.renderer(None, event["level"], event_dict)
        except structlog.DropEvent:
            yield event
            continue
        stream.write(text + "\n")
        yield event


def run_output(
    recording: Recording,
    style: OutputStyle,
    *,
    verbose: bool = False,
    quiet: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    stream = io.StringIO()
    output = open_build_output(
        style, verbose=verbose, quiet=quiet, keep_log=False, stream=stream, env=env
    )
    for _ in play(recording, output, stream):
        pass
    output.close(recording.error)
    return stream.getvalue()


@pytest.fixture(scope="module")
def full() -> Recording:
    return record_build("two-stage-full.jsonl", TWO_STAGE)


@pytest.fixture(scope="module")
def cached() -> Recording:
    return record_build("two-stage-cached.jsonl", TWO_STAGE)


@pytest.fixture(scope="module")
def failed() -> Recording:
    return record_build("failed-run.jsonl", FAILED_RUN)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("log_format", "progress", "env", "terminal", "expected"),
    [
        (LogFormat.JSON, ProgressMode.TTY, {}, True, OutputStyle.JSON),
        (LogFormat.AUTO, ProgressMode.TTY, {"CI": "true"}, False, OutputStyle.TTY),
        (LogFormat.AUTO, ProgressMode.AUTO, {}, True, OutputStyle.TTY),
        (LogFormat.AUTO, ProgressMode.AUTO, {}, False, OutputStyle.JSON),
        (LogFormat.CONSOLE, ProgressMode.AUTO, {}, False, OutputStyle.PLAIN),
        (LogFormat.AUTO, ProgressMode.PLAIN, {}, True, OutputStyle.PLAIN),
        (LogFormat.AUTO, ProgressMode.AUTO, {"CI": "true"}, True, OutputStyle.PLAIN),
        (
            LogFormat.AUTO,
            ProgressMode.AUTO,
            {"CI": "true", "GITHUB_ACTIONS": "true"},
            False,
            OutputStyle.GITHUB,
        ),
        (
            LogFormat.CONSOLE,
            ProgressMode.PLAIN,
            {"GITHUB_ACTIONS": "true"},
            False,
            OutputStyle.GITHUB,
        ),
        (
            LogFormat.AUTO,
            ProgressMode.AUTO,
            {"CI": "true", "GITLAB_CI": "true"},
            False,
            OutputStyle.GITLAB,
        ),
        (LogFormat.AUTO, ProgressMode.AUTO, {"CI": "false"}, False, OutputStyle.JSON),
    ],
)
def test_choose_style_from_options_and_env(
    log_format: LogFormat,
    progress: ProgressMode,
    env: dict[str, str],
    terminal: bool,
    expected: OutputStyle,
) -> None:
    stream = _Terminal() if terminal else io.StringIO()

    assert choose_style(log_format, progress, stream=stream, env=env) is expected


def test_plain_prefixes_every_output_line(full: Recording) -> None:
    text = run_output(full, OutputStyle.PLAIN)

    lines = text.splitlines()
    for event in full.named("step.output"):
        assert f"[{event['stage']}] {event['line']}" in lines
    assert (
        "[builder] STEP 5/5: RUN CGO_ENABLED=0 GOCACHE=/tmp/go-cache go build" in text
    )
    assert lines[0] == "building target 1: stages builder, 1"
    assert lines[-1].startswith("built 4acb383012ce")


def test_plain_quiet_shows_only_errors(failed: Recording) -> None:
    text = run_output(failed, OutputStyle.PLAIN, quiet=True)

    assert "preparing" not in text.split("last output")[0]
    assert "STEP" not in text
    assert text.startswith("[builder] error: stage builder, step 3/3")


def test_quiet_drops_info_in_every_style(full: Recording) -> None:
    for style in (OutputStyle.TTY, OutputStyle.GITHUB, OutputStyle.GITLAB):
        assert run_output(full, style, quiet=True) == ""


def test_github_groups_each_stage(full: Recording) -> None:
    text = run_output(full, OutputStyle.GITHUB, env={"GITHUB_ACTIONS": "true"})

    lines = text.splitlines()
    assert lines.count("::group::stage builder") == 1
    assert lines.count("::group::stage 1") == 1
    assert lines.count("::endgroup::") == 2
    builder_start = lines.index("::group::stage builder")
    first_end = lines.index("::endgroup::")
    assert builder_start < lines.index("[builder] example.com/hello") < first_end
    final_start = lines.index("::group::stage 1")
    assert first_end < final_start < lines.index("[1] COMMIT")
    assert lines.index("[1] COMMIT") < len(lines) - 1 - lines[::-1].index(
        "::endgroup::"
    )


def test_github_error_annotates_containerfile_line(failed: Recording) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(REPO)}

    text = run_output(failed, OutputStyle.GITHUB, env=env)

    lines = text.splitlines()
    error_at = next(i for i, line in enumerate(lines) if line.startswith("::error "))
    annotation = lines[error_at]
    assert annotation.startswith(
        "::error file=tests/unit/streams/failed-run.Containerfile,line=3,"
        "title=stage builder failed::"
    )
    assert "%0A" in annotation
    assert "\n" not in annotation
    assert lines[error_at - 1] == "::endgroup::"
    # Everything after the annotation is outside any group.
    assert not any(line.startswith("::group::") for line in lines[error_at:])
    after = lines[error_at + 1 :]
    assert after[0].startswith("[builder] error: stage builder, step 3/3")
    assert "  | about to fail" in after
    assert "  | oops" in after
    assert lines.count("::group::stage builder") == 1
    assert lines.count("::endgroup::") == 1


def test_github_escapes_annotation_properties() -> None:
    board = StageBoard()
    stream = io.StringIO()
    renderer = GitHubRenderer(board, colour=False, stream=stream)

    text = renderer(
        None,
        "error",
        {
            "event": "build.failed",
            "level": "error",
            "message": "100% broken\r\nsecond line",
            "stage": "a,b:c",
            "containerfile": "dir,x/Containerfile:1",
            "containerfile_line": 7,
        },
    )

    annotation = text.splitlines()[0]
    assert annotation == (
        "::error file=dir%2Cx/Containerfile%3A1,line=7,title=stage a%2Cb%3Ac failed"
        "::100%25 broken%0D%0Asecond line"
    )


def test_github_command_failure_shows_tail_of_running_stage() -> None:
    board = StageBoard()
    stream = io.StringIO()
    renderer = GitHubRenderer(board, colour=False, stream=stream)
    events: list[Event] = [
        {"event": "build.started", "level": "info", "target": "t", "needed": ["t"]},
        {"event": "stage.started", "level": "info", "stage": "t", "stage_index": 0},
    ]
    for event in events:
        stream.write(renderer(None, "info", board(None, "info", event)) + "\n")
    board.write_line("t", 0, "last words")
    renderer.write_line("t", 0, "last words")
    failure = {
        "event": "command.failed",
        "level": "error",
        "message": "the Podman service stopped answering during stage t",
    }

    text = renderer(None, "error", board(None, "error", failure))

    assert text.splitlines() == [
        "::endgroup::",
        "::error title=bootc-build failed::the Podman service stopped answering "
        "during stage t",
        "error: the Podman service stopped answering during stage t",
        "last output of stage t:",
        "  | last words",
    ]


def test_github_close_ends_open_group() -> None:
    board = StageBoard()
    stream = io.StringIO()
    renderer = GitHubRenderer(board, colour=False, stream=stream)
    started = {
        "event": "stage.started",
        "level": "info",
        "stage": "s",
        "stage_index": 0,
    }
    stream.write(renderer(None, "info", started) + "\n")

    renderer.close(KeyboardInterrupt())

    assert stream.getvalue().splitlines()[-1] == "::endgroup::"


_SECTION_START = re.compile(
    r"^\x1b\[0Ksection_start:(\d+):([A-Za-z0-9_.-]+)\[collapsed=true\]\r\x1b\[0K(.*)$"
)
_SECTION_END = re.compile(r"^\x1b\[0Ksection_end:(\d+):([A-Za-z0-9_.-]+)\r\x1b\[0K$")


def test_gitlab_sections_wrap_each_stage(full: Recording) -> None:
    text = run_output(full, OutputStyle.GITLAB, env={"GITLAB_CI": "true"})

    # The markers contain carriage returns, so only newlines end lines.
    lines = text.split("\n")
    starts = [(i, _SECTION_START.match(line)) for i, line in enumerate(lines)]
    starts = [(i, m) for i, m in starts if m]
    ends = [(i, m) for i, line in enumerate(lines) if (m := _SECTION_END.match(line))]
    assert [m.group(2) for _, m in starts] == ["stage_builder", "stage_1"]
    assert [m.group(3) for _, m in starts] == ["stage builder", "stage 1"]
    assert [m.group(2) for _, m in ends] == ["stage_builder", "stage_1"]
    assert starts[0][0] < lines.index("[builder] example.com/hello") < ends[0][0]
    assert ends[0][0] < starts[1][0] < lines.index("[1] COMMIT") < ends[1][0]
    for (_, start), (_, end) in zip(starts, ends, strict=True):
        assert int(start.group(1)) <= int(end.group(1))


def test_gitlab_section_names_are_sanitized_and_unique() -> None:
    board = StageBoard()
    renderer = GitLabRenderer(
        board, colour=False, stream=io.StringIO(), wall_clock=lambda: 1700000000.0
    )

    first = renderer.open_fold("build/step one")
    renderer.close_fold("build/step one")
    again = renderer.open_fold("build/step one")

    assert "section_start:1700000000:stage_build_step_one[collapsed=true]" in first
    assert ":stage_build_step_one_2[collapsed=true]" in again


def test_gitlab_failure_tail_is_outside_section(failed: Recording) -> None:
    text = run_output(failed, OutputStyle.GITLAB, env={"GITLAB_CI": "true"})

    lines = text.split("\n")
    end = next(i for i, line in enumerate(lines) if _SECTION_END.match(line))
    assert lines[end + 1].startswith("[builder] error: stage builder, step 3/3")
    assert "  | oops" in lines[end + 1 :]
    assert not any(_SECTION_START.match(line) for line in lines[end:])


def test_board_matches_stage_events(cached: Recording) -> None:
    board = StageBoard()
    for event in cached.events:
        board(None, event["level"], dict(event))

    finished = {e["stage"]: e for e in cached.named("stage.finished")}
    records = board.records()
    assert [r.label for r in records] == ["builder", "1"]
    for record in records:
        assert record.steps == finished[record.label]["steps"]
        assert record.cached_steps == finished[record.label]["cached_steps"]
        assert record.duration_s == finished[record.label]["duration_s"]
    assert [stage_status(r) for r in records] == ["cached", "cached"]
    assert board.unstarted() == []


def test_board_marks_failed_and_unstarted(failed: Recording) -> None:
    board = StageBoard()
    for event in failed.events:
        board(None, event["level"], dict(event))

    records = board.records()
    assert [(r.label, r.status) for r in records] == [("builder", "failed")]
    assert records[0].steps == 2
    assert list(records[0].tail) == ["preparing", "about to fail", "oops"]
    assert board.unstarted() == [("1", 1)]


def _render_view(board: StageBoard, *, tails: bool = True) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    with console.capture() as capture:
        console.print(BoardView(board, spinners=False, tails=tails))
    return capture.get()


def test_view_shows_running_stage_and_waiting_rows(full: Recording) -> None:
    board = StageBoard(clock=lambda: 10.0)
    for event in full.events:
        board(None, event["level"], dict(event))
        if event["event"] == "step.output":
            break

    view = _render_view(board)

    lines = view.splitlines()
    assert lines[0].startswith("target 1: 0 of 2 stages finished")
    builder = next(line for line in lines if "builder" in line)
    assert "running" in builder
    assert "4/5 steps" in builder
    assert "5: RUN CGO_ENABLED=0" in builder
    assert any(line.strip() == "│ example.com/hello" for line in lines)
    waiting = lines[-1]
    assert waiting.split() == ["·", "1", "waiting"]


def test_view_hides_tail_of_finished_stages(full: Recording) -> None:
    board = StageBoard()
    for event in full.events:
        board(None, event["level"], dict(event))

    view = _render_view(board)

    assert "example.com/hello" not in view
    rows = [line.split() for line in view.splitlines()[1:]]
    assert [row[1:3] for row in rows] == [["builder", "done"], ["1", "done"]]
    assert rows[0][4:6] == ["5/5", "steps"]


def test_view_strips_escape_sequences() -> None:
    board = StageBoard()
    for event in (
        {"event": "build.started", "target": "s", "needed": ["s"]},
        {"event": "stage.started", "stage": "s", "stage_index": 0, "steps": 2},
        {"event": "step.started", "stage": "s", "stage_index": 0, "step": 2},
    ):
        board(None, "info", event)
    board.write_line(
        "s", 0, "\x1b[31mred\x1b[0m\x1b[2J and\tprogress 10%\rprogress 99%"
    )

    view = _render_view(board)

    assert "\x1b" not in view
    assert "│ progress 99%" in view


def test_tty_final_frame_shows_done_rows(full: Recording) -> None:
    text = run_output(full, OutputStyle.TTY)

    assert "\x1b[?25l" in text  # the cursor is hidden while the view runs
    assert text.count("\x1b[?25h") == 1
    final = text.rsplit("\x1b[2K", 1)[-1]
    assert "builder" in text
    assert "example.com/hello" not in final
    assert "built 4acb383012ce" in text.splitlines()[-1]
    frame = text.split("\x1b[?25h")[0].rsplit("target 1:", 1)[1]
    assert "2 of 2 stages finished" in frame
    assert re.search(r"builder\s+done", frame)
    assert re.search(r"\b1\s+done", frame)


def test_tty_failure_marks_stage_failed(failed: Recording) -> None:
    stream = io.StringIO()
    output = open_build_output(OutputStyle.TTY, keep_log=False, stream=stream)
    before_failure = Recording(failed.events[:-1], None, failed.error)
    for _ in play(before_failure, output, stream):
        pass
    frame_start = len(stream.getvalue())

    # cli.py closes the output before it logs build.failed.
    output.close(failed.error)
    assert output.renderer is not None
    message = output.renderer(None, "error", dict(failed.events[-1]))

    frame = stream.getvalue()[frame_start:]
    assert re.search(r"builder\s+failed", frame)
    assert "3: RUN echo about" in frame
    assert re.search(r"\b1\s+waiting", frame)
    assert stream.getvalue().count("\x1b[?25h") == 1
    assert message.startswith("[builder] error: stage builder, step 3/3")


def test_tty_verbose_prints_every_line_above_view(full: Recording) -> None:
    text = run_output(full, OutputStyle.TTY, verbose=True)

    assert "[builder] example.com/hello\n" in text
    assert "[1] COMMIT\n" in text
    assert "[builder] STEP 2/5: USER root\n" in text


def test_tty_prints_warnings_above_view() -> None:
    board = StageBoard()
    stream = io.StringIO()
    renderer = TtyRenderer(board, colour=False, stream=stream, width=80)
    started = {"event": "build.started", "level": "info", "target": "t", "needed": []}
    with pytest.raises(structlog.DropEvent):
        renderer(None, "info", board(None, "info", started))
    warning = {"event": "pull.retrying", "level": "warning", "reference": "x"}

    with pytest.raises(structlog.DropEvent):
        renderer(None, "warning", warning)
    renderer.close()

    assert "warning: pull.retrying reference=x\n" in stream.getvalue()


def test_tty_before_build_prints_plain_lines() -> None:
    renderer = TtyRenderer(StageBoard(), colour=False, stream=io.StringIO())

    text = renderer(None, "info", {"event": "image.pulling", "level": "info"})
    renderer.close()

    assert text == "image.pulling"
    assert not renderer.live


def test_write_line_result_tells_logs_whether_to_write() -> None:
    plain = open_build_output(OutputStyle.PLAIN, keep_log=False, stream=io.StringIO())
    json_lines = open_build_output(OutputStyle.JSON, keep_log=False)
    quiet_json = open_build_output(OutputStyle.JSON, quiet=True, keep_log=False)

    assert plain.write_line("s", 0, "x") is True
    assert json_lines.write_line("s", 0, "x") is False
    assert quiet_json.write_line("s", 0, "x") is True
    assert json_lines.renderer is None
    assert json_lines.log_format is LogFormat.JSON


def test_plain_renderer_prefix_matches_console_renderer() -> None:
    stream = io.StringIO()
    renderer = PlainRenderer(colour=True, stream=stream)
    event = {"event": "step.output", "level": "debug", "stage": "b", "line": "hi"}

    renderer.write_line("b", 0, "hi")

    assert stream.getvalue() == renderer(None, "debug", event) + "\n"
