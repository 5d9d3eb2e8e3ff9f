"""Errors raised by bootc-build, and the exit code each one maps to.

The hierarchy follows what a user can do about a failure::

    BootcBuildError                  exit 1 unless a subclass sets another
    ├── InputError                   exit 2: bad usage or input, nothing was sent
    │   ├── ContainerfileError       the Containerfile cannot be read or is invalid
    │   ├── TargetNotFoundError      --target names no stage
    │   └── ContextError             the build context cannot be read or packed
    ├── PodmanUnreachableError       exit 3: no Podman service responded
    ├── PodmanAPIError               exit 1: the service rejected a request
    ├── BuildFailedError             exit 1: the build ran and failed
    │   └── StepFailedError          a step of a stage failed
    ├── RegistryAttemptError         exit 1: one push, pull or lookup attempt failed
    └── RegistryError                exit 1: a push or pull failed for good

Every message is one line meant for the user; context travels as attributes.

``Interrupted`` stands outside the tree: like KeyboardInterrupt it derives
from BaseException, so that no ``except Exception`` on the way swallows it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, shared by every command."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


class BootcBuildError(Exception):
    """Root of every error that bootc-build reports to the user."""

    exit_code: ExitCode = ExitCode.FAILED

    def log_fields(self) -> dict[str, object]:
        """Return the fields that describe this failure in a log event."""
        return {
            "message": str(self),
            "error": type(self).__name__,
            "exit_code": int(self.exit_code),
        }


class InputError(BootcBuildError):
    """The command line, the Containerfile or the context is invalid."""

    exit_code = ExitCode.USAGE


class ContainerfileError(InputError):
    """The Containerfile cannot be read, parsed or resolved into stages."""


class TargetNotFoundError(InputError):
    """``--target`` names no stage of the Containerfile."""

    def __init__(self, target: str, names: list[str], suggestion: str | None) -> None:
        listed = ", ".join(names) if names else "none"
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        super().__init__(
            f"unknown target {target!r}{hint}; the stages are named: {listed}"
        )
        self.target = target
        self.names = names
        self.suggestion = suggestion


class ContextError(InputError):
    """The build context directory or a file in it cannot be read."""


class PodmanUnreachableError(BootcBuildError):
    """No Podman service responded on any of the addresses tried."""

    exit_code = ExitCode.UNREACHABLE


class PodmanAPIError(BootcBuildError):
    """The Podman service rejected a request with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BuildFailedError(BootcBuildError):
    """The build ran in the Podman service and did not produce an image."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class StepFailedError(BuildFailedError):
    """A step of a stage failed; carries what is needed to debug it."""

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        step: int,
        instruction: str,
        line: int | None,
        exit_status: int | None,
        tail: list[str],
        last_layer: str | None,
        containerfile: str | None = None,
    ) -> None:
        super().__init__(message, stage=stage)
        self.containerfile = containerfile
        self.step = step
        self.instruction = instruction
        self.line = line
        self.exit_status = exit_status
        self.tail = tail
        self.last_layer = last_layer

    def log_fields(self) -> dict[str, object]:
        return {
            **super().log_fields(),
            "stage": self.stage,
            "step": self.step,
            "instruction": self.instruction,
            "containerfile": self.containerfile,
            "containerfile_line": self.line,
            "exit_status": self.exit_status,
            "last_layer": self.last_layer,
        }


class RegistryAttemptError(BootcBuildError):
    """One attempt at a registry operation failed, with Podman's text of the cause.

    The retry loop classifies the text and decides whether to try again.
    """


class RegistryError(BootcBuildError):
    """A push or a pull failed for good, with whether the cause was transient."""

    def __init__(
        self,
        message: str,
        *,
        reference: str,
        cause: str,
        transient: bool,
        attempts: int = 1,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reference = reference
        self.cause = cause
        self.transient = transient
        self.attempts = attempts
        self.hint = hint

    def log_fields(self) -> dict[str, object]:
        return {
            **super().log_fields(),
            "reference": self.reference,
            "cause": self.cause,
            "transient": self.transient,
            "attempts": self.attempts,
        }


class Interrupted(BaseException):
    """SIGINT or SIGTERM asked the command to stop; exits with 128 + the signal."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"interrupted by signal {signal_number}")
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number
