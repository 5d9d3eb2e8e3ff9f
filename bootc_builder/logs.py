"""Logging set-up: structlog events rendered as console lines or JSON lines on stderr.

Builds print hundreds of thousands of lines, so both pipelines are kept short:
one processor adds the level and the timestamp, one renderer writes the line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from bootc_builder.config import LogFormat

if TYPE_CHECKING:
    from bootc_builder.progress import BuildOutput

EventDict = MutableMapping[str, Any]

# Events whose fields are shown in full by the console renderer; the rest show
# only their message-like fields.
_STAGE_KEYS = ("stage", "stage_index")


# Passwords and secret values seen by this process. A redaction processor runs
# before any renderer, so none of them reaches a log line or an error message.
_SECRETS: set[str] = set()
REDACTED = "***"


def register_secret(value: str) -> None:
    """Make sure ``value`` is replaced by ``***`` wherever it would be logged."""
    # Very short values would blank out ordinary words of unrelated output.
    if len(value) >= 3:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    return value


def _redact_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    if not _SECRETS:
        return event_dict
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _compact_json(value: Any, **_: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class _Clock:
    """An ISO 8601 UTC timestamp, formatting the seconds part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        moment = time.time()
        second = int(moment)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = int((moment - second) * 1000)
        return f"{self._prefix}.{millis:03d}Z"


def _add_level_and_time(clock: _Clock) -> structlog.types.Processor:
    def processor(_: Any, method_name: str, event_dict: EventDict) -> EventDict:
        # The name, level and time come first so JSON lines read well.
        return {
            "event": event_dict.pop("event", ""),
            "level": "warning" if method_name == "warn" else method_name,
            "timestamp": clock.now(),
            **event_dict,
        }

    return processor


