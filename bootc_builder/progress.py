"""Build progress on stderr: a live view on terminals, plain lines elsewhere.

``choose_style`` picks one of five styles from ``--log-format``,
``--progress`` and the environment. ``open_build_output`` puts together what
that style needs for one build:

- ``StageBoard``: a structlog processor that follows the stage events and
  keeps each stage's state and last output lines;
- a renderer: ``PlainRenderer`` (``[stage] line``), ``GitHubRenderer``
  (log groups and an error annotation), ``GitLabRenderer`` (collapsible
  sections) or ``TtyRenderer`` (a live view drawn with rich), or none, when
  logs.py writes JSON lines;
- optionally a ``BuildLog`` that copies every event to a file.

Output lines are most of what a build logs, and ``logs._LineSink`` hands them
to ``BuildOutput.write_line`` without building an event, so every class here
takes lines on that path too, as ``write_line(stage, stage_index, line)``.
"""

from __future__ import annotations

import atexit
import enum
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import structlog

from bootc_builder._entry import allow_rich
from bootc_builder.buildstream import StageRecord
from bootc_builder.config import LogFormat
from bootc_builder.logs import ConsoleRenderer, EventDict, use_colour

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

    from bootc_builder.buildlog import BuildLog

# Output lines of the running stage that the live view shows under its row.
VIEW_TAIL_LINES = 5
# The live view is redrawn, and lines printed above it, this often at most.
REFRESH_INTERVAL_S = 0.1

_LEVELS = {
    "debug": 10,
    "info": 20,
    "warning": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
}
_TRUE_VALUES = ("1", "true", "yes")


class ProgressMode(enum.StrEnum):
    """The values of ``--progress``."""

    AUTO = "auto"
    TTY = "tty"
    PLAIN = "plain"


class OutputStyle(enum.StrEnum):
    """Output style of a build's progress on stderr."""

    TTY = "tty"
    PLAIN = "plain"
    GITHUB = "github"
    GITLAB = "gitlab"
    JSON = "json"

    @property
    def log_format(self) -> LogFormat:
        """The format to pass to ``logs.configure_logging``."""
        return LogFormat.JSON if self is OutputStyle.JSON else LogFormat.CONSOLE


class CiService(enum.StrEnum):
    """The CI service the process runs under, as its environment shows."""

    GITHUB = "github"
    GITLAB = "gitlab"
    OTHER = "other"


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE_VALUES


def detect_ci(env: Mapping[str, str]) -> CiService | None:
    """Return the CI service from GITHUB_ACTIONS, GITLAB_CI and CI, or None."""
    if _is_true(env.get("GITHUB_ACTIONS")):
        return CiService.GITHUB
    if _is_true(env.get("GITLAB_CI")):
        return CiService.GITLAB
    if _is_true(env.get("CI")):
        return CiService.OTHER
    return None


def choose_style(
    log_format: LogFormat,
    progress: ProgressMode,
    *,
    stream: TextIO,
    env: Mapping[str, str],
) -> OutputStyle:
    """Pick the output style.

    ``--log-format json`` always gives JSON lines and ``--progress tty`` a live
    view. Otherwise GitHub Actions and GitLab CI get plain lines with their
    folding markers, and any other CI gets plain lines. With ``auto`` for both
    options, a terminal gets the live view and anything else JSON lines.
    """
    if log_format is LogFormat.JSON:
        return OutputStyle.JSON
    if progress is ProgressMode.TTY:
        return OutputStyle.TTY
    ci = detect_ci(env)
    if ci is CiService.GITHUB:
        return OutputStyle.GITHUB
    if ci is CiService.GITLAB:
        return OutputStyle.GITLAB
    if progress is ProgressMode.PLAIN or ci is not None:
        return OutputStyle.PLAIN
    if stream.isatty():
        return OutputStyle.TTY
    if log_format is LogFormat.CONSOLE:
        return OutputStyle.PLAIN
    return OutputStyle.JSON


