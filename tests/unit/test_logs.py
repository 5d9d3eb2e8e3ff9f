"""Rendering of log events in JSON and console mode."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from bootc_builder.config import LogFormat
from bootc_builder.logs import (
    ConsoleRenderer,
    configure_logging,
    line_sink,
    register_secret,
    use_colour,
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_have_event_level_timestamp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(LogFormat.JSON)

    structlog.get_logger().bind(stage="builder", stage_index=0).debug(
        "step.output", line="ünïcode output"
    )

    line = capsys.readouterr().err.strip()
    event = json.loads(line)
    assert event["event"] == "step.output"
    assert event["level"] == "debug"
    assert event["timestamp"].endswith("Z")
    assert event["stage"] == "builder"
    assert event["line"] == "ünïcode output"


def test_quiet_level_drops_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.JSON, level=logging.WARNING)

    structlog.get_logger().debug("step.output", line="hidden")
    structlog.get_logger().warning("something.degraded")

    lines = capsys.readouterr().err.strip().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["something.degraded"]


def test_console_prefixes_stage_without_colour() -> None:
    renderer = ConsoleRenderer(colour=False)

    text = renderer(
        None, "debug", {"event": "step.output", "line": "hi", "stage": "builder"}
    )

    assert text == "[builder] hi"


def test_console_shows_error_message() -> None:
    renderer = ConsoleRenderer(colour=False)

    text = renderer(
        None, "error", {"event": "build.failed", "level": "error", "message": "boom"}
    )

    assert text == "error: boom"


def test_colour_follows_no_color_and_force_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class FakeTTY:
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(FakeTTY()) is False  # type: ignore[arg-type]
    monkeypatch.delenv("NO_COLOR")
    assert use_colour(FakeTTY()) is True  # type: ignore[arg-type]
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert (
        use_colour(object.__new__(type("Pipe", (), {"isatty": lambda self: False})))
        is True
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("log_format", [LogFormat.JSON, LogFormat.CONSOLE])
def test_line_sink_matches_structlog_rendering(
    log_format: LogFormat, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format)
    sink = line_sink()
    assert sink is not None
    text = 'tab\there "quoted" \\ ünï \x1b[0m'

    sink("builder", 0, text)
    structlog.get_logger().bind(stage="builder", stage_index=0).debug(
        "step.output", line=text
    )

    fast, slow = capsys.readouterr().err.splitlines()
    if log_format is LogFormat.JSON:
        fast_event, slow_event = json.loads(fast), json.loads(slow)
        assert list(fast_event) == list(slow_event)
        fast_event.pop("timestamp")
        slow_event.pop("timestamp")
        assert fast_event == slow_event
    else:
        assert fast == slow


def test_line_sink_redacts_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.JSON)
    register_secret("sink-secret-123")
    sink = line_sink()
    assert sink is not None

    sink("0", 0, "value is sink-secret-123")

    assert "sink-secret-123" not in capsys.readouterr().err


def test_line_sink_off_when_quiet() -> None:
    configure_logging(LogFormat.JSON, level=logging.WARNING)

    assert line_sink() is None
