"""Shells for debugging, driven in a real terminal under tmux."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINERS_CONF, PodmanService, run_cli

pytestmark = pytest.mark.integration


class Terminal:
    """A tmux session running one command, read with capture-pane."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = f"bootc-build-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                "160",
                "-y",
                "50",
                f"env {exports} {command}; echo EXIT=$?; sleep 60",
            ],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-t", self.name, "-p", "-S", "-200"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared:\n{self.screen()}")

    def type(self, keys: str) -> None:
        subprocess.run(
            ["tmux", "send-keys", "-t", self.name, keys, "Enter"], check=True
        )

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


@pytest.fixture
def terminal_env(podman_service: PodmanService, tmp_path: Path) -> dict[str, str]:
    return {
        "TMPDIR": str(tmp_path),
        "CONTAINER_HOST": podman_service.url,
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def _failing_context(folder: Path, base: str) -> Path:
    folder.mkdir()
    (folder / "Containerfile").write_text(
        f"FROM {base} AS builder\n"
        "WORKDIR /work/area\n"
        "RUN echo made > /work/area/made-by-step-3\n"
        "RUN echo about to fail && false\n"
    )
    return folder


def test_on_failure_opens_shell_in_last_layer(
    busybox_image: str,
    tmp_path: Path,
    terminal_env: dict[str, str],
    terminals: list[Terminal],
    new_images: set[str],
) -> None:
    context = _failing_context(tmp_path / "context", busybox_image)
    command = (
        f"{sys.executable} -m bootc_builder build {context} "
        "--on-failure shell --log-format console"
    )
    terminal = Terminal(command, terminal_env)
    terminals.append(terminal)

    terminal.wait_for("run it again by hand with: echo about to fail && false")
    terminal.wait_for("/work/area #")
    terminal.type("pwd; cat made-by-step-3; echo SHELL-$((20+22))")
    screen = terminal.wait_for("SHELL-42")
    terminal.type("exit")
    final = terminal.wait_for("EXIT=")

    assert "/work/area\nmade\nSHELL-42" in screen.replace("\r", "")
    assert "EXIT=1" in final
    assert "stage builder, step 4/4" in final


def test_on_failure_without_terminal_prints_command(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    context = _failing_context(tmp_path / "context", busybox_image)

    result = run_cli(
        "build",
        str(context),
        "--on-failure",
        "shell",
        "--log-format",
        "console",
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert "stdin is not a terminal; open the shell with:" in result.stderr
    assert f"podman --url {podman_service.url} run --rm -it" in result.stderr


def test_debug_opens_shell_before_step(
    busybox_image: str,
    tmp_path: Path,
    terminal_env: dict[str, str],
    terminals: list[Terminal],
    new_images: set[str],
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"FROM {busybox_image} AS first\n"
        "RUN echo one > /one\n"
        f"FROM {busybox_image} AS second\n"
        "COPY --from=first /one /one\n"
        "RUN echo two > /two\n"
        "RUN echo three > /three\n"
    )
    command = (
        f"{sys.executable} -m bootc_builder debug {context} --stage second --step 4 "
        "--log-format console"
    )
    terminal = Terminal(command, terminal_env)
    terminals.append(terminal)

    terminal.wait_for("/ #")
    terminal.type("ls /one /two /three; echo LISTED")
    screen = terminal.wait_for("LISTED\n")
    terminal.type("exit")
    final = terminal.wait_for("EXIT=")

    assert "/one" in screen
    assert "/two" in screen
    assert "/three: No such file or directory" in screen
    assert "EXIT=0" in final


def test_debug_rejects_step_outside_stage(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch AS only\nCOPY a /a\n")

    result = run_cli("debug", str(tmp_path), "--stage", "only", "--step", "9")

    assert result.exit_code == 2, result.describe()
    assert "--step 9" in result.stderr