def format_duration(seconds: float) -> str:
    """Format seconds as ``4.2s``, ``3m05s`` or ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, whole_seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{whole_seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def stage_status(record: StageRecord | None) -> str:
    """Name a stage's state: waiting, running, cached, done, failed or stopped.

    A finished stage is ``cached`` when every step after its FROM was a cache
    hit, because Buildah 1.28 prints no cache line for a FROM step.
    """
    if record is None:
        return "waiting"
    if (
        record.status == "done"
        and record.cached_steps > 0
        and record.cached_steps >= record.steps - 1
    ):
        return "cached"
    return record.status


class StageBoard:
    """The state of every stage of one build, kept up to date from its events.

    It is a structlog processor that passes every event on unchanged, and it
    takes output lines through ``write_line``. The live view reads it from
    another thread, so every change and every read acquires ``lock``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.target: str | None = None
        self.started_at: float | None = None
        self.build_finished = False
        self._clock = clock
        self._needed: list[str] = []
        self._needed_index: dict[str, int] = {}
        self._by_index: dict[int, StageRecord] = {}
        self._handlers: dict[str, Callable[[EventDict], None]] = {
            "build.started": self._build_started,
            "stage.started": self._stage_started,
            "step.started": self._step_started,
            "step.finished": self._step_finished,
            "step.output": self._step_output,
            "stage.finished": self._stage_finished,
            "build.finished": self._build_finished,
            "build.failed": self._build_failed,
        }

    def __call__(self, _: Any, __: str, event_dict: EventDict) -> EventDict:
        handler = self._handlers.get(event_dict.get("event", ""))
        if handler is not None:
            with self.lock:
                handler(event_dict)
        return event_dict

    def write_line(self, stage: str, stage_index: int, line: str) -> None:
        """Add one output line to the tail of its stage."""
        self.write_lines(stage, stage_index, [line])

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        """Add output lines to the tail of their stage."""
        with self.lock:
            record = self._by_index.get(stage_index)
            if record is not None:
                record.tail.extend(lines)

    def now(self) -> float:
        return self._clock()

    def rows(self) -> list[tuple[str, StageRecord | None]]:
        """List each stage the target needs, in build order, with its record.

        The record is None for a stage that has not started. Stages that ran
        without being listed in ``build.started`` come last. Hold ``lock``.
        """
        rows: list[tuple[str, StageRecord | None]] = []
        listed: set[int] = set()
        by_label = {record.label: record for record in self._by_index.values()}
        for label in self._needed:
            record = by_label.get(label)
            rows.append((label, record))
            if record is not None:
                listed.add(record.index)
        for index in sorted(self._by_index):
            if index not in listed:
                record = self._by_index[index]
                rows.append((record.label, record))
        return rows

    def records(self) -> list[StageRecord]:
        """Return the stages that started, in Containerfile order."""
        with self.lock:
            return [self._by_index[index] for index in sorted(self._by_index)]

    def unstarted(self) -> list[tuple[str, int | None]]:
        """Return the label and index of each needed stage that never started."""
        with self.lock:
            return [
                (label, self._needed_index.get(label))
                for label, record in self.rows()
                if record is None
            ]

    def tail(self, stage: str | None) -> list[str]:
        """Return the last output lines of the stage with this label."""
        with self.lock:
            for record in self._by_index.values():
                if record.label == stage:
                    return list(record.tail)
        return []

    def unfinished_stage(self) -> str | None:
        """Return the label of the last stage to start that did not finish."""
        with self.lock:
            unfinished = [
                record
                for record in self._by_index.values()
                if record.status in ("running", "failed", "stopped")
            ]
        if not unfinished:
            return None
        return max(unfinished, key=lambda record: record.started_at).label

    def stop(self, failed_stage: str | None) -> None:
        """Mark ``failed_stage`` failed and every other running stage stopped."""
        with self.lock:
            self._stop_running(failed_stage)

    def _stop_running(self, failed_stage: str | None) -> None:
        now = self._clock()
        for record in self._by_index.values():
            if record.status == "running":
                record.status = "failed" if record.label == failed_stage else "stopped"
                record.finished_at = now

    def _record(self, event_dict: EventDict) -> StageRecord | None:
        return self._by_index.get(event_dict.get("stage_index", -1))

    def _build_started(self, event_dict: EventDict) -> None:
        self.target = _optional_str(event_dict.get("target"))
        self.started_at = self._clock()
        self._needed = [str(label) for label in event_dict.get("needed") or ()]
        indexes = event_dict.get("needed_index") or ()
        self._needed_index = {
            label: int(index)
            for label, index in zip(self._needed, indexes, strict=False)
        }

    def _stage_started(self, event_dict: EventDict) -> None:
        index = int(event_dict.get("stage_index", -1))
        self._by_index[index] = StageRecord(
            index=index,
            label=str(event_dict.get("stage", index)),
            total_steps=int(event_dict.get("steps") or 0),
            started_at=self._clock(),
        )

    def _step_started(self, event_dict: EventDict) -> None:
        record = self._record(event_dict)
        if record is None:
            return
        step = int(event_dict.get("step") or 0)
        record.current_step = step
        record.instruction = str(event_dict.get("instruction", ""))
        record.total_steps = int(event_dict.get("steps") or record.total_steps)
        record.steps = max(record.steps, step - 1)

    def _step_finished(self, event_dict: EventDict) -> None:
        record = self._record(event_dict)
        if record is None:
            return
        record.last_layer = _optional_str(event_dict.get("layer"))
        record.steps = max(record.steps, int(event_dict.get("step") or 0))
        if event_dict.get("cached"):
            record.cached_steps += 1

    def _step_output(self, event_dict: EventDict) -> None:
        record = self._record(event_dict)
        if record is not None:
            record.tail.append(str(event_dict.get("line", "")))

    def _stage_finished(self, event_dict: EventDict) -> None:
        record = self._record(event_dict)
        if record is None:
            return
        record.status = str(event_dict.get("status", "done"))
        record.steps = int(event_dict.get("steps") or record.steps)
        record.cached_steps = int(event_dict.get("cached_steps") or 0)
        duration = event_dict.get("duration_s")
        if isinstance(duration, int | float):
            record.finished_at = record.started_at + duration
        else:
            record.finished_at = self._clock()

    def _build_finished(self, _: EventDict) -> None:
        self.build_finished = True
        now = self._clock()
        for record in self._by_index.values():
            if record.status == "running":
                record.status = "done"
                record.finished_at = now

    def _build_failed(self, event_dict: EventDict) -> None:
        self._stop_running(_optional_str(event_dict.get("stage")))


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class Renderer(Protocol):
    """A structlog renderer that also takes output lines and must be closed."""

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> str:
        """Return the text to print, or raise ``structlog.DropEvent``."""

    def write_line(self, stage: str, stage_index: int, line: str) -> None:
        """Show one output line of a stage."""

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        """Show output lines of a stage that arrived together."""
        for line in lines:
            self.write_line(stage, stage_index, line)

    def close(self, error: BaseException | None = None) -> None:
        """Finish the output. ``error`` is the exception that stopped the build."""


