"""A copy of a build's whole output in a file, as plain ``[stage] line`` text.

With ``--log-file PATH`` the copy goes to PATH and is kept. Without it, the
copy goes to a temporary file that is deleted when the build succeeds and kept
when it fails. The whole output of a failed build can then be read even after
the terminal has scrolled it away, or when the live view showed only its tail.

Writes go through a 64 KiB buffer and are flushed when the log is closed, or
at exit if the process ends without closing it; a temporary log is then kept
as after a failure.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

from bootc_builder.errors import InputError
from bootc_builder.logs import EventDict
from bootc_builder.progress import PlainRenderer

_BUFFER_BYTES = 64 * 1024
# The event logged when the build is sent. A failure before it has no build
# output worth keeping.
_BUILD_STARTED = "build.started"


class BuildLog:
    """A structlog processor that copies every event to a file, plus ``write_line``.

    The processor passes events on unchanged, so it sits before the renderer.
    It receives events after secrets are redacted, and ``write_line`` receives
    lines that logs.py has already redacted.
    """

    def __init__(self, path: Path, stream: TextIO, *, temporary: bool) -> None:
        self.path = path
        self.is_temporary = temporary
        self._stream: TextIO | None = stream
        self._render = PlainRenderer(colour=False)
        self._build_started = False
        atexit.register(self._close_at_exit)

    @classmethod
    def open(cls, path: Path) -> BuildLog:
        """Open ``path`` for writing, replacing its content.

        Raises:
            InputError: the file cannot be opened.
        """
        try:
            stream = path.open(
                "w", encoding="utf-8", errors="replace", buffering=_BUFFER_BYTES
            )
        except OSError as exc:
            raise InputError(
                f"--log-file: cannot open {str(path)!r} for writing: "
                f"{exc.strerror or exc}"
            ) from None
        return cls(path, stream, temporary=False)

    @classmethod
    def temporary(cls) -> BuildLog:
        """Open a new file named ``bootc-build-*.log`` in the temporary directory."""
        handle, name = tempfile.mkstemp(prefix="bootc-build-", suffix=".log")
        stream = os.fdopen(
            handle, "w", encoding="utf-8", errors="replace", buffering=_BUFFER_BYTES
        )
        return cls(Path(name), stream, temporary=True)

    def __call__(
        self, logger: Any, method_name: str, event_dict: EventDict
    ) -> EventDict:
        stream = self._stream
        if stream is None:
            return event_dict
        event = event_dict.get("event")
        if event == "step.output":
            stream.write(f"[{event_dict.get('stage')}] {event_dict.get('line', '')}\n")
            return event_dict
        if event == _BUILD_STARTED:
            self._build_started = True
        stream.write(self._render(logger, method_name, event_dict) + "\n")
        return event_dict

    def write_line(self, stage: str, stage_index: int, line: str) -> None:
        self.write_lines(stage, stage_index, [line])

    def write_lines(self, stage: str, stage_index: int, lines: list[str]) -> None:
        stream = self._stream
        if stream is not None and lines:
            prefix = f"[{stage}] "
            stream.write(prefix + f"\n{prefix}".join(lines) + "\n")

    def close(self, *, success: bool) -> Path | None:
        """Close the file and return its path when it is a kept temporary log.

        A temporary log is deleted after a successful build, and after a
        failure that came before the build was sent, which has no output to
        keep. A ``--log-file`` is always kept, and its path is not returned
        because the user chose it.
        """
        stream = self._stream
        if stream is None:
            return None
        self._stream = None
        atexit.unregister(self._close_at_exit)
        stream.close()
        if not self.is_temporary:
            return None
        if success or not self._build_started:
            self.path.unlink(missing_ok=True)
            return None
        return self.path

    def _close_at_exit(self) -> None:
        # The process is ending without close(): keep what was written, as
        # after a failure.
        self.close(success=False)


def saved_log_notice(path: Path) -> str:
    """Return the message that gives the path of a failed build's saved output."""
    return f"the whole build output was saved to {path}"
