"""The end-of-build summary and the ``--json`` result document.

``summarize`` turns a finished build into a ``BuildSummary``: each stage's
status, duration, steps, cache hits and the size of the image its last layer
is, the final image, and how much smaller it is than the largest build stage.
``summarize_failure`` does the same for a build that stopped, from what the
progress board saw. The summary renders as a text table (``render_text``), as
Markdown for the GitHub job summary (``append_step_summary``) and as the
result document of ``--json`` (``result_document``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bootc_builder._entry import allow_rich
from bootc_builder.buildstream import BuildResult, StageRecord
from bootc_builder.errors import BootcBuildError, BuildFailedError, StepFailedError
from bootc_builder.progress import format_duration, stage_status

if TYPE_CHECKING:
    from bootc_builder.push import PushedImage

RESULT_SCHEMA = 1

# Returns the size in bytes of a local image or layer, or None when unknown.
# PodmanConnection.image_size is one.
SizeLookup = Callable[[str], int | None]

log = structlog.get_logger("bootc_builder")


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage of the summary.

    ``index`` is None only for a stage that never started and whose index the
    ``build.started`` event did not give.
    """

    index: int | None
    name: str
    status: str
    duration_s: float | None
    steps: int
    total_steps: int
    cached_steps: int
    size: int | None


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    """The error that stopped a build. The step fields are None unless a step failed."""

    message: str
    stage: str | None = None
    step: int | None = None
    exit_status: int | None = None
    containerfile_line: int | None = None


@dataclass(frozen=True, slots=True)
class SizeSaving:
    """The final image against the largest image of the other stages."""

    stage: str
    stage_size: int
    image_size: int

    @property
    def saved_bytes(self) -> int:
        return self.stage_size - self.image_size

    @property
    def saved_percent(self) -> float:
        return 100.0 * self.saved_bytes / self.stage_size if self.stage_size else 0.0


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """The outcome of a build: its image, or the stages it ran before it stopped."""

    target: str | None
    image_id: str | None
    tags: tuple[str, ...]
    image_size: int | None
    duration_s: float | None
    stages: tuple[StageSummary, ...]
    pushed: tuple[PushedImage, ...] = ()
    error: ErrorSummary | None = None

    @property
    def saving(self) -> SizeSaving | None:
        """Compare the final image with the largest other stage, when sizes are known.

        The final stage is the one with the highest index. A build of a single
        stage has nothing to compare with.
        """
        if self.image_size is None or len(self.stages) < 2:
            return None
        final = max(self.stages, key=lambda stage: stage.index or 0)
        sized = [
            stage
            for stage in self.stages
            if stage is not final and stage.size is not None
        ]
        if not sized:
            return None
        largest = max(sized, key=lambda stage: stage.size or 0)
        assert largest.size is not None
        return SizeSaving(largest.name, largest.size, self.image_size)


def _lookup_size(size_of: SizeLookup, reference: str | None) -> int | None:
    if not reference:
        return None
    try:
        return size_of(reference)
    except BootcBuildError as exc:
        # A missing size only leaves a cell of the summary empty.
        log.warning("image.size_unknown", reference=reference, error=str(exc))
        return None


def _stage_summary(record: StageRecord, size: int | None) -> StageSummary:
    return StageSummary(
        index=record.index,
        name=record.label,
        status=stage_status(record),
        duration_s=record.duration_s if record.finished_at is not None else None,
        steps=record.steps,
        total_steps=record.total_steps,
        cached_steps=record.cached_steps,
        size=size,
    )


def summarize(
    result: BuildResult,
    size_of: SizeLookup,
    *,
    target: str | None,
    pushed: Sequence[PushedImage] = (),
) -> BuildSummary:
    """Summarize a finished build, asking ``size_of`` for each stage's last layer.

    Sizes that cannot be read are left empty and logged as warnings.
    """
    stages = tuple(
        _stage_summary(record, _lookup_size(size_of, record.last_layer))
        for record in result.stages
    )
    return BuildSummary(
        target=target,
        image_id=result.image_id,
        tags=result.tags,
        image_size=_lookup_size(size_of, result.image_id),
        duration_s=result.duration_s,
        stages=stages,
        pushed=tuple(pushed),
    )