def use_colour(stream: TextIO) -> bool:
    """Decide on colour from NO_COLOR, FORCE_COLOR and whether ``stream`` is a TTY."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


def _describe_step_finished(fields: EventDict) -> str:
    cached = " (cached)" if fields.get("cached") else ""
    return f"--> {fields.get('layer')}{cached}"


def _describe_stage_started(fields: EventDict) -> str:
    return f"stage started: {fields.get('steps')} steps"


def _describe_stage_finished(fields: EventDict) -> str:
    return (
        f"stage {fields.get('status')} in {fields.get('duration_s')} s: "
        f"{fields.get('steps')} steps, {fields.get('cached_steps')} cached"
    )


def _describe_build_finished(fields: EventDict) -> str:
    tags = ", ".join(fields.get("tags") or ()) or "no tags"
    image_id = str(fields.get("image_id", ""))[:12]
    return f"built {image_id} ({tags}) in {fields.get('duration_s')} s"


_DESCRIBERS = {
    "step.finished": _describe_step_finished,
    "stage.started": _describe_stage_started,
    "stage.finished": _describe_stage_finished,
    "build.finished": _describe_build_finished,
}


class ConsoleRenderer:
    """Render events as short human-readable lines, prefixed with their stage."""

    def __init__(self, *, colour: bool) -> None:
        self._dim = "\x1b[2m" if colour else ""
        self._bold = "\x1b[1m" if colour else ""
        self._red = "\x1b[31m" if colour else ""
        self._yellow = "\x1b[33m" if colour else ""
        self._reset = "\x1b[0m" if colour else ""

    def __call__(self, _: Any, __: str, event_dict: EventDict) -> str:
        event = event_dict.get("event", "")
        stage = event_dict.get("stage")
        image = event_dict.get("image")
        # Parallel builds (bake) interleave, so their lines also name the image.
        label = f"{image}/{stage}" if image and stage is not None else image or stage
        prefix = f"{self._dim}[{label}]{self._reset} " if label is not None else ""
        if event == "step.output":
            return f"{prefix}{event_dict.get('line', '')}"
        if event == "step.started":
            return (
                f"{prefix}{self._bold}STEP {event_dict.get('step')}/"
                f"{event_dict.get('steps')}: {event_dict.get('instruction')}"
                f"{self._reset}"
            )
        describe = _DESCRIBERS.get(event)
        if describe is not None:
            return f"{prefix}{self._dim}{describe(event_dict)}{self._reset}"
        level = event_dict.get("level", "info")
        colour = self._red if level in ("error", "critical") else self._yellow
        label = f"{colour}{level}{self._reset}: " if level != "info" else ""
        if "message" in event_dict:
            return f"{prefix}{label}{event_dict['message']}"
        fields = " ".join(
            f"{key}={value}"
            for key, value in event_dict.items()
            if key not in ("event", "level", "timestamp", "image", *_STAGE_KEYS)
        )
        return f"{prefix}{label}{self._dim}{event}{self._reset} {fields}".rstrip()


class _StderrLogger:
    """Write each rendered line to the current ``sys.stderr`` and flush it.

    Looking ``sys.stderr`` up on each call keeps output capture in tests working.
    """

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = log = msg


def _stderr_logger_factory(*_: Any) -> _StderrLogger:
    return _StderrLogger()


class LineSink:
    """Write ``step.output`` events without going through structlog.

    Output lines are most of what a build logs, and the structlog pipeline
    costs several microseconds per event. This writes the same text that the
    configured renderer would, for this one event, with its stage prefix or
    JSON framing prepared once per stage, and one write for each batch.
    """

    def __init__(
        self,
        log_format: LogFormat,
        clock: _Clock,
        *,
        colour: bool,
        output: BuildOutput | None = None,
    ) -> None:
        self._output = output
        self._json = log_format is LogFormat.JSON
        self._clock = clock
        self._dim = "\x1b[2m" if colour else ""
        self._reset = "\x1b[0m" if colour else ""
        self._framing: dict[tuple[str, int], str] = {}

    def _frame(self, stage: str, stage_index: int) -> str:
        if self._json:
            return (
                f',"stage":{_encode_string(stage)},"stage_index":{stage_index},"line":'
            )
        return f"{self._dim}[{stage}]{self._reset} "

    def __call__(self, stage: str, stage_index: int, line: str) -> None:
        self.write_lines(stage, stage_index, [line])

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        """Write output lines of one stage that arrived together."""
        if not lines:
            return
        key = (stage, stage_index)
        framing = self._framing.get(key)
        if framing is None:
            framing = self._framing[key] = self._frame(stage, stage_index)
        if _SECRETS:
            lines = [redact(line) for line in lines]
        # A build's progress output may show the lines itself instead.
        if self._output is not None and self._output.write_lines(
            stage, stage_index, lines
        ):
            return
        if self._json:
            head = (
                '{"event":"step.output","level":"debug","timestamp":"'
                f'{self._clock.now()}"{framing}'
            )
            # A join over map() of the C encoder takes 1.4 µs for 16 lines,
            # against 1.8 µs for a generator that formats each line.
            text = head + f"}}\n{head}".join(map(_encode_string, lines)) + "}\n"
        else:
            text = framing + f"\n{framing}".join(lines) + "\n"
        stream = sys.stderr
        stream.write(text)
        stream.flush()


# The C encoder behind json.dumps for one string, without its per-call set-up;
# like ensure_ascii=False, it keeps non-ASCII text as it is.
_encode_string = json.encoder.encode_basestring
_line_sink: LineSink | None = None


def line_sink() -> LineSink | None:
    """Return the fast writer for build output lines, if the configuration has one.

    None means output lines go through structlog: for example under
    ``structlog.testing.capture_logs``, with a quieter level, or when context
    variables must be merged into every event.
    """
    return _line_sink


def resolve_log_format(requested: LogFormat, stream: TextIO) -> LogFormat:
    """Turn ``auto`` into console on a terminal and JSON lines otherwise."""
    if requested is not LogFormat.AUTO:
        return requested
    return LogFormat.CONSOLE if stream.isatty() else LogFormat.JSON


def configure_logging(
    log_format: LogFormat,
    *,
    level: int = logging.DEBUG,
    context_vars: bool = False,
    output: BuildOutput | None = None,
) -> LogFormat:
    """Configure structlog for the process and return the format in use.

    ``context_vars`` adds the fields bound with
    ``structlog.contextvars.bind_contextvars`` to every event, for commands
    that run several builds at once; it costs time on every event, so single
    builds leave it off.

    ``output`` is a build's progress output from ``progress.open_build_output``:
    its processors see every event before the renderer, its renderer replaces
    the console one, and output lines go to its ``write_line``. It filters
    events for ``-q`` itself, so ``level`` stays at DEBUG with it.
    """
    global _line_sink
    chosen = resolve_log_format(log_format, sys.stderr)
    clock = _Clock()
    renderer: structlog.types.Processor
    if chosen is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(serializer=_compact_json)
    elif output is not None and output.renderer is not None:
        renderer = output.renderer
    else:
        renderer = ConsoleRenderer(colour=use_colour(sys.stderr))
    _line_sink = None
    if level <= logging.DEBUG and not context_vars:
        _line_sink = LineSink(
            chosen, clock, colour=use_colour(sys.stderr), output=output
        )
    structlog.configure(
        processors=[
            *([structlog.contextvars.merge_contextvars] if context_vars else []),
            _redact_secrets,
            _add_level_and_time(clock),
            *(output.processors if output is not None else ()),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(level)
    return chosen


class _ToStructlog(logging.Handler):
    """Send podman-py's and urllib3's standard-library records through structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        logger.log(
            record.levelno, "library.log", logger=record.name, text=record.getMessage()
        )


def _route_standard_logging(level: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    # Library debug output is noise unless the user asked for everything.
    root.setLevel(max(level, logging.WARNING))
