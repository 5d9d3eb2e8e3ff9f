"""Find a Podman service to talk to, or start a private one for this command.

The order is ``--url``, then ``CONTAINER_HOST``, then the rootful and the
rootless default sockets. An explicit ``--url`` is the only address tried. When
nothing responds and the ``podman`` program is installed, a private
``podman system service`` runs on a socket in a temporary directory for the
duration of the command, so a fresh machine needs no service set up first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import structlog

from bootc_builder.errors import InputError, PodmanUnreachableError
from bootc_builder.podman_api import SUPPORTED_SCHEMES, PodmanConnection

ROOTFUL_SOCKET = "unix:///run/podman/podman.sock"
PRIVATE_SERVICE_START_TIMEOUT_S = 20.0
# How long an address the user named (--url, CONTAINER_HOST) may take to
# answer, for a service that is still starting, for example by socket activation.
NAMED_SERVICE_WAIT_S = 5.0

log = structlog.get_logger("bootc_builder.connection")


def validate_url(url: str, *, source: str = "--url") -> str:
    """Return ``url`` if its scheme is one Podman connections use.

    Raises:
        InputError: the scheme is not unix, tcp, ssh or http, or the URL names
            no socket path or host.
    """
    parsed = urlparse(url)
    if parsed.scheme not in SUPPORTED_SCHEMES:
        raise InputError(
            f"invalid {source} {url!r}: the scheme must be one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)}, "
            "for example unix:///run/podman/podman.sock"
        )
    where = parsed.path if parsed.scheme == "unix" else parsed.netloc
    if not where:
        raise InputError(
            f"invalid {source} {url!r}: it names no "
            f"{'socket path' if parsed.scheme == 'unix' else 'host'}, "
            "for example unix:///run/podman/podman.sock or tcp://127.0.0.1:8080"
        )
    return url


def _rootless_socket() -> str:
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix://{runtime_dir}/podman/podman.sock"


def candidate_urls(explicit: str | None) -> list[tuple[str, str]]:
    """List ``(url, where it came from)`` in the order they are tried."""
    if explicit:
        return [(validate_url(explicit), "--url")]
    candidates: list[tuple[str, str]] = []
    from_env = os.environ.get("CONTAINER_HOST")
    if from_env:
        candidates.append(
            (validate_url(from_env, source="CONTAINER_HOST"), "CONTAINER_HOST")
        )
    candidates.append((ROOTFUL_SOCKET, "the rootful default socket"))
    candidates.append((_rootless_socket(), "the rootless default socket"))
    return candidates


def _unix_socket_missing(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme == "unix" and not Path(parsed.path).exists()


def _try_connect(url: str) -> PodmanConnection | str:
    """Return a connection that responded, or the reason there is none."""
    if _unix_socket_missing(url):
        return "the socket does not exist"
    connection = PodmanConnection(url)
    try:
        connection.ping()
    except PodmanUnreachableError as exc:
        connection.close()
        return str(exc)
    return connection


def _wait_for_named_service(url: str, wait_s: float) -> PodmanConnection | str:
    """Try ``url`` until it responds or ``wait_s`` seconds have passed."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        outcome = _try_connect(url)
        if isinstance(outcome, PodmanConnection):
            return outcome
        if time.monotonic() + delay > deadline:
            return outcome
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


@contextmanager
def open_connection(explicit_url: str | None) -> Iterator[PodmanConnection]:
    """Yield a connection to a running service, starting a private one if needed.

    Raises:
        InputError: a URL has an unknown scheme.
        PodmanUnreachableError: nothing responded and no service could be started.
    """
    candidates = candidate_urls(explicit_url)
    reason = ""
    for url, source in candidates:
        if source in ("--url", "CONTAINER_HOST"):
            outcome = _wait_for_named_service(url, NAMED_SERVICE_WAIT_S)
        else:
            outcome = _try_connect(url)
        if isinstance(outcome, PodmanConnection):
            log.info("podman.connected", url=url, source=source)
            if source in ("--url", "CONTAINER_HOST"):
                # A named service may keep its images elsewhere or on another host.
                outcome.podman_command = f"podman --remote --url {url}"
            with outcome:
                yield outcome
            return
        reason = outcome
        if source == "CONTAINER_HOST":
            log.warning("podman.unreachable", url=url, source=source, reason=reason)

    tried = ", ".join(url for url, _ in candidates)
    if explicit_url is not None:
        raise PodmanUnreachableError(
            f"no Podman service responded at {explicit_url} within "
            f"{NAMED_SERVICE_WAIT_S:.0f} s ({reason}); check the address, or start "
            f"`podman system service --time=0 {explicit_url}` there"
        )
    if shutil.which("podman") is not None:
        with _private_service() as connection:
            yield connection
        return
    raise PodmanUnreachableError(
        f"no Podman service responded at {tried}, and the podman program is not "
        "installed to start one; install podman, start a service with "
        "`systemctl start podman.socket`, or pass --url"
    )


@contextmanager
def _private_service() -> Iterator[PodmanConnection]:
    with tempfile.TemporaryDirectory(prefix="bootc-build-") as folder:
        url = f"unix://{folder}/podman.sock"
        log_path = Path(folder) / "service.log"
        # With CONTAINER_HOST set, podman runs as a remote client and cannot
        # serve; the private service must be a local one.
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("CONTAINER_HOST", "CONTAINER_CONNECTION")
        }
        with log_path.open("wb") as service_log:
            process = subprocess.Popen(
                ["podman", "system", "service", "--time=0", url],
                stdin=subprocess.DEVNULL,
                stdout=service_log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            connection = _wait_for_service(url, process, log_path)
        except BaseException:
            _stop(process)
            raise
        log.info("podman.service_started", url=url, pid=process.pid)
        try:
            with connection:
                yield connection
        finally:
            _stop(process)
            log.info("podman.service_stopped", url=url)


def _wait_for_service(
    url: str, process: subprocess.Popen[bytes], log_path: Path
) -> PodmanConnection:
    deadline = time.monotonic() + PRIVATE_SERVICE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text(errors="replace").strip().splitlines()
            last = output[-1] if output else "no output"
            raise PodmanUnreachableError(
                f"no Podman service responded, and `podman system service` exited "
                f"with status {process.returncode}: {last}"
            )
        outcome = _try_connect(url)
        if isinstance(outcome, PodmanConnection):
            return outcome
        time.sleep(0.05)
    raise PodmanUnreachableError(
        f"no Podman service responded, and the private service on {url} did not "
        f"respond within {PRIVATE_SERVICE_START_TIMEOUT_S:.0f} s"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