def error_summary(error: BaseException) -> ErrorSummary:
    """Describe an error for the summary. A failed step fills every field."""
    if isinstance(error, StepFailedError):
        return ErrorSummary(
            message=str(error),
            stage=error.stage,
            step=error.step,
            exit_status=error.exit_status,
            containerfile_line=error.line,
        )
    if isinstance(error, BuildFailedError):
        return ErrorSummary(message=str(error), stage=error.stage)
    return ErrorSummary(message=str(error))


def summarize_failure(
    error: BaseException,
    *,
    stages: Iterable[StageRecord],
    unstarted: Iterable[tuple[str, int | None]] = (),
    target: str | None,
    duration_s: float | None = None,
) -> BuildSummary:
    """Summarize a build that stopped, from the stages the progress board saw.

    ``stages`` are the stages that started and ``unstarted`` the label and
    index of those the target needed that never did, shown as ``skipped``.
    Sizes are not looked up because the service may be gone.
    """
    rows = []
    for record in stages:
        row = _stage_summary(record, None)
        if row.status == "running":
            row = replace(row, status="stopped")
        rows.append(row)
    rows.extend(
        StageSummary(
            index=index,
            name=label,
            status="skipped",
            duration_s=None,
            steps=0,
            total_steps=0,
            cached_steps=0,
            size=None,
        )
        for label, index in unstarted
    )
    return BuildSummary(
        target=target,
        image_id=None,
        tags=(),
        image_size=None,
        duration_s=duration_s,
        stages=tuple(rows),
        error=error_summary(error),
    )


