"""The catalogue of bad input: one line, exit code 2, nothing sent to Podman.

Each case runs the real command in a child process with ``--url`` pointing at a
Unix socket that only counts connections, so a case that reached for Podman
would show up as a connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli


class CountingSocket:
    """A Unix socket that accepts connections, counts them and closes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[CountingSocket]:
    server = CountingSocket(tmp_path / "podman.sock")
    yield server
    server.close()


@dataclass
class Case:
    """A bad input: how to set it up, the arguments, and words the message needs."""

    setup: Callable[[Path], list[str]]
    expected: tuple[str, ...]


def _context(tmp_path: Path, containerfile: str | bytes) -> Path:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    target = context / "Containerfile"
    if isinstance(containerfile, bytes):
        target.write_bytes(containerfile)
    else:
        target.write_text(containerfile)
    return context


def _build(containerfile: str | bytes, *extra: str) -> Callable[[Path], list[str]]:
    def setup(tmp_path: Path) -> list[str]:
        return ["build", str(_context(tmp_path, containerfile)), *extra]

    return setup


def _missing_context(tmp_path: Path) -> list[str]:
    return ["build", str(tmp_path / "nowhere")]


def _missing_containerfile(tmp_path: Path) -> list[str]:
    context = tmp_path / "context"
    context.mkdir()
    return ["build", str(context)]


def _directory_as_containerfile(tmp_path: Path) -> list[str]:
    context = _context(tmp_path, "FROM scratch\n")
    (context / "adir").mkdir()
    return ["build", str(context), "-f", str(context / "adir")]


def _missing_secret(tmp_path: Path) -> list[str]:
    context = _context(tmp_path, "FROM scratch\n")
    return ["build", str(context), "--secret", f"id=token,src={tmp_path}/absent.txt"]


CASES = {
    "missing context": Case(_missing_context, ("nowhere",)),
    "missing Containerfile": Case(_missing_containerfile, ("not found",)),
    "directory as Containerfile": Case(_directory_as_containerfile, ("adir",)),
    "empty Containerfile": Case(_build(""), ("empty",)),
    "binary Containerfile": Case(_build(b"\x7fELF\x00\x01\x02"), ("binary",)),
    "no FROM": Case(_build("ARG A=1\n"), ("FROM",)),
    "instruction before FROM": Case(_build("RUN true\nFROM scratch\n"), ("RUN",)),
    "unknown instruction": Case(_build("FROM scratch\nFROB x\n"), ("FROB",)),
    "unterminated heredoc": Case(
        _build("FROM scratch\nRUN <<EOF\necho\n"), ("heredoc",)
    ),
    "empty base": Case(_build("ARG BASE\nFROM ${BASE}\n"), ("FROM",)),
    "copy from itself": Case(
        _build("FROM scratch AS a\nCOPY --from=a /x /x\n"), ("the stage it is in",)
    ),
    "copy from later stage": Case(
        _build("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n"), ("b",)
    ),
    "duplicate stage names": Case(
        _build("FROM scratch AS a\nFROM scratch AS a\n"), ("--target",)
    ),
    "unknown target": Case(
        _build("FROM scratch AS builder\n", "--target", "bulder"), ("builder",)
    ),
    "malformed build arg": Case(
        _build("FROM scratch\n", "--build-arg", "NOVALUE"), ("KEY=VALUE",)
    ),
    "malformed label": Case(_build("FROM scratch\n", "--label", "=x"), ("--label",)),
    "upper-case tag": Case(
        _build("FROM scratch\n", "-t", "localhost/MyApp:1"), ("lower-case",)
    ),
    "invalid tag": Case(_build("FROM scratch\n", "-t", "bad tag!"), ("--tag",)),
    "unknown pull policy": Case(
        _build("FROM scratch\n", "--pull", "sometimes"), ("--pull",)
    ),
    "missing secret file": Case(_missing_secret, ("absent.txt",)),
    "bad retry delay": Case(
        _build("FROM scratch\n", "--retry-delay", "soon"), ("--retry-delay",)
    ),
    "negative retry": Case(_build("FROM scratch\n", "--retry", "-1"), ("--retry",)),
    "invalid platform": Case(
        _build("FROM scratch\n", "--platform", "foo"), ("OS/ARCH",)
    ),
    "build arg key with space": Case(
        _build("FROM scratch\n", "--build-arg", "A B=1"), ("KEY=VALUE",)
    ),
    "digestfile in missing folder": Case(
        _build(
            "FROM scratch\n",
            "-t",
            "localhost/x:1",
            "--push",
            "--digestfile",
            "/nonexistent-folder/digest",
        ),
        ("does not exist",),
    ),
    "digestfile without push": Case(
        _build("FROM scratch\n", "--digestfile", "/tmp/x"), ("--push",)
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(
    name: str, tmp_path: Path, listener: CountingSocket
) -> None:
    case = CASES[name]
    args = case.setup(tmp_path)

    result = run_cli(
        *args, "--url", f"unix://{listener.path}", "--log-format", "console"
    )

    assert result.exit_code == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.describe()
    assert "Traceback" not in result.stderr
    for word in case.expected:
        assert word in lines[0], result.describe()
    assert result.stdout == ""
    assert listener.connections == 0


def test_unknown_url_scheme(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\n")

    result = run_cli("build", str(context), "--url", "gopher://x")

    assert result.exit_code == 2, result.describe()
    assert len(result.stderr.strip().splitlines()) == 1
    assert "gopher://" in result.stderr


def test_unix_url_without_path(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\n")

    result = run_cli("build", str(context), "--url", "unix://")

    assert result.exit_code == 2, result.describe()
    assert "socket path" in result.stderr


def test_missing_option_value_points_to_help() -> None:
    # Last on the line, so that no other argument passes for its value.
    result = run_cli("push", "--retry")

    assert result.exit_code == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.describe()
    assert "'--retry' requires an argument" in lines[0]
    assert lines[0].endswith("(see `bootc-build push --help`)")


def test_help_keeps_brackets() -> None:
    result = run_cli("build", "--help")

    assert result.exit_code == 0, result.describe()
    assert "[default: .]" in result.stdout
    assert "OS/ARCH[/VARIANT]" in result.stdout
    assert "\\[" not in result.stdout


def test_version_is_printed() -> None:
    result = run_cli("--version")

    assert result.exit_code == 0, result.describe()
    assert result.stdout.startswith("bootc-build ")