class LevelFilter:
    """A structlog processor that drops events below a level, such as ``warning``."""

    def __init__(self, min_level: str) -> None:
        self._min_level = _LEVELS[min_level]

    def __call__(self, _: Any, __: str, event_dict: EventDict) -> EventDict:
        if _LEVELS.get(event_dict.get("level", "info"), 20) < self._min_level:
            raise structlog.DropEvent
        return event_dict


class PlainRenderer(ConsoleRenderer):
    """Lines prefixed with their stage, as ``logs.ConsoleRenderer`` writes them.

    ``min_level`` drops quieter events, for ``-q``. ``stream`` is where
    ``write_line`` and ``close`` write, by default the current ``sys.stderr``,
    which is also where logs.py writes the returned text.
    """

    def __init__(
        self,
        *,
        colour: bool,
        min_level: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(colour=colour)
        self._min_level = _LEVELS[min_level] if min_level is not None else 0
        self._stream = stream
        self._prefix_dim = "\x1b[2m" if colour else ""
        self._prefix_reset = "\x1b[0m" if colour else ""
        self._prefixes: dict[str, str] = {}

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> str:
        if self._min_level:
            level = _LEVELS.get(event_dict.get("level", "info"), 20)
            if level < self._min_level:
                raise structlog.DropEvent
        if event_dict.get("event") == "build.started":
            needed = ", ".join(str(label) for label in event_dict.get("needed") or ())
            return f"building target {event_dict.get('target')}: stages {needed}"
        return super().__call__(logger, method_name, event_dict)

    def prefix(self, stage: str) -> str:
        """Return the ``[stage] `` prefix of an output line, made once per stage."""
        text = self._prefixes.get(stage)
        if text is None:
            text = f"{self._prefix_dim}[{stage}]{self._prefix_reset} "
            self._prefixes[stage] = text
        return text

    def write_line(self, stage: str, stage_index: int, line: str) -> None:
        if self._min_level > _LEVELS["debug"]:
            return
        # Python 3.9 and later line-buffer sys.stderr, so each line reaches the
        # terminal as soon as it is written.
        self.stream.write(f"{self.prefix(stage)}{line}\n")

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        if self._min_level > _LEVELS["debug"]:
            return
        # One write per batch: a line-buffered stderr flushes on every newline
        # of a write, but makes one system call for the whole batch.
        prefix = self.prefix(stage)
        self.stream.write("".join(f"{prefix}{line}\n" for line in lines))

    def close(self, error: BaseException | None = None) -> None:
        self.stream.flush()


def _error_stage(error: BaseException | None) -> str | None:
    stage = getattr(error, "stage", None)
    return stage if isinstance(stage, str) else None


class _FoldingRenderer(PlainRenderer):
    """Plain lines with each stage's output folded by CI markers.

    Subclasses write the markers. A failure closes the open fold and then
    shows the error and the last output lines of the failed stage unfolded,
    so they are visible without opening anything.
    """

    def __init__(
        self, board: StageBoard, *, colour: bool, stream: TextIO | None = None
    ) -> None:
        super().__init__(colour=colour, stream=stream)
        self._board = board
        self._open_fold: str | None = None

    def open_fold(self, stage: str) -> str:
        raise NotImplementedError

    def close_fold(self, stage: str) -> str:
        raise NotImplementedError

    def annotate_error(self, event_dict: EventDict) -> list[str]:
        """Return marker lines that precede the error message, if any."""
        return []

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> str:
        event = event_dict.get("event")
        text = super().__call__(logger, method_name, event_dict)
        if event == "stage.started":
            lines = self._end_fold()
            stage = str(event_dict.get("stage"))
            lines.append(self.open_fold(stage))
            self._open_fold = stage
            lines.append(text)
            return "\n".join(lines)
        if event == "stage.finished" and self._open_fold == event_dict.get("stage"):
            return "\n".join([text, *self._end_fold()])
        if event in ("build.failed", "command.failed"):
            return "\n".join(self._failure_lines(event_dict, text))
        return text

    def _failure_lines(self, event_dict: EventDict, text: str) -> list[str]:
        lines = self._end_fold()
        lines.extend(self.annotate_error(event_dict))
        lines.append(text)
        message = str(event_dict.get("message", ""))
        stage = _optional_str(event_dict.get("stage")) or self._board.unfinished_stage()
        tail = self._board.tail(stage) if stage is not None else []
        # A failed step's message already ends with the stage's last lines.
        if tail and "last output of stage" not in message:
            lines.append(f"last output of stage {stage}:")
            lines.extend(f"  | {line}" for line in tail)
        return lines

    def _end_fold(self) -> list[str]:
        if self._open_fold is None:
            return []
        stage, self._open_fold = self._open_fold, None
        return [self.close_fold(stage)]

    def close(self, error: BaseException | None = None) -> None:
        for line in self._end_fold():
            self.stream.write(line + "\n")
        super().close(error)


def _escape_workflow_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_workflow_property(text: str) -> str:
    return _escape_workflow_data(text).replace(":", "%3A").replace(",", "%2C")


class GitHubRenderer(_FoldingRenderer):
    """Plain lines in one ``::group::`` per stage, for GitHub Actions.

    A failed build gets an ``::error`` annotation on the Containerfile line of
    the failed step, with the path relative to ``workspace`` when the file is
    inside it, because GitHub resolves annotation paths from the repository.
    Output lines keep their ``[stage]`` prefix, so a build step cannot issue
    workflow commands, which the runner reads from lines starting with ``::``.
    """

    def __init__(
        self,
        board: StageBoard,
        *,
        colour: bool,
        stream: TextIO | None = None,
        workspace: str | None = None,
    ) -> None:
        super().__init__(board, colour=colour, stream=stream)
        self._workspace = workspace

    def open_fold(self, stage: str) -> str:
        return f"::group::stage {_escape_workflow_data(stage)}"

    def close_fold(self, stage: str) -> str:
        return "::endgroup::"

    def annotate_error(self, event_dict: EventDict) -> list[str]:
        properties = []
        path = event_dict.get("containerfile")
        if path:
            properties.append(f"file={_escape_workflow_property(self._relative(path))}")
            line = event_dict.get("containerfile_line")
            if isinstance(line, int):
                properties.append(f"line={line}")
        stage = event_dict.get("stage")
        title = f"stage {stage} failed" if stage is not None else "bootc-build failed"
        properties.append(f"title={_escape_workflow_property(title)}")
        message = _escape_workflow_data(str(event_dict.get("message", "")))
        return [f"::error {','.join(properties)}::{message}"]

    def _relative(self, path: object) -> str:
        text = str(path)
        if self._workspace and os.path.isabs(text):
            workspace = os.path.abspath(self._workspace)
            if os.path.commonpath([workspace, text]) == workspace:
                return os.path.relpath(text, workspace)
        return text


_SECTION_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


class GitLabRenderer(_FoldingRenderer):
    """Plain lines in one collapsed section per stage, for GitLab CI.

    Section names may use letters, digits, ``_``, ``.`` and ``-`` only, so
    other characters of a stage name become ``_``. A name used again gets a
    number.
    """

    def __init__(
        self,
        board: StageBoard,
        *,
        colour: bool,
        stream: TextIO | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(board, colour=colour, stream=stream)
        self._wall_clock = wall_clock
        self._sections: dict[str, str] = {}
        self._used: set[str] = set()

    def open_fold(self, stage: str) -> str:
        base = "stage_" + _SECTION_NAME_INVALID.sub("_", stage)
        name, number = base, 1
        while name in self._used:
            number += 1
            name = f"{base}_{number}"
        self._used.add(name)
        self._sections[stage] = name
        return (
            f"\x1b[0Ksection_start:{int(self._wall_clock())}:{name}"
            f"[collapsed=true]\r\x1b[0Kstage {stage}"
        )

    def close_fold(self, stage: str) -> str:
        name = self._sections.pop(stage)
        return f"\x1b[0Ksection_end:{int(self._wall_clock())}:{name}\r\x1b[0K"


# Escape sequences and control characters that would move the cursor or
# clear the screen. Colour (SGR) sequences, tabs and newlines are kept.
_CURSOR_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-ln-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]"
)
# Every escape sequence and control character, for text inside the view.
_ANY_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
    r"|[\x00-\x08\x0a-\x1f\x7f]"
)
_SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ICONS = {
    "waiting": "·",
    "running": "•",
    "done": "✔",
    "cached": "✔",
    "failed": "✘",
    "stopped": "■",
}
_STATUS_STYLES = {
    "waiting": "dim",
    "running": "cyan",
    "done": "green",
    "cached": "green",
    "failed": "bold red",
    "stopped": "yellow",
}


