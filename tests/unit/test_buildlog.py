"""The build log file: what it holds, and when a temporary one is kept."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from bootc_builder.buildlog import BuildLog, saved_log_notice
from bootc_builder.errors import InputError
from bootc_builder.progress import OutputStyle, open_build_output
from tests.unit.test_progress import (
    FAILED_RUN,
    TWO_STAGE,
    Recording,
    play,
    record_build,
)


@pytest.fixture(scope="module")
def full() -> Recording:
    return record_build("two-stage-full.jsonl", TWO_STAGE)


@pytest.fixture(scope="module")
def failed() -> Recording:
    return record_build("failed-run.jsonl", FAILED_RUN)


def _run(
    recording: Recording,
    style: OutputStyle,
    *,
    log_file: Path | None = None,
    quiet: bool = False,
) -> Path | None:
    output = open_build_output(
        style, quiet=quiet, log_file=log_file, stream=io.StringIO()
    )
    for _ in play(recording, output, io.StringIO()):
        pass
    output.close(recording.error)
    return output.finish(success=recording.error is None)


def test_log_file_has_every_line_with_stage(full: Recording, tmp_path: Path) -> None:
    path = tmp_path / "build.log"

    announced = _run(full, OutputStyle.JSON, log_file=path)

    assert announced is None
    lines = path.read_text().splitlines()
    for event in full.named("step.output"):
        assert f"[{event['stage']}] {event['line']}" in lines
    assert "[builder] STEP 2/5: USER root" in lines
    assert "[1] --> 4acb383012c" in lines
    assert lines[0] == "building target 1: stages builder, 1"
    assert lines[-1].startswith("built 4acb383012ce")
    assert "\x1b" not in path.read_text()


def test_log_file_gets_everything_when_quiet(failed: Recording, tmp_path: Path) -> None:
    path = tmp_path / "build.log"

    _run(failed, OutputStyle.TTY, log_file=path, quiet=True)

    text = path.read_text()
    assert "[builder] preparing\n" in text
    assert "[builder] STEP 3/3: RUN echo about to fail" in text
    assert "[builder] error: stage builder, step 3/3" in text


def test_temporary_log_deleted_on_success(
    full: Recording, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    announced = _run(full, OutputStyle.PLAIN)

    assert announced is None
    assert list(tmp_path.iterdir()) == []


def test_temporary_log_kept_on_failure(
    failed: Recording, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    announced = _run(failed, OutputStyle.PLAIN)

    assert announced is not None
    assert announced.parent == tmp_path
    assert announced.name.startswith("bootc-build-")
    assert announced.suffix == ".log"
    text = announced.read_text()
    assert "[builder] about to fail\n[builder] oops\n" in text
    assert "last layer that built: d654dbabce1" in text
    assert saved_log_notice(announced) == (
        f"the whole build output was saved to {announced}"
    )


def test_temporary_log_deleted_when_build_never_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    log = BuildLog.temporary()
    log(None, "error", {"event": "command.failed", "level": "error", "message": "x"})

    assert log.close(success=False) is None
    assert list(tmp_path.iterdir()) == []


def test_log_file_in_missing_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as failure:
        BuildLog.open(tmp_path / "missing" / "build.log")

    assert "--log-file" in str(failure.value)
    assert "missing/build.log" in str(failure.value)


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    log = BuildLog.open(tmp_path / "build.log")
    log.write_line("s", 0, "one")

    assert log.close(success=True) is None
    assert log.close(success=True) is None
    log.write_line("s", 0, "after close")
    assert (tmp_path / "build.log").read_text() == "[s] one\n"
