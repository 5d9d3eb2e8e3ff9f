"""Turn the Podman build stream into per-stage events and a build result.

The libpod build endpoint sends JSON lines. Each ``stream`` value contains text
that may contain several lines or part of one. Buildah 1.28 marks steps as
``[i/N] STEP j/M: INSTRUCTION``, where ``i`` is the stage's 1-based position in
the Containerfile; the prefix is left out when only one stage is built. A
finished step prints ``--> ID`` (``--> Using cache ID`` for a cache hit), the
last stage prints ``COMMIT``, and the last line of a successful build is the
full image id. A failure is a message with ``error`` and ``errorDetail``.
Output lines without a prefix belong to the stage of the last step line.

A step's own output shares the stream with these markers. So a line that
looks like one counts as one only where the build can be at that point. A
step line counts only for the next step, once the previous step finished. A
layer line counts only when the line after it is the marker Podman prints
next, and an image id line only as the stream's last line. Other such lines
are output.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bootc_builder.containerfile import Containerfile, Stage
from bootc_builder.errors import BuildFailedError, StepFailedError
from bootc_builder.logs import line_sink

_STEP = re.compile(r"^(?:\[(\d+)/(\d+)\] )?STEP (\d+)/(\d+): (.*)$")
_COMMIT = re.compile(r"^(?:\[\d+/\d+\] )?(COMMIT\b)")
_LAYER = re.compile(r"^--> (Using cache )?([0-9a-f]{7,64})$")
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
_EXIT_STATUS = re.compile(r"exit status (\d+)")
_TAGGED = "Successfully tagged "
_CACHE_HIT = "--> Using cache "
# First characters of the lines that may be markers rather than output:
# "[i/N] STEP", "STEP", "--> ID", "COMMIT" and "Successfully tagged".
_MARKER_STARTS = frozenset("[S-C")
_IMAGE_ID_LENGTH = 64

TAIL_LINES = 20


@dataclass(slots=True)
class StageRecord:
    """The progress of one stage, as the stream has shown it so far."""

    index: int
    label: str
    total_steps: int
    started_at: float
    finished_at: float | None = None
    steps: int = 0
    cached_steps: int = 0
    current_step: int = 0
    instruction: str = ""
    last_layer: str | None = None
    step_cached: bool = False
    status: str = "running"
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def duration_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return round(end - self.started_at, 3)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """A finished build: the image id, its tags and what each stage did."""

    image_id: str
    tags: tuple[str, ...]
    duration_s: float
    stages: tuple[StageRecord, ...]


class BuildMonitor:
    """Consume decoded stream messages, log events, and produce the result.

    ``logger`` is a structlog bound logger; events are named ``stage.started``,
    ``step.started``, ``step.finished``, ``step.output``, ``stage.finished``.
    """

    def __init__(
        self,
        containerfile: Containerfile,
        target: Stage,
        logger: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        podman_command: str = "podman",
    ) -> None:
        self._containerfile = containerfile
        self._podman_command = podman_command
        self._target = target
        self._log = logger
        self._clock = clock
        self._started_at = clock()
        self._stages: dict[int, StageRecord] = {}
        self._stage_logs: dict[int, Any] = {}
        self._current: StageRecord | None = None
        self._pending = ""
        self._image_id: str | None = None
        self._tags: list[str] = []
        self._error: str | None = None
        self._sink = line_sink()
        # A layer or image id line, until the line after it shows what it is.
        self._unconfirmed: str | None = None

    @property
    def current_stage(self) -> StageRecord | None:
        """The stage whose step printed last, if any step has started."""
        return self._current

    def feed(self, message: dict[str, Any]) -> None:
        """Process one decoded JSON message of the build stream."""
        text = message.get("stream")
        if text is not None:
            self._feed_text(text)
            return
        error = message.get("error")
        if error is None:
            detail = message.get("errorDetail")
            if isinstance(detail, dict):
                error = detail.get("message")
        if error is not None:
            self._flush_pending()
            self._confirm_marker()
            self._error = str(error).strip()
            return
        aux = message.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self._image_id = aux["ID"].removeprefix("sha256:")

    def _feed_text(self, text: str) -> None:
        if self._pending:
            text = self._pending + text
            self._pending = ""
        lines = text.split("\n")
        self._pending = lines.pop()
        # Plain output lines go out in batches, one write for each message of
        # the stream, because builds print hundreds of thousands of them.
        batch: list[str] = []
        for line in lines:
            if self._unconfirmed is not None:
                if _confirms(self._unconfirmed, line):
                    self._confirm_marker()
                else:
                    batch.append(self._unconfirmed)
                    self._unconfirmed = None
            if line[:1] in _MARKER_STARTS or len(line) == _IMAGE_ID_LENGTH:
                if batch:
                    self._output(batch)
                    batch = []
                output = self._handle_marker(line)
                if output is None:
                    continue
                line = output
            batch.append(line)
        if batch:
            self._output(batch)

    def _flush_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._feed_text(pending + "\n")

    def _confirm_marker(self) -> None:
        """Apply the unconfirmed layer or image id line as the marker it resembles."""
        line, self._unconfirmed = self._unconfirmed, None
        if line is None:
            return
        if line.startswith("-->"):
            self._apply_layer(line)
        else:
            self._image_id = line

    def _handle_marker(self, line: str) -> str | None:
        """Handle a line that may be a step, layer, commit or id marker.

        Returns the text to show as output, or None when the line was only a
        marker.
        """
        first = line[:1]
        if first in ("[", "S") and self._handle_step(line):
            return None
        if (first == "-" and _LAYER.match(line)) or _IMAGE_ID.match(line):
            self._unconfirmed = line
            return None
        if first in ("[", "C") and (commit := _COMMIT.match(line)):
            # The stage prefix is dropped: the event carries the stage already.
            return line[commit.start(1) :]
        if line.startswith(_TAGGED):
            self._tags.append(line[len(_TAGGED) :])
        return line

    def _output(self, lines: list[str]) -> None:
        current = self._current
        if current is None:
            for line in lines:
                self._log.debug("build.output", line=line)
            return
        current.tail.extend(lines)
        if self._sink is not None:
            self._sink.write_lines(current.label, current.index, lines)
            return
        stage_log = self._stage_logs[current.index]
        for line in lines:
            stage_log.debug("step.output", line=line)

    def _handle_step(self, line: str) -> bool:
        match = _STEP.match(line)
        if match is None:
            return False
        position, _, step, steps, instruction = match.groups()
        index = int(position) - 1 if position is not None else self._target.index
        record = self._stages.get(index)
        if not self._step_can_start(record, int(step)):
            return False
        if record is None:
            record = self._start_stage(index, int(steps))
        record.current_step = int(step)
        record.step_cached = False
        record.instruction = instruction
        record.steps = max(record.steps, int(step) - 1)
        self._current = record
        self._stage_logs[index].info(
            "step.started",
            step=int(step),
            steps=int(steps),
            instruction=instruction,
            line=self._instruction_line(index, int(step)),
        )
        if instruction.split(" ", 1)[0].upper() == "FROM" and int(step) == 1:
            # A FROM step prints no layer line; it counts as done once it starts.
            record.steps = 1
            record.last_layer = _from_image(instruction)
            if record.total_steps == 1:
                self._finish_stage(record, "done")
        return True

    def _step_can_start(self, record: StageRecord | None, step: int) -> bool:
        """Tell whether a step line for ``step`` of ``record`` can be a marker.

        Podman runs one step at a time: a stage starts at step 1 once no other
        stage is running, and a step starts once the one before it finished.
        """
        if record is None:
            current = self._current
            return step == 1 and (current is None or current.status != "running")
        return (
            record.status == "running"
            and step == record.current_step + 1
            and record.steps >= record.current_step
        )

    def _apply_layer(self, line: str) -> None:
        match = _LAYER.match(line)
        record = self._current
        if match is None or record is None:
            return
        if match.group(1) is not None:
            # A cache hit prints "--> Using cache FULL_ID", then "--> SHORT_ID".
            record.cached_steps += 1
            record.step_cached = True
            return
        record.last_layer = match.group(2)
        record.steps = max(record.steps, record.current_step)
        self._stage_logs[record.index].debug(
            "step.finished",
            step=record.current_step,
            layer=record.last_layer,
            cached=record.step_cached,
        )
        if record.current_step >= record.total_steps and record.status == "running":
            self._finish_stage(record, "done")

    def _start_stage(self, index: int, total_steps: int) -> StageRecord:
        stage = self._stage_at(index)
        label = stage.label if stage is not None else str(index)
        record = StageRecord(
            index=index, label=label, total_steps=total_steps, started_at=self._clock()
        )
        self._stages[index] = record
        stage_log = self._log.bind(stage=label, stage_index=index)
        self._stage_logs[index] = stage_log
        stage_log.info("stage.started", steps=total_steps)
        return record

    def _finish_stage(self, record: StageRecord, status: str) -> None:
        record.status = status
        record.finished_at = self._clock()
        self._stage_logs[record.index].info(
            "stage.finished",
            status=status,
            duration_s=record.duration_s,
            steps=record.steps,
            cached_steps=record.cached_steps,
        )

    def _stage_at(self, index: int) -> Stage | None:
        stages = self._containerfile.stages
        return stages[index] if 0 <= index < len(stages) else None

    def _instruction_line(self, index: int, step: int) -> int | None:
        stage = self._stage_at(index)
        if stage is None or not 1 <= step <= len(stage.instructions):
            return None
        return stage.instructions[step - 1].line

    def finish(self) -> BuildResult:
        """Close the stream and return the result.

        Raises:
            StepFailedError: the stream reported a failed step.
            BuildFailedError: the stream reported another failure, or ended
                without an image id and without an error.
        """
        self._flush_pending()
        self._confirm_marker()
        duration = round(self._clock() - self._started_at, 3)
        if self._error is not None:
            raise self._failure(self._error)
        if self._image_id is None:
            raise BuildFailedError(
                "the build stream ended without an image id and without an error; "
                "the Podman service may have stopped during the build",
                stage=self._current.label if self._current else None,
            )
        for record in self._stages.values():
            if record.status == "running":
                self._finish_stage(record, "done")
        return BuildResult(
            image_id=self._image_id,
            tags=tuple(self._tags),
            duration_s=duration,
            stages=tuple(sorted(self._stages.values(), key=lambda r: r.index)),
        )

    def _failure(self, error: str) -> BuildFailedError:
        record = self._current
        if record is None:
            return BuildFailedError(f"the build failed before any step ran: {error}")
        for other in self._stages.values():
            if other.finished_at is None:
                other.finished_at = self._clock()
        record.status = "failed"
        status_match = _EXIT_STATUS.search(error)
        exit_status = int(status_match.group(1)) if status_match else None
        line = self._instruction_line(record.index, record.current_step)
        if record.current_step <= 1:
            # The FROM itself failed, so there is no layer of this stage to enter.
            record.last_layer = None
        return StepFailedError(
            _describe_failure(
                record,
                line,
                exit_status,
                error,
                self._containerfile.path,
                self._podman_command,
            ),
            stage=record.label,
            step=record.current_step,
            instruction=record.instruction,
            line=line,
            exit_status=exit_status,
            tail=list(record.tail),
            last_layer=record.last_layer,
            containerfile=self._containerfile.path,
        )

    @property
    def stages(self) -> tuple[StageRecord, ...]:
        """Every stage seen so far, in Containerfile order."""
        return tuple(sorted(self._stages.values(), key=lambda r: r.index))


def _confirms(marker: str, line: str) -> bool:
    """Tell whether ``line`` is what Podman prints after ``marker``.

    After a cache hit's layer line comes the short layer id, or the commit in
    the last step. After a layer line comes the next step, the commit, the
    tag or the image id. The image id is the last line of a build, so only
    the stream's end confirms it.
    """
    if marker.startswith(_CACHE_HIT):
        return bool(_COMMIT.match(line)) or (
            bool(_LAYER.match(line)) and not line.startswith(_CACHE_HIT)
        )
    if marker.startswith("-->"):
        return bool(
            _STEP.match(line)
            or _COMMIT.match(line)
            or _IMAGE_ID.match(line)
            or line.startswith(_TAGGED)
        )
    return False


def _from_image(instruction: str) -> str | None:
    """Return the image a FROM step starts from, or None for scratch (no shell)."""
    words = instruction.split()
    names = [word for word in words[1:] if not word.startswith("--")]
    if not names or names[0] == "scratch":
        return None
    return names[0]


def _describe_failure(
    record: StageRecord,
    line: int | None,
    exit_status: int | None,
    error: str,
    containerfile: str,
    podman_command: str,
) -> str:
    where = f" ({containerfile}:{line})" if line is not None else ""
    status = f" with exit status {exit_status}" if exit_status is not None else ""
    parts = [
        f"stage {record.label}, step {record.current_step}/{record.total_steps} "
        f"`{record.instruction}`{where} failed{status}"
    ]
    if exit_status is None:
        parts[0] += f": {error}"
    if record.tail:
        parts.append(f"last output of stage {record.label}:")
        parts.extend(f"  | {text}" for text in record.tail)
    if record.last_layer:
        parts.append(
            f"last layer that built: {record.last_layer}; open a shell in it with: "
            f"{podman_command} run --rm -it {record.last_layer} /bin/sh"
        )
    return "\n".join(parts)