def _view_text(line: str) -> str:
    """Make an output line safe to draw inside the view: one line, no escapes."""
    line = line.rstrip("\r").rsplit("\r", 1)[-1].expandtabs(4)
    return _ANY_CONTROL.sub("", line)


class _RawText:
    """Text that rich writes as it is, colour escapes included, without parsing it.

    Lines printed above the live view would cost several microseconds each if
    rich parsed and wrapped them. Written raw, they are wrapped by the terminal.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> RenderResult:
        from rich.segment import Segment

        yield Segment(self.text)


class BoardView:
    """The live view's content, built from the board at each refresh."""

    def __init__(self, board: StageBoard, *, spinners: bool, tails: bool) -> None:
        self._board = board
        self._spinners = spinners
        self._tails = tails

    def __rich__(self) -> Any:
        from rich.console import Group

        with self._board.lock:
            lines = list(self._lines(self._board.now()))
        return Group(*lines)

    def _lines(self, now: float) -> Iterator[Any]:
        from rich.text import Text

        board = self._board
        rows = board.rows()
        width = max((len(label) for label, _ in rows), default=0)
        finished = sum(
            1 for _, record in rows if record is not None and record.status != "running"
        )
        elapsed = format_duration(now - board.started_at) if board.started_at else ""
        yield Text(
            f"target {board.target}: {finished} of {len(rows)} stages finished"
            f"  {elapsed}",
            style="bold",
            no_wrap=True,
            overflow="ellipsis",
        )
        for label, record in rows:
            status = stage_status(record)
            yield self._row(label, width, status, record, now)
            if self._tails and record is not None and status == "running":
                for line in list(record.tail)[-VIEW_TAIL_LINES:]:
                    yield Text(
                        f"    │ {_view_text(line)}",
                        style="dim",
                        no_wrap=True,
                        overflow="ellipsis",
                    )

    def _row(
        self,
        label: str,
        width: int,
        status: str,
        record: StageRecord | None,
        now: float,
    ) -> Any:
        from rich.text import Text

        icon = _ICONS.get(status, " ")
        if status == "running" and self._spinners:
            icon = _SPINNER_FRAMES[int(now * 10) % len(_SPINNER_FRAMES)]
        style = _STATUS_STYLES.get(status, "")
        row = Text(no_wrap=True, overflow="ellipsis")
        row.append(f" {icon} ", style=style)
        row.append(f"{label:<{width}}  ", style="bold")
        row.append(f"{status:<7}  ", style=style)
        if record is None:
            return row
        end = record.finished_at if record.finished_at is not None else now
        row.append(f"{format_duration(end - record.started_at):>7}  ")
        steps = f"{record.steps}/{record.total_steps} steps"
        row.append(f"{steps:<11}  ")
        cached = f"{record.cached_steps} cached" if record.cached_steps else ""
        row.append(f"{cached:<10}  ", style="dim")
        if status in ("running", "failed", "stopped") and record.instruction:
            step = f"{record.current_step}: " if record.current_step else ""
            row.append(f"{step}{_view_text(record.instruction)}", style="dim")
        return row