def format_size(size: int | None) -> str:
    """Format bytes in decimal units to three significant digits, as podman 4.3 does."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _steps_cell(stage: StageSummary) -> str:
    if stage.status == "skipped":
        return "-"
    return f"{stage.steps}/{stage.total_steps}"


def _duration_cell(stage: StageSummary) -> str:
    return format_duration(stage.duration_s) if stage.duration_s is not None else "-"


def _saving_sentence(saving: SizeSaving) -> str:
    largest = f"{saving.stage} ({format_size(saving.stage_size)})"
    if saving.saved_bytes > 0:
        return (
            f"the final image is {format_size(saving.saved_bytes)} "
            f"({saving.saved_percent:.1f}%) smaller than the largest build "
            f"stage, {largest}"
        )
    return f"the final image is not smaller than the largest build stage, {largest}"


def _failure_headline(error: ErrorSummary) -> str:
    return error.message.split("\n", 1)[0]


def render_text(summary: BuildSummary, *, colour: bool, width: int = 100) -> str:
    """Render the summary as a table and a few lines, for a terminal or a log."""
    from io import StringIO

    allow_rich()
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("stage", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("cached", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for stage in summary.stages:
        table.add_row(
            stage.name,
            stage.status,
            _duration_cell(stage),
            _steps_cell(stage),
            str(stage.cached_steps),
            format_size(stage.size),
        )
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=colour,
        color_system="standard" if colour else None,
        no_color=not colour,
        highlight=False,
    )
    console.print(table)
    lines = [buffer.getvalue().rstrip("\n")]
    if summary.image_id is not None:
        tags = ", ".join(summary.tags) or "no tags"
        lines.append(
            f"image {summary.image_id[:12]} ({tags}), {format_size(summary.image_size)}"
        )
    saving = summary.saving
    if saving is not None:
        lines.append(_saving_sentence(saving))
    lines.extend(f"pushed {image.ref}@{image.digest}" for image in summary.pushed)
    if summary.error is not None:
        lines.append(f"failed: {_failure_headline(summary.error)}")
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _longest_backtick_run(text: str) -> int:
    longest = 0
    run = 0
    for character in text:
        run = run + 1 if character == "`" else 0
        longest = max(longest, run)
    return longest


def _code_span(text: str) -> str:
    # A code span ends at the first run of backticks as long as its opening
    # run, so the fence is one backtick longer than any run inside.
    fence = "`" * (_longest_backtick_run(text) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _fenced_block(text: str) -> list[str]:
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return [fence, text, fence]


def render_markdown(summary: BuildSummary) -> str:
    """Render the summary as GitHub-flavoured Markdown."""
    target = _code_span(summary.target) if summary.target else "the last stage"
    outcome = "failed" if summary.error is not None else "built"
    lines = [f"### bootc-build: {target} {outcome}", ""]
    lines.append("| Stage | Status | Duration | Steps | Cached | Size |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for stage in summary.stages:
        cells = (
            stage.name,
            stage.status,
            _duration_cell(stage),
            _steps_cell(stage),
            str(stage.cached_steps),
            format_size(stage.size),
        )
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    lines.append("")
    if summary.image_id is not None:
        tags = ", ".join(_code_span(tag) for tag in summary.tags) or "no tags"
        lines.append(
            f"Image {_code_span(summary.image_id)}, "
            f"{format_size(summary.image_size)}, tagged {tags}.  "
        )
    saving = summary.saving
    if saving is not None:
        sentence = _saving_sentence(saving)
        lines.append(sentence[0].upper() + sentence[1:] + ".  ")
    for image in summary.pushed:
        lines.append(f"Pushed {_code_span(f'{image.ref}@{image.digest}')}.  ")
    if summary.error is not None:
        if lines[-1]:
            lines.append("")
        lines.extend(_fenced_block(summary.error.message))
    return "\n".join(lines).rstrip() + "\n"


def append_step_summary(
    summary: BuildSummary, env: Mapping[str, str] | None = None
) -> Path | None:
    """Append the Markdown summary to the file GITHUB_STEP_SUMMARY names, if set.

    Returns the path written. A file that cannot be written is logged as a
    warning, because the build itself succeeded or failed on its own.
    """
    environment = os.environ if env is None else env
    name = environment.get("GITHUB_STEP_SUMMARY")
    if not name:
        return None
    path = Path(name)
    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(render_markdown(summary) + "\n")
    except OSError as exc:
        log.warning(
            "step_summary.write_failed", path=name, error=exc.strerror or str(exc)
        )
        return None
    return path


def result_document(summary: BuildSummary) -> dict[str, Any]:
    """Build the ``--json`` result document.

    tests/unit/result_schema.json is its JSON Schema.
    """
    error = summary.error
    return {
        "schema": RESULT_SCHEMA,
        "image_id": summary.image_id,
        "tags": list(summary.tags),
        "target": summary.target,
        "stages": [
            {
                "index": stage.index,
                "name": stage.name,
                "status": stage.status,
                "duration_s": stage.duration_s,
                "steps": stage.steps,
                "cached_steps": stage.cached_steps,
                "size": stage.size,
            }
            for stage in summary.stages
        ],
        "pushed": [image.as_dict() for image in summary.pushed],
        "error": None
        if error is None
        else {
            "message": error.message,
            "stage": error.stage,
            "step": error.step,
            "exit_status": error.exit_status,
            "containerfile_line": error.containerfile_line,
        },
    }


def write_iidfile(path: Path, image_id: str) -> None:
    """Write ``sha256:ID`` without a newline, as ``podman build --iidfile`` 4.3 does.

    Raises:
        BootcBuildError: the file cannot be written.
    """
    content = image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
    try:
        path.write_text(content, encoding="ascii")
    except OSError as exc:
        raise BootcBuildError(
            f"--iidfile: cannot write {str(path)!r}: {exc.strerror or exc}"
        ) from None
