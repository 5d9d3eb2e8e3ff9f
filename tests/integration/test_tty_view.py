"""The live view of `build --progress tty` in a real terminal: a tmux pane.

The build runs inside a detached tmux session on a tmux server of its own
(``tmux -L``), so the test neither needs nor touches the user's sessions. The
pane is read with ``capture-pane`` while the build runs and after it ends.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINERS_CONF, REPO, PodmanService

pytestmark = pytest.mark.integration

# The builder stage prints slowly enough for the view to be caught running.
CONTAINERFILE = """\
ARG BASE
FROM ${BASE} AS builder
ARG TOKEN
RUN mkdir -p /out && echo "$TOKEN" > /out/token && \\
    for i in 1 2 3 4 5 6; do echo "unit $i of $TOKEN"; sleep 0.5; done
FROM ${BASE} AS final
COPY --from=builder /out/token /token
RUN cat /token
"""
BUILD_TIMEOUT_S = 300


class Pane:
    """A detached tmux session of 120x40 on a private tmux server."""

    def __init__(self, server: str) -> None:
        self.server = server

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.server, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", "view", "-x", "120", "-y", "40", command)

    def capture(self) -> list[str]:
        text = self.tmux("capture-pane", "-p", "-t", "view").stdout
        return [line.rstrip() for line in text.splitlines()]


@pytest.fixture
def pane() -> Iterator[Pane]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; run `make deps` or .ci/run first")
    pane = Pane(f"bootc-build-test-{uuid.uuid4().hex[:12]}")
    try:
        yield pane
    finally:
        subprocess.run(
            ["tmux", "-L", pane.server, "kill-server"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def _row(lines: list[str], stage: str) -> str | None:
    """Return the view's row of a stage: its icon, then its name, then status."""
    pattern = re.compile(rf"^ \S {re.escape(stage)}\s+\S")
    return next((line for line in lines if pattern.match(line)), None)


def test_tty_view_rows_run_and_finish(
    podman_service: PodmanService,
    busybox_image: str,
    new_images: set[str],
    pane: Pane,
    tmp_path: Path,
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    token = uuid.uuid4().hex[:8]
    status_file = tmp_path / "status"
    build = [
        sys.executable,
        "-m",
        "bootc_builder",
        "build",
        str(context),
        "--progress",
        "tty",
        "--build-arg",
        f"BASE={busybox_image}",
        "--build-arg",
        f"TOKEN={token}",
    ]
    script = tmp_path / "run.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"export CONTAINER_HOST={shlex.quote(podman_service.url)}\n"
        f"export CONTAINERS_CONF={shlex.quote(str(CONTAINERS_CONF))}\n"
        f"cd {shlex.quote(str(REPO))}\n"
        f"{shlex.join(build)}\n"
        f"echo $? > {shlex.quote(str(status_file))}\n"
        # The pane stays open so that it can be read after the build.
        "exec sleep 600\n"
    )
    script.chmod(0o755)

    pane.start(str(script))
    seen_running: list[str] = []
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while not status_file.exists() and time.monotonic() < deadline:
        lines = pane.capture()
        builder, final = _row(lines, "builder"), _row(lines, "final")
        if builder and final and "running" in builder and "waiting" in final:
            seen_running = lines
        time.sleep(0.2)
    lines = pane.capture()

    screen = "\n".join(lines)
    assert status_file.exists(), f"the build did not end in time:\n{screen}"
    assert status_file.read_text().strip() == "0", screen
    assert seen_running, f"the view never showed builder running:\n{screen}"
    assert any(re.search(rf"│ unit \d of {token}", line) for line in seen_running)
    builder_row = _row(lines, "builder")
    final_row = _row(lines, "final")
    assert builder_row is not None, screen
    assert final_row is not None, screen
    assert re.search(r"builder\s+done\s+\S+s\s+3/3 steps", builder_row), screen
    assert re.search(r"final\s+done\s+\S+s\s+3/3 steps", final_row), screen
    assert "target final: 2 of 2 stages finished" in screen
    # The output lines of finished stages leave the view.
    assert not any("│ unit" in line for line in lines), screen
    assert any(re.fullmatch(r"[0-9a-f]{64}", line) for line in lines), screen