class TtyRenderer:
    """A live view on a terminal: one row per stage, redrawn ten times a second.

    The view starts at ``build.started`` and stops at ``build.finished`` or
    ``close``; events outside it are written as plain lines. While it runs,
    events are kept in memory and a background thread prints them above the
    view and redraws it, so an output line costs a lock and an append. With
    ``verbose``, every line that the plain style shows is printed above the
    view. Without it, only events that the view does not show, such as
    warnings, are printed, and the running stage shows its last lines.
    """

    def __init__(
        self,
        board: StageBoard,
        *,
        colour: bool,
        verbose: bool = False,
        spinners: bool = True,
        stream: TextIO | None = None,
        refresh_interval: float = REFRESH_INTERVAL_S,
        width: int | None = None,
    ) -> None:
        self._board = board
        self._verbose = verbose
        self._plain = PlainRenderer(colour=colour, stream=stream)
        self._stream = stream
        self._colour = colour
        self._spinners = spinners
        self._width = width
        self._interval = refresh_interval
        self._pending: list[str] = []
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        atexit.register(self.close)

    @property
    def live(self) -> bool:
        """Whether the live view is on the terminal now."""
        return self._live is not None

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> str:
        event = event_dict.get("event")
        if self._live is None:
            if event != "build.started" or self._closed:
                return self._plain(logger, method_name, event_dict)
            self._start()
        if event == "build.finished":
            self._stop()
            return self._plain(logger, method_name, event_dict)
        shown_in_view = event in (
            "build.started",
            "stage.started",
            "step.started",
            "step.finished",
            "step.output",
            "stage.finished",
        )
        if self._verbose or not shown_in_view:
            text = self._plain(logger, method_name, event_dict)
            with self._board.lock:
                self._pending.append(text)
        raise structlog.DropEvent

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        if self._live is None:
            self._plain.write_lines(stage, stage_index, lines)
            return
        for line in lines:
            self.write_line(stage, stage_index, line)

    def write_line(self, stage: str, stage_index: int, line: str) -> None:
        if self._live is None:
            self._plain.write_line(stage, stage_index, line)
        elif self._verbose:
            text = f"{self._plain.prefix(stage)}{line}"
            with self._board.lock:
                self._pending.append(text)

    def close(self, error: BaseException | None = None) -> None:
        """Stop the view, showing the stage that ``error`` names as failed."""
        if self._live is not None and not self._board.build_finished:
            self._board.stop(_error_stage(error))
        self._stop()
        self._closed = True
        atexit.unregister(self.close)

    def _start(self) -> None:
        allow_rich()
        from rich.console import Console
        from rich.live import Live

        console = Console(
            file=self._stream if self._stream is not None else sys.stderr,
            force_terminal=True,
            color_system="auto" if self._colour else None,
            no_color=not self._colour,
            highlight=False,
            width=self._width,
        )
        view = BoardView(self._board, spinners=self._spinners, tails=not self._verbose)
        self._live = Live(
            view,
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._refresh_loop, name="bootc-build-live-view", daemon=True
        )
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._refresh()
            except OSError:
                # The terminal is gone after a hang-up or a closed pipe. The
                # next write on the main thread raises the same error.
                return

    def _refresh(self) -> None:
        live = self._live
        if live is None:
            return
        with self._board.lock:
            pending, self._pending = self._pending, []
        if pending:
            text = _CURSOR_CONTROL.sub("", "\n".join(pending))
            live.console.print(_RawText(text + "\n"), soft_wrap=True)
        live.refresh()

    def _stop(self) -> None:
        if self._live is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._refresh()
        self._live.stop()
        self._live = None


