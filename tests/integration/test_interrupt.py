"""Interruptions and lost services: clean stops, right exit codes, nothing left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    CONTAINERS_CONF,
    PodmanService,
    service_env,
    wait_for_socket,
)

pytestmark = pytest.mark.integration

SCRATCH = Path("/var/tmp")


@pytest.fixture(autouse=True)
def _remove_cancelled_uploads() -> Iterator[None]:
    """Remove the upload folders that Podman 4.3 keeps after a cancelled build.

    The service unpacks each build's context under /var/tmp/libpod_builder*
    and does not remove it when the client goes away mid-build.
    """
    before = set(SCRATCH.glob("libpod_builder*"))
    yield
    for leftover in set(SCRATCH.glob("libpod_builder*")) - before:
        shutil.rmtree(leftover, ignore_errors=True)


def _sleeping_context(folder: Path, base: str) -> Path:
    folder.mkdir()
    (folder / "Containerfile").write_text(
        f"FROM {base} AS sleeper\n"
        "RUN echo step-two > /two\n"
        "RUN echo started-sleeping && sleep 120\n"
    )
    return folder


def _start_build(context: Path, env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key != "CONTAINER_HOST"}
    # An interrupted build keeps its output log in TMPDIR; the context's parent
    # is the test's own temporary folder, removed with it.
    env.update({"CONTAINERS_CONF": str(CONTAINERS_CONF), "TMPDIR": str(context.parent)})
    env.update(env_extra)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bootc_builder",
            "build",
            str(context),
            "--no-cache",
            "-t",
            "localhost/bootc-build-test/interrupted:1",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_line(process: subprocess.Popen[str], text: str, seen: list[str]) -> None:
    """Read stderr until a line contains ``text``; keep every line read."""
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen)}")


def _finish(process: subprocess.Popen[str], seen: list[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    _, rest = process.communicate(timeout=30)
    return process.returncode, time.monotonic() - started, "".join(seen) + rest


@pytest.mark.parametrize(
    ("signal_number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_signal_stops_build_and_cleans_up(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
    signal_number: int,
    exit_code: int,
) -> None:
    context = _sleeping_context(tmp_path / "context", busybox_image)
    containers_before = podman_service.container_ids()
    process = _start_build(context, {"CONTAINER_HOST": podman_service.url})
    seen: list[str] = []
    _wait_for_line(process, "started-sleeping", seen)

    process.send_signal(signal_number)
    code, seconds, stderr = _finish(process, seen)

    assert code == exit_code, stderr
    assert seconds < 5, stderr
    assert "Traceback" not in stderr
    assert podman_service.container_ids() == containers_before
    tagged = podman_service.podman(
        "image", "exists", "localhost/bootc-build-test/interrupted:1", check=False
    )
    assert tagged.returncode == 1


def test_second_interrupt_exits_at_once(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    context = _sleeping_context(tmp_path / "context", busybox_image)
    process = _start_build(context, {"CONTAINER_HOST": podman_service.url})
    seen: list[str] = []
    _wait_for_line(process, "started-sleeping", seen)

    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    code, seconds, stderr = _finish(process, seen)

    assert code == 130, stderr
    assert seconds < 5, stderr
    # The first interrupt's clean-up may have been cut short; remove what it left.
    for container in podman_service.container_ids():
        podman_service.podman("rm", "--force", container, check=False)


@pytest.mark.skipif(
    os.path.exists("/run/podman/podman.sock"),
    reason="a rootful Podman service is running, so no private one would start",
)
def test_interrupt_stops_private_service(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    storage_conf = tmp_path / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{podman_service.root}"\n'
        f'runroot = "{podman_service.runroot}"\n'
    )
    runtime_dir = tmp_path / "xdg"
    runtime_dir.mkdir()
    context = _sleeping_context(tmp_path / "context", busybox_image)
    containers_before = podman_service.container_ids()
    process = _start_build(
        context,
        {
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "XDG_RUNTIME_DIR": str(runtime_dir),
        },
    )
    seen: list[str] = []
    _wait_for_line(process, "started-sleeping", seen)

    process.send_signal(signal.SIGINT)
    code, seconds, stderr = _finish(process, seen)

    assert code == 130, stderr
    assert seconds < 5, stderr
    started = [
        json.loads(line)
        for line in stderr.splitlines()
        if '"podman.service_started"' in line
    ]
    assert len(started) == 1
    assert not os.path.exists(f"/proc/{started[0]['pid']}")
    assert podman_service.container_ids() == containers_before


@pytest.fixture
def doomed_service() -> Iterator[PodmanService]:
    """A Podman service of its own, for a test that kills it."""
    # Podman rejects a run root path longer than 50 characters.
    base = Path(tempfile.mkdtemp(prefix="bootc-build-doomed-", dir="/tmp"))
    env = service_env(base)
    service = PodmanService(
        root=base / "root", runroot=base / "run", socket=base / "podman.sock", env=env
    )
    service.process = subprocess.Popen(
        service.podman_argv("system", "service", "--time=0", service.url),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_socket(service, timeout=30)
        yield service
    finally:
        if service.process.poll() is None:
            service.process.kill()
        service.process.wait()
        service.wipe()
        shutil.rmtree(base, ignore_errors=True)


def test_lost_service_names_stage_and_socket(
    doomed_service: PodmanService, tmp_path: Path
) -> None:
    busybox = tmp_path / "busybox-context"
    busybox.mkdir()
    (busybox / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (busybox / "busybox").chmod(0o755)
    (busybox / "Containerfile").write_text(
        "FROM scratch AS sleeper\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", '
        '"echo started-sleeping; /bin/busybox sleep 120"]\n'
    )
    process = _start_build(busybox, {"CONTAINER_HOST": doomed_service.url})
    seen: list[str] = []
    _wait_for_line(process, "started-sleeping", seen)

    assert doomed_service.process is not None
    doomed_service.process.kill()
    code, seconds, stderr = _finish(process, seen)

    assert code == 3, stderr
    assert seconds < 10, stderr
    failed = [
        json.loads(line) for line in stderr.splitlines() if '"command.failed"' in line
    ]
    assert len(failed) == 1
    assert "sleeper" in failed[0]["message"]
    assert str(doomed_service.socket) in failed[0]["message"]
    # Podman 4.3 leaves the killed build's working containers; the reset in the
    # fixture's teardown removes them with the storage.


def test_service_coming_up_is_waited_for(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    late = tmp_path / "late"
    late.mkdir()
    (late / "Containerfile").write_text(f"FROM {busybox_image}\nRUN true\n")
    socket_path = tmp_path / "late.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    env.pop("CONTAINER_HOST", None)
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bootc_builder",
            "build",
            str(late),
            "--url",
            f"unix://{socket_path}",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(1)
    service = subprocess.Popen(
        podman_service.podman_argv(
            "system", "service", "--time=0", f"unix://{socket_path}"
        ),
        env=podman_service.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, err = client.communicate(timeout=60)
    finally:
        service.terminate()
        service.wait(timeout=20)

    assert client.returncode == 0, err
    assert len(out.strip()) == 64
