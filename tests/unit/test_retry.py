"""Classification of registry failures and the retry loop."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from bootc_builder.errors import RegistryAttemptError, RegistryError
from bootc_builder.retry import RetryPolicy, classify, parse_duration, run_with_retries

# Messages as Podman 4.3.1 reports them, with the registry's status inside.
TRANSIENT = {
    "503": 'pushing image "127.0.0.1:5000/a:1": writing blob: initiating layer upload '
    "to /v2/a/blobs/uploads/ in 127.0.0.1:5000: received unexpected HTTP status: "
    "503 Service Unavailable",
    "502": "received unexpected HTTP status: 502 Bad Gateway",
    "504": "received unexpected HTTP status: 504 Gateway Timeout",
    "500": "received unexpected HTTP status: 500 Internal Server Error",
    "408": "received unexpected HTTP status: 408 Request Timeout",
    "429": "received unexpected HTTP status: 429 Too Many Requests",
    "reset": 'writing blob: Patch "http://127.0.0.1:5000/v2/a/blobs/uploads/x": '
    "read tcp 127.0.0.1:40000->127.0.0.1:5000: read: connection reset by peer",
    "refused": "dial tcp 127.0.0.1:5000: connect: connection refused",
    "eof": 'writing blob: Patch "http://x/v2/a/blobs/uploads/y": EOF',
    "unexpected-eof": "reading blob: unexpected EOF",
    "io-timeout": "dial tcp 10.0.0.1:443: i/o timeout",
    "tls-timeout": "net/http: TLS handshake timeout",
    "upload-unknown": "blob upload unknown to registry",
}

FINAL = {
    "401": (
        "unauthorized: authentication required",
        "authentication required",
        "log in",
    ),
    "auth": (
        "trying to reuse blob at destination: checking whether a blob exists: "
        "authentication required",
        "authentication required",
        "--creds",
    ),
    "denied": (
        "denied: requested access to the resource is denied",
        "access denied",
        None,
    ),
    "403": ("received unexpected HTTP status: 403 Forbidden", "access denied", None),
    "name": (
        "name unknown: repository name not known to registry",
        "name unknown",
        None,
    ),
    "manifest": ("manifest invalid: manifest invalid", "manifest invalid", None),
    "x509": (
        "tls: failed to verify certificate: "
        "x509: certificate signed by unknown authority",
        "TLS certificate not trusted",
        "--no-tls-verify",
    ),
    "http": (
        "http: server gave HTTP response to HTTPS client",
        "the registry speaks plain HTTP",
        "--no-tls-verify",
    ),
    "reference": ("invalid reference format", "invalid reference", None),
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_failures_are_retried(name: str) -> None:
    result = classify(TRANSIENT[name])

    assert result.transient, result


@pytest.mark.parametrize("name", sorted(FINAL))
def test_final_failures_have_hints(name: str) -> None:
    message, cause, hint_part = FINAL[name]

    result = classify(message)

    assert not result.transient
    assert result.cause == cause
    assert result.hint
    if hint_part:
        assert hint_part in result.hint


def test_429_slows_down_and_reads_retry_after() -> None:
    result = classify(
        "received unexpected HTTP status: 429 Too Many Requests Retry-After: 30"
    )

    assert result.slow_down
    assert result.retry_after == 30.0


def test_unknown_text_is_not_retried() -> None:
    assert not classify("something odd happened").transient


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("3", 3.0),
        ("1.5s", 1.5),
        ("1h", 3600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "s", "-1s", "2s3", "two"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


class Flaky:
    """An operation that fails with the given messages, then returns "done"."""

    def __init__(self, *messages: str) -> None:
        self.messages = list(messages)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.messages:
            raise RegistryAttemptError(self.messages.pop(0))
        return "done"


def _run(operation: Flaky, policy: RetryPolicy, waits: list[float]) -> Any:
    return run_with_retries(
        operation,
        policy=policy,
        action="push",
        reference="127.0.0.1:5000/a:1",
        logger=structlog.get_logger(),
        sleep=waits.append,
    )


def test_fewer_faults_than_budget_succeed() -> None:
    operation = Flaky(TRANSIENT["503"], TRANSIENT["reset"])
    waits: list[float] = []

    with capture_logs() as events:
        result = _run(operation, RetryPolicy(retries=3, first_delay=1.0), waits)

    assert result == "done"
    assert operation.calls == 3
    retries = [e for e in events if e["event"] == "push.retrying"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert [e["cause"] for e in retries] == [
        "503 Service Unavailable",
        "connection reset",
    ]
    assert all(e["log_level"] == "warning" for e in retries)
    assert all(e["reference"] == "127.0.0.1:5000/a:1" for e in retries)
    assert [e["next_wait_s"] for e in retries] == [round(w, 2) for w in waits]


def test_waits_grow_exponentially_with_jitter() -> None:
    operation = Flaky(*[TRANSIENT["502"]] * 4)
    waits: list[float] = []

    with capture_logs():
        _run(operation, RetryPolicy(retries=4, first_delay=1.0), waits)

    for attempt, wait in enumerate(waits):
        base = 1.0 * 2**attempt
        assert base <= wait <= base * 1.25


def test_more_faults_than_budget_fail_with_count() -> None:
    operation = Flaky(*[TRANSIENT["503"]] * 10)
    waits: list[float] = []

    with capture_logs(), pytest.raises(RegistryError) as failure:
        _run(operation, RetryPolicy(retries=2, first_delay=0.5), waits)

    error = failure.value
    assert operation.calls == 3
    assert error.attempts == 3
    assert error.transient
    assert "after 3 attempts" in str(error)
    assert "503 Service Unavailable on every attempt" in str(error)
    assert "127.0.0.1:5000/a:1" in str(error)
    assert "received unexpected HTTP status: 503" in str(error)


def test_mixed_causes_report_the_last() -> None:
    operation = Flaky(TRANSIENT["503"], TRANSIENT["reset"])

    with capture_logs(), pytest.raises(RegistryError) as failure:
        _run(operation, RetryPolicy(retries=1, first_delay=0.1), [])

    assert "last cause: connection reset" in str(failure.value)


def test_final_failure_is_not_retried() -> None:
    operation = Flaky(FINAL["401"][0], TRANSIENT["503"])

    with capture_logs() as events, pytest.raises(RegistryError) as failure:
        _run(operation, RetryPolicy(retries=5), [])

    assert operation.calls == 1
    assert failure.value.attempts == 1
    assert not failure.value.transient
    assert "podman login" in str(failure.value)
    assert not [e for e in events if e["event"] == "push.retrying"]


def test_total_time_bound_stops_retries() -> None:
    operation = Flaky(*[TRANSIENT["503"]] * 10)
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    import time as time_module

    real_monotonic = time_module.monotonic
    try:
        time_module.monotonic = lambda: real_monotonic() + clock[0]  # type: ignore[assignment]
        with capture_logs(), pytest.raises(RegistryError):
            run_with_retries(
                operation,
                policy=RetryPolicy(
                    retries=50, first_delay=10.0, max_delay=60.0, max_total=100.0
                ),
                action="push",
                reference="r",
                logger=structlog.get_logger(),
                sleep=sleep,
            )
    finally:
        time_module.monotonic = real_monotonic

    assert operation.calls < 10
    assert clock[0] <= 100.0