@dataclass
class BuildOutput:
    """The board, renderer and log file of one build, wired for logs.py.

    ``processors`` go between the timestamp processor and the renderer;
    ``renderer`` is None in the JSON style, where logs.py renders.
    ``write_line`` is the path of output lines. It returns False when logs.py
    must write the line, and True when it was shown or deliberately hidden.
    """

    style: OutputStyle
    board: StageBoard
    renderer: Renderer | None
    build_log: BuildLog | None
    quiet: bool

    @property
    def log_format(self) -> LogFormat:
        return self.style.log_format

    @property
    def processors(self) -> list[structlog.types.Processor]:
        chain: list[structlog.types.Processor] = [self.board]
        if self.build_log is not None:
            chain.append(self.build_log)
        if self.renderer is None and self.quiet:
            chain.append(LevelFilter("warning"))
        return chain

    def write_line(self, stage: str, stage_index: int, line: str) -> bool:
        return self.write_lines(stage, stage_index, [line])

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> bool:
        """Take output lines of one stage; True when they need no other writing."""
        self.board.write_lines(stage, stage_index, lines)
        if self.build_log is not None:
            self.build_log.write_lines(stage, stage_index, lines)
        if self.renderer is not None:
            self.renderer.write_lines(stage, stage_index, lines)
            return True
        return self.quiet

    def close(self, error: BaseException | None = None) -> None:
        """Stop the live view or close the open fold; later events print plainly.

        Stages still running are marked failed when ``error`` names them, and
        stopped otherwise.
        """
        if not self.board.build_finished:
            self.board.stop(_error_stage(error))
        if self.renderer is not None:
            self.renderer.close(error)

    def finish(self, *, success: bool) -> Path | None:
        """Close the log file and return the path of a kept temporary log, if any."""
        if self.build_log is None:
            return None
        return self.build_log.close(success=success)


