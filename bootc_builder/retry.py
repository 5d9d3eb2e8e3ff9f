"""Registry failures: which ones a retry can fix, and the retry loop for them.

Podman reports every registry problem of a push or pull as text: HTTP 400
with the registry's status inside the message, or an ``error`` line inside a
streamed HTTP 200. ``classify`` reads that text once, here, and decides.
Authentication, permission, naming and certificate problems are final: they
fail at once with a hint. Network faults, timeouts, 408, 429 and 5xx responses
are transient and retried with exponential waits plus jitter, within a bound
on the number of attempts and on the total time.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from bootc_builder.errors import RegistryAttemptError, RegistryError

T = TypeVar("T")

_HTTP_STATUS = re.compile(
    r"(?:HTTP status|status code)[:\s]+(\d{3})(?: ([A-Za-z][A-Za-z ]*))?"
)
_RETRY_AFTER = re.compile(r"Retry-After:?\s*(\d+)", re.IGNORECASE)

_LOGIN_HINT = "log in with `podman login HOST`, or pass --creds or --authfile"
_TLS_HINT = (
    "trust the registry's CA in /etc/containers/certs.d/HOST/ca.crt, "
    "or use --no-tls-verify for a local registry"
)

# Checked in order; the first match decides. Final causes come first so that,
# for example, an x509 error that mentions a handshake is not retried.
_FINAL_CAUSES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"x509|certificate (?:is not|signed by|has expired)"),
        "TLS certificate not trusted",
        _TLS_HINT,
    ),
    (
        re.compile(r"server gave HTTP response to HTTPS client"),
        "the registry speaks plain HTTP",
        "use --no-tls-verify for a plain HTTP registry",
    ),
    (
        re.compile(
            r"unauthorized|authentication required|invalid username/password"
            r"|\b401\b",
            re.IGNORECASE,
        ),
        "authentication required",
        _LOGIN_HINT,
    ),
    (
        re.compile(r"denied|\b403\b|forbidden", re.IGNORECASE),
        "access denied",
        "check that the account may push to or pull from this repository",
    ),
    (
        re.compile(
            r"name unknown|repository name not known|manifest unknown|\b404\b"
            r"|not found",
            re.IGNORECASE,
        ),
        "name unknown",
        "check the image name and the repository",
    ),
    (
        re.compile(r"manifest invalid", re.IGNORECASE),
        "manifest invalid",
        "the registry rejected the manifest; try --format v2s2 or oci",
    ),
    (
        re.compile(r"invalid reference|repository name must be", re.IGNORECASE),
        "invalid reference",
        "check the image reference",
    ),
    (
        re.compile(r"image not known|no such image", re.IGNORECASE),
        "image not found locally",
        "build or pull the image first",
    ),
)

_TRANSIENT_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"connection refused", re.IGNORECASE), "connection refused"),
    (re.compile(r"connection reset", re.IGNORECASE), "connection reset"),
    (re.compile(r"broken pipe", re.IGNORECASE), "broken pipe"),
    (re.compile(r"TLS handshake timeout", re.IGNORECASE), "TLS handshake timeout"),
    (
        re.compile(r"i/o timeout|deadline exceeded|Client\.Timeout", re.IGNORECASE),
        "i/o timeout",
    ),
    (re.compile(r"unexpected EOF|\bEOF\b"), "unexpected EOF"),
    (re.compile(r"blob upload unknown", re.IGNORECASE), "blob upload unknown"),
)

_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class Classification:
    """The retry decision for one failure message."""

    transient: bool
    cause: str
    hint: str | None = None
    retry_after: float | None = None
    slow_down: bool = False


def classify(message: str) -> Classification:
    """Decide from Podman's error text whether a registry failure is transient."""
    status_match = _HTTP_STATUS.search(message)
    if status_match is not None:
        status = int(status_match.group(1))
        reason = (status_match.group(2) or "").strip()
        cause = f"{status} {reason}".strip()
        if status in _TRANSIENT_STATUSES:
            retry_after = _RETRY_AFTER.search(message)
            return Classification(
                transient=True,
                cause=cause,
                retry_after=float(retry_after.group(1)) if retry_after else None,
                slow_down=status == 429,
            )
    for pattern, cause, hint in _FINAL_CAUSES:
        if pattern.search(message):
            return Classification(transient=False, cause=cause, hint=hint)
    for pattern, cause in _TRANSIENT_CAUSES:
        if pattern.search(message):
            return Classification(transient=True, cause=cause)
    if status_match is not None:
        return Classification(transient=False, cause=cause)
    return Classification(transient=False, cause="registry error")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry transient registry failures.

    ``retries`` is the number of attempts after the first. The first wait is
    ``first_delay`` seconds and each later one doubles, up to ``max_delay``,
    plus up to 25% random jitter. No attempt starts after ``max_total``
    seconds have passed since the first one.
    """

    retries: int = 3
    first_delay: float = 2.0
    max_delay: float = 60.0
    max_total: float = 600.0


@dataclass(slots=True)
class _AttemptState:
    causes: list[str] = field(default_factory=list)
    last: Classification | None = None


class _TransientFailure(Exception):
    """Internal: a transient failure the retry loop may repeat."""

    def __init__(
        self, error: RegistryAttemptError, classification: Classification
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.classification = classification


def parse_duration(text: str) -> float:
    """Parse a Go-style duration such as ``500ms``, ``2s``, ``1m30s`` into seconds.

    A bare number is taken as seconds.

    Raises:
        ValueError: the text is not a duration.
    """
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return float(stripped)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", stripped)
    if not parts or "".join(n + u for n, u in parts) != stripped:
        raise ValueError(
            f"invalid duration {text!r}: expected a value like 500ms, 2s or 1m"
        )
    return sum(float(number) * units[unit] for number, unit in parts)


def _next_wait(policy: RetryPolicy, state: _AttemptState, attempt: int) -> float:
    # A first delay above the usual cap raises the cap with it, so the waits
    # still never shrink.
    cap = max(policy.max_delay, policy.first_delay)
    base = min(policy.first_delay * 2.0 ** (attempt - 1), cap)
    last = state.last
    if last is not None and last.slow_down:
        base = min(base * 2, cap)
    if last is not None and last.retry_after is not None:
        base = max(base, min(last.retry_after, cap))
    return base + random.uniform(0, base * 0.25)


def run_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    action: str,
    reference: str,
    logger: Any,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``, retrying transient registry failures under ``policy``.

    ``operation`` signals a registry failure by raising RegistryAttemptError; any
    other exception passes through unchanged.

    Raises:
        RegistryError: a final failure, or transient ones until the budget ran out.
    """
    state = _AttemptState()

    def attempt_once() -> T:
        try:
            return operation()
        except RegistryAttemptError as error:
            classification = classify(str(error))
            state.causes.append(classification.cause)
            state.last = classification
            if not classification.transient:
                raise _final_error(
                    action, reference, error, classification, state
                ) from error
            raise _TransientFailure(error, classification) from error

    def wait(retry_state: tenacity.RetryCallState) -> float:
        return _next_wait(policy, state, retry_state.attempt_number)

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        next_wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            f"{action.replace(' ', '_')}.retrying",
            reference=reference,
            attempt=retry_state.attempt_number,
            max_attempts=policy.retries + 1,
            cause=state.causes[-1],
            next_wait_s=round(next_wait, 2),
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.retries + 1)
        | tenacity.stop_before_delay(policy.max_total),
        wait=wait,
        retry=tenacity.retry_if_exception_type(_TransientFailure),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(attempt_once)
    except _TransientFailure as exhausted:
        raise _exhausted_error(action, reference, exhausted, state) from exhausted.error


def _final_error(
    action: str,
    reference: str,
    error: RegistryAttemptError,
    classification: Classification,
    state: _AttemptState,
) -> RegistryError:
    attempts = len(state.causes)
    after = f" after {attempts} attempts" if attempts > 1 else ""
    hint = f"; {classification.hint}" if classification.hint else ""
    return RegistryError(
        f"{action} of {reference} failed{after}: {classification.cause}{hint}. "
        f"Podman reported: {error}",
        reference=reference,
        cause=classification.cause,
        transient=False,
        attempts=attempts,
        hint=classification.hint,
    )


def _exhausted_error(
    action: str, reference: str, exhausted: _TransientFailure, state: _AttemptState
) -> RegistryError:
    attempts = len(state.causes)
    last = state.causes[-1]
    if attempts > 1 and all(cause == last for cause in state.causes):
        pattern = f"{last} on every attempt"
    else:
        pattern = f"last cause: {last}"
    attempts_text = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return RegistryError(
        f"{action} of {reference} failed after {attempts_text} ({pattern}); "
        f"raise --retry or --retry-delay if the registry needs longer to recover. "
        f"Podman reported: {exhausted.error}",
        reference=reference,
        cause=last,
        transient=True,
        attempts=attempts,
    )
