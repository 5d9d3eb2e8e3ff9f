"""Shells for debugging: in the layer before a failed step, or at a chosen step.

The shell runs through the ``podman`` program as a remote client of the same
service, because an interactive terminal over the REST API needs an attach
protocol that podman-py does not offer. Only the service URL, the image id, the
working directory and the build arguments go on its command line; registry
passwords and secrets never do.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import structlog

from bootc_builder.containerfile import Containerfile, Stage
from bootc_builder.errors import InputError, StepFailedError

log = structlog.get_logger("bootc_builder")


def shell_command(
    url: str, image: str, *, build_args: Mapping[str, str], workdir: str | None = None
) -> list[str]:
    """Return the podman command that opens a shell in ``image`` on ``url``."""
    command = ["podman", "--url", url, "run", "--rm", "-it"]
    for key, value in sorted(build_args.items()):
        command += ["--env", f"{key}={value}"]
    if workdir:
        command += ["--workdir", workdir]
    return [*command, image, "/bin/sh"]


def open_shell(command: list[str]) -> int:
    """Run the shell command attached to this terminal and return its exit code."""
    if shutil.which("podman") is None:
        raise InputError("opening a shell needs the podman program; install podman")
    return subprocess.call(command)


def shell_after_failure(
    error: StepFailedError, *, url: str, build_args: Mapping[str, str]
) -> None:
    """Open a shell where a RUN step failed, or print how to when there is no terminal.

    The shell starts in the last layer of the failing stage that did build, so
    it has the environment and working directory that step saw.
    """
    if error.last_layer is None or not error.instruction.upper().startswith("RUN"):
        log.warning("debug.no_shell", reason="the failed step is not a RUN step")
        return
    command = shell_command(url, error.last_layer, build_args=build_args)
    failing = error.instruction[len("RUN") :].strip()
    print(f"the failing step was: {error.instruction}", file=sys.stderr)
    if not sys.stdin.isatty():
        print(
            "stdin is not a terminal; open the shell with:\n  " + shlex.join(command),
            file=sys.stderr,
        )
        return
    print(f"run it again by hand with: {failing}", file=sys.stderr)
    open_shell(command)


def truncated_containerfile(
    containerfile: Containerfile, source: Path, stage: Stage, step: int | None
) -> str:
    """Return the Containerfile cut off before ``step`` of ``stage``.

    Everything before the stage stays, so the build can use its cache; steps
    are numbered as in build output, with the FROM as step 1.

    Raises:
        InputError: the step is not in the stage.
    """
    steps = len(stage.instructions)
    if step is None:
        step = steps + 1
    if not 2 <= step <= steps + 1:
        raise InputError(
            f"--step {step} is not a step of stage {stage.label}: it has steps "
            f"1 to {steps} (1 is its FROM); choose 2 to {steps} to stop before one, "
            "or leave --step out for the end of the stage"
        )
    last_kept = stage.instructions[step - 2]
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[: last_kept.end_line])


def write_temporary_containerfile(text: str) -> Path:
    """Write ``text`` to a temporary file the caller removes."""
    descriptor, name = tempfile.mkstemp(
        prefix="bootc-build-debug-", suffix=".Containerfile"
    )
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
    return Path(name)