def make_renderer(
    style: OutputStyle,
    board: StageBoard,
    *,
    verbose: bool = False,
    quiet: bool = False,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> Renderer | None:
    """Create the renderer of a style, or None for JSON, which logs.py renders.

    ``quiet`` gives plain lines of warnings and errors in every console
    style, without a live view or folds.
    """
    environment = os.environ if env is None else env
    colour = use_colour(stream if stream is not None else sys.stderr)
    if style is OutputStyle.JSON:
        return None
    if quiet:
        return PlainRenderer(colour=colour, min_level="warning", stream=stream)
    if style is OutputStyle.TTY:
        return TtyRenderer(
            board,
            colour=colour,
            verbose=verbose,
            spinners=detect_ci(environment) is None,
            stream=stream,
        )
    if style is OutputStyle.GITHUB:
        return GitHubRenderer(
            board,
            colour=colour,
            stream=stream,
            workspace=environment.get("GITHUB_WORKSPACE"),
        )
    if style is OutputStyle.GITLAB:
        return GitLabRenderer(board, colour=colour, stream=stream)
    return PlainRenderer(colour=colour, stream=stream)


def open_build_output(
    style: OutputStyle,
    *,
    verbose: bool = False,
    quiet: bool = False,
    log_file: Path | None = None,
    keep_log: bool = True,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> BuildOutput:
    """Put together the output of one build.

    Every event is copied to ``log_file``, or with ``keep_log`` to a
    temporary file that ``BuildOutput.finish`` keeps only when the build
    failed. Without either, nothing is copied.

    Raises:
        InputError: ``log_file`` cannot be opened for writing.
    """
    from bootc_builder.buildlog import BuildLog

    board = StageBoard()
    renderer = make_renderer(
        style, board, verbose=verbose, quiet=quiet, stream=stream, env=env
    )
    build_log: BuildLog | None = None
    if log_file is not None:
        build_log = BuildLog.open(log_file)
    elif keep_log:
        build_log = BuildLog.temporary()
    return BuildOutput(style, board, renderer, build_log, quiet)
