"""Benchmarks of bootc-build against podman build, podman --remote and podman push.

Usage: python benchmarks/run.py [--quick] [--only NAME]... [--output PATH]

All builds use one private Podman storage in a temporary directory. The podman
CLI and the `podman system service` that bootc-build and `podman --remote` talk
to get the same --root and --runroot, so they share images and the layer cache.
Registries and the stand-in service for packing listen only on 127.0.0.1 or on
a socket in the temporary directory. Everything is stopped and removed at the
end, also after an error or Ctrl-C. benchmarks/README.md describes each
scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BOOTC_BUILD = REPO / ".venv" / "bin" / "bootc-build"
CONTAINERS_CONF = REPO / "contrib" / "containers.conf"
TWO_STAGE = REPO / "Containerfiles" / "two-stage"
DEFAULT_OUTPUT = REPO / "benchmarks" / "RESULTS.md"
ANALYSIS = REPO / "benchmarks" / "ANALYSIS.md"

# The stand-ins that `make standins` puts in the default storage; see Makefile.
GO_TOOLSET_IMAGE = "localhost/bootc-build-standins/go-toolset:bookworm"
BOOTC_BASE_IMAGE = "localhost/bootc-build-standins/bootc-base:latest"
PUSH_IMAGE = "localhost/bootc-build-bench/push:latest"
PUSH_REPOSITORY = "bootc-build-bench/push"

LOOPBACK = "127.0.0.1"
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Environment variables that would send a tool to another service or change
# how it renders output.
STRIPPED_ENV = (
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "NO_COLOR",
    "FORCE_COLOR",
    "REGISTRY_AUTH_FILE",
)

COMMAND_TIMEOUT_S = 900.0
SERVICE_START_TIMEOUT_S = 30.0

# Targets. Time targets apply to medians on a 2-core machine, RSS targets to
# the highest peak RSS of any run.
RSS_LIMIT_MIB = 80.0
LARGE_CONTEXT_RSS_LIMIT_MIB = 100.0
# A 10x volume counts as flat when its peak RSS is at most this much above 1x.
FLAT_RSS_FACTOR = 1.10

LOG_LINES = 200_000
CONTEXT_FILES = 20_000
CONTEXT_BYTES = GIB
SMALL_FILES = 100_000
SMALL_FILE_MEAN_BYTES = KIB
SPARSE_FILE_BYTES = 4 * GIB
PUSH_LAYER_BYTES = 150 * MIB
PUSH_LAYERS = 2

MANIFEST_MEDIA_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


class BenchError(Exception):
    """A benchmark could not run or a tool gave a wrong result."""


# Measuring


@dataclass(frozen=True)
class Sample:
    """One run of a command: wall time, its own CPU time and peak RSS."""

    wall_s: float
    cpu_s: float
    rss_mib: float


# Linux records the RSS of the process that calls exec in the new program's
# ru_maxrss, and a child forked from this harness starts with the harness's RSS.
# Commands therefore start from a fresh, small Python process that spawns the
# command, waits for it with os.wait4 and writes its wall time and rusage to
# the file named by its first argument. SIGTERM to it kills the command.
LAUNCHER = """
import json, os, signal, sys, time
path, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(path, "w") as file:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "wall": wall,
               "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss},
              file)
"""


def measure(
    argv: Sequence[str], *, env: dict[str, str], stdout: Path, stderr: Path
) -> Sample:
    """Run ``argv`` to completion and return its wall time, CPU time and peak RSS.

    CPU time is user plus system time of that process and the children it
    waited for. The work that a Podman service does for a client is not in it.

    Raises:
        BenchError: the command failed or ran longer than COMMAND_TIMEOUT_S.
    """
    usage_path = stdout.with_suffix(".usage")
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(usage_path)]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*launcher, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            process.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
            raise BenchError(
                f"`{shlex.join(argv)}` ran longer than {COMMAND_TIMEOUT_S:.0f} s"
            ) from None
        except BaseException:
            process.terminate()
            process.wait()
            raise
    try:
        usage = json.loads(usage_path.read_text())
    except (OSError, ValueError) as error:
        raise BenchError(
            f"the launcher of `{shlex.join(argv)}` wrote no usage: {error}\n"
            f"{tail_text(stderr)}"
        ) from None
    usage_path.unlink()
    if usage["exit"] != 0:
        raise BenchError(
            f"`{shlex.join(argv)}` exited with {usage['exit']}:\n"
            f"{tail_text(stderr)}\n{tail_text(stdout)}"
        )
    return Sample(
        wall_s=float(usage["wall"]),
        cpu_s=float(usage["cpu"]),
        rss_mib=float(usage["rss_kib"]) / KIB,
    )


def tail_text(path: Path, size: int = 2000) -> str:
    """Return the last ``size`` bytes of a file as text."""
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - size))
        return file.read().decode("utf-8", "replace").strip()


Check = Callable[[Path, Path], None]


@dataclass
class Variant:
    """One command of a comparison and the check that its output must pass.

    ``prepare``, when set, returns a context manager that starts what one run
    needs, such as an empty registry, and yields the argv to run. ``check``
    runs while that is still up, and ``argv`` is then only the command shown
    in the report.
    """

    label: str
    argv: list[str]
    check: Check | None = None
    warmup: bool = True
    prepare: Callable[[], contextlib.AbstractContextManager[list[str]]] | None = None
    # Fewer runs for a slow reference command; None runs it every time.
    max_runs: int | None = None


@dataclass
class Series:
    """The samples of one variant."""

    variant: Variant
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(sample.wall_s for sample in self.samples)

    @property
    def cpu_s(self) -> float:
        return statistics.median(sample.cpu_s for sample in self.samples)

    @property
    def rss_mib(self) -> float:
        return max(sample.rss_mib for sample in self.samples)


@dataclass
class Figure:
    """A derived number and its target; ``passed`` is None when it has none."""

    name: str
    value: str
    target: str
    passed: bool | None


@dataclass
class Report:
    """The series, figures, notes and commands of one scenario."""

    key: str
    title: str
    notes: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str | None = None

    def add(self, bench: Bench, series: Sequence[Series]) -> dict[str, Series]:
        """Record the series and their commands; return them by label."""
        for item in series:
            self.series.append(item)
            command = bench.display(item.variant.argv)
            if command not in self.commands:
                self.commands.append(command)
        return {item.variant.label: item for item in series}


@dataclass(frozen=True)
class RunPlan:
    """How many measured runs each kind of benchmark gets."""

    runs: int
    volume_runs: int
    context_runs: int
    slow_reference_runs: int
    startup_runs: int


FULL_PLAN = RunPlan(
    runs=7, volume_runs=2, context_runs=3, slow_reference_runs=2, startup_runs=20
)
QUICK_PLAN = RunPlan(
    runs=2, volume_runs=1, context_runs=1, slow_reference_runs=1, startup_runs=5
)


# The session: private storage, the service, helpers


class Bench:
    """A temporary directory with private Podman storage and a service on it."""

    def __init__(self) -> None:
        # Podman 4.3 rejects a run root longer than 50 characters, so the
        # directory sits directly in /tmp with a short name.
        self.tmp = Path(tempfile.mkdtemp(prefix="bootc-bench-", dir="/tmp"))
        self.root = self.tmp / "root"
        self.runroot = self.tmp / "run"
        self.socket = self.tmp / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.work = self.tmp / "work"
        self.work.mkdir()
        podman_tmp = self.tmp / "tmp"
        podman_tmp.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
        self.env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        # An installed bootc-build runs from cached bytecode. The cache goes to
        # this directory, so nothing is written to the repository.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        # Podman unpacks build contexts and stages pushed layers under TMPDIR,
        # so everything it writes stays in this directory.
        self.env["TMPDIR"] = str(podman_tmp)
        self._service: subprocess.Popen[bytes] | None = None
        self._service_log: Any = None
        self._run_counter = 0

    # Commands

    def podman_argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            *args,
        ]

    def remote_argv(self, *args: str) -> list[str]:
        return ["podman", "--remote", "--url", self.url, *args]

    def bootc_argv(self, command: str, *args: str) -> list[str]:
        return [str(BOOTC_BUILD), command, *args]

    def podman(self, *args: str) -> str:
        """Run the podman CLI on the private storage and return its stdout."""
        result = subprocess.run(
            self.podman_argv(*args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(
                f"`podman {shlex.join(args)}` failed: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def output_paths(self, label: str) -> tuple[Path, Path]:
        """Return fresh stdout and stderr files for one run."""
        self._run_counter += 1
        stem = "".join(c if c.isalnum() else "-" for c in label)[:40]
        folder = self.tmp / "out"
        folder.mkdir(exist_ok=True)
        number = self._run_counter
        return folder / f"{number:04d}-{stem}.out", folder / f"{number:04d}-{stem}.err"

    def display(self, argv: Sequence[str]) -> str:
        """Render a command for RESULTS.md with the temporary paths shortened."""
        text = shlex.join(argv)
        text = text.replace(str(BOOTC_BUILD), ".venv/bin/bootc-build")
        text = text.replace(str(self.tmp), "$BENCH_TMP")
        return text.replace(str(REPO) + "/", "")

    # The service

    def prime_bytecode(self) -> None:
        """Import every bootc_builder module once, to fill the bytecode cache."""
        code = (
            "import importlib, pkgutil, bootc_builder\n"
            "for module in pkgutil.iter_modules(bootc_builder.__path__):\n"
            "    if module.name != '__main__':\n"
            "        importlib.import_module('bootc_builder.' + module.name)\n"
        )
        python = str(REPO / ".venv" / "bin" / "python")
        for argv in ([python, "-c", code], self.bootc_argv("--help")):
            result = subprocess.run(argv, env=self.env, capture_output=True, text=True)
            if result.returncode != 0:
                # Measured runs then fill the cache: warm-up runs absorb it.
                print(f"warning: `{shlex.join(argv[:2])}` failed: {result.stderr}")

    def start_service(self) -> None:
        self._service_log = (self.tmp / "service.log").open("wb")
        self._service = subprocess.Popen(
            self.podman_argv("system", "service", "--time=0", self.url),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._service_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._service.poll() is not None:
                raise BenchError(
                    f"podman system service exited with {self._service.returncode}: "
                    f"{tail_text(self.tmp / 'service.log')}"
                )
            if self.socket.exists() and unix_http_get(self.socket, "/_ping") == 200:
                return
            time.sleep(0.1)
        raise BenchError(f"podman system service did not respond on {self.socket}")

    def stop_service(self) -> None:
        if self._service is not None and self._service.poll() is None:
            self._service.terminate()
            try:
                self._service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._service.kill()
                self._service.wait()
        self._service = None
        if self._service_log is not None:
            self._service_log.close()
            self._service_log = None

    # Images

    def copy_image(self, reference: str) -> float:
        """Copy an image from the default storage into the private one.

        Returns the seconds it took, or 0 when the image is there already.
        """
        probe = subprocess.run(
            self.podman_argv("image", "exists", reference), env=self.env, check=False
        )
        if probe.returncode == 0:
            return 0.0
        start = time.monotonic()
        save = subprocess.Popen(
            ["podman", "save", reference],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        load = subprocess.run(
            self.podman_argv("load", "--quiet"),
            env=self.env,
            stdin=save.stdout,
            capture_output=True,
            check=False,
        )
        assert save.stdout is not None
        save.stdout.close()
        save_err = save.stderr.read().decode() if save.stderr else ""
        if save.wait() != 0:
            raise BenchError(
                f"`podman save {reference}` from the default storage failed: "
                f"{save_err.strip()}; run `make standins` first"
            )
        if load.returncode != 0:
            raise BenchError(f"podman load of {reference} failed: {load.stderr!r}")
        return time.monotonic() - start

    # Tear-down

    def cleanup(self) -> None:
        """Stop the service, remove everything in the private storage and the dir."""
        self.stop_service()
        if self.root.exists():
            # Build containers exist only in storage; `rm --all` skips them.
            containers = self._storage_containers()
            for args in (
                ("rm", "--all", "--force"),
                *(("rm", "--force", container) for container in containers),
                ("rmi", "--all", "--force"),
            ):
                subprocess.run(
                    self.podman_argv(*args),
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                    timeout=COMMAND_TIMEOUT_S,
                )
        self._unmount_leftovers()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _storage_containers(self) -> list[str]:
        result = subprocess.run(
            self.podman_argv("ps", "--all", "--external", "--quiet"),
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.split()

    def _unmount_leftovers(self) -> None:
        prefix = str(self.tmp) + "/"
        with open("/proc/self/mountinfo") as mountinfo:
            points = [line.split()[4] for line in mountinfo]
        for point in sorted(points, reverse=True):
            if point.startswith(prefix):
                subprocess.run(["umount", "-l", point], check=False)


def unix_http_get(socket_path: Path, path: str) -> int | None:
    """Return the HTTP status of GET ``path`` on a Unix socket, or None."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect(str(socket_path))
            self.sock = sock

    connection = UnixConnection("localhost")
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def loopback_get(url: str, headers: dict[str, str] | None = None) -> int | None:
    """Return the HTTP status of GET ``url`` on 127.0.0.1, bypassing any proxy."""
    assert url.startswith(f"http://{LOOPBACK}:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


# Comparing variants


def compare(
    bench: Bench, variants: Sequence[Variant], runs: int, *, warmup: bool = True
) -> list[Series]:
    """Run the variants in turn, ``runs`` times each, in a rotating order.

    Alternating the commands within one session spreads the machine's drift
    over all of them. A warm-up run of each variant (unless it opts out) fills
    the page cache and Python's bytecode cache first and is not counted.
    """
    series = [Series(variant) for variant in variants]
    if warmup:
        for item in series:
            if item.variant.warmup:
                run_variant(bench, item.variant)
    for run in range(runs):
        shift = run % len(series)
        for item in series[shift:] + series[:shift]:
            limit = item.variant.max_runs
            if limit is not None and len(item.samples) >= limit:
                continue
            sample = run_variant(bench, item.variant)
            item.samples.append(sample)
            print(
                f"    {item.variant.label}: {sample.wall_s:.3f} s wall, "
                f"{sample.cpu_s:.3f} s CPU, {sample.rss_mib:.1f} MiB",
                flush=True,
            )
    return series


def run_variant(bench: Bench, variant: Variant) -> Sample:
    stdout, stderr = bench.output_paths(variant.label)
    prepare = variant.prepare or (lambda: contextlib.nullcontext(variant.argv))
    with prepare() as argv:
        sample = measure(argv, env=bench.env, stdout=stdout, stderr=stderr)
        if variant.check is not None:
            variant.check(stdout, stderr)
    stdout.unlink()
    stderr.unlink()
    return sample


def ratio_figure(
    name: str, numerator: Series, denominator: Series, limit: float, *, strict: bool
) -> Figure:
    """Compare two median wall times against ``ratio <= limit`` (or ``<``)."""
    ratio = numerator.wall_s / denominator.wall_s
    sign = "<" if strict else "≤"
    passed = ratio < limit if strict else ratio <= limit
    value = f"{ratio:.2f}x ({numerator.wall_s:.3f} s / {denominator.wall_s:.3f} s)"
    return Figure(name, value, f"{sign} {limit:.2f}x", passed)


def info_ratio(name: str, numerator: Series, denominator: Series) -> Figure:
    ratio = numerator.wall_s / denominator.wall_s
    return Figure(name, f"{ratio:.2f}x", "-", None)


def rss_figure(name: str, item: Series, limit: float = RSS_LIMIT_MIB) -> Figure:
    return Figure(
        name, f"{item.rss_mib:.1f} MiB", f"< {limit:.0f} MiB", item.rss_mib < limit
    )


def flat_rss_figure(name: str, small: Series, large: Series) -> Figure:
    growth = large.rss_mib / small.rss_mib
    return Figure(
        name,
        f"{large.rss_mib:.1f} MiB at 10x vs {small.rss_mib:.1f} MiB at 1x "
        f"({growth:.2f}x)",
        f"≤ {FLAT_RSS_FACTOR:.2f}x",
        growth <= FLAT_RSS_FACTOR,
    )


def info_figure(name: str, value: str) -> Figure:
    return Figure(name, value, "-", None)


# Checks


class SameImage:
    """A check that every run prints the same image id as its last stdout line.

    With no ``expected`` id, the first run that is checked, usually the
    warm-up, sets it. bootc-build may return an image of its own that carries
    a label, so its id is compared with its own first run.
    """

    def __init__(self, expected: str | None = None) -> None:
        self.image_id = expected

    def __call__(self, stdout: Path, stderr: Path) -> None:
        del stderr
        lines = tail_text(stdout).splitlines()
        last = lines[-1].strip().removeprefix("sha256:") if lines else ""
        if self.image_id is None:
            self.image_id = last
        elif last != self.image_id:
            raise BenchError(
                f"expected image {self.image_id!r} as the last line, got {last!r}"
            )


def endpoint_argv(bench: Bench, context: Path, *, no_cache: bool) -> list[str]:
    """Return a curl command that posts ``context`` to the build endpoint.

    curl sends the archive that bootc-build packs, with the query that
    bootc-build sends, and writes the service's stream to stdout. Its time is
    the service's work with next to no client work: the least that any client
    of this endpoint can take.
    """
    from bootc_builder.config import BuildOptions
    from bootc_builder.pipeline import build_query, plan_build
    from bootc_builder.podman_api import API_VERSION

    options = BuildOptions(context, context / "Containerfile", no_cache=no_cache)
    plan = plan_build(options)
    archive = bench.work / f"{context.name}.tar"
    if not archive.exists():
        with archive.open("wb") as stream:
            for chunk in plan.archive.chunks():
                stream.write(chunk)
    query = urllib.parse.urlencode(build_query(options, plan))
    return [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--unix-socket",
        str(bench.socket),
        "--request",
        "POST",
        "--header",
        "Content-Type: application/x-tar",
        # Without this header curl waits for a 100 Continue before a large body.
        "--header",
        "Expect:",
        "--upload-file",
        str(archive),
        f"http://podman/v{API_VERSION}/libpod/build?{query}",
    ]


def expect_text(marker: str, *, in_stderr: bool) -> Check:
    """Require ``marker`` near the end of stdout or stderr."""

    def check(stdout: Path, stderr: Path) -> None:
        path = stderr if in_stderr else stdout
        if marker not in tail_text(path, size=MIB):
            raise BenchError(f"{marker!r} is missing from the end of {path.name}")

    return check


def last_json_event(path: Path, event: str) -> dict[str, Any]:
    """Return the last JSON log line of ``event`` in a bootc-build stderr file."""
    for line in reversed(tail_text(path, size=64 * KIB).splitlines()):
        if f'"{event}"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == event:
                return dict(record)
    raise BenchError(f"no {event} event at the end of {path.name}")


# Generated inputs


def write_file(path: Path, size: int, pool: bytes, rng: random.Random) -> None:
    """Write ``size`` bytes taken from a random offset in ``pool``."""
    with path.open("wb") as file:
        remaining = size
        while remaining:
            count = min(remaining, len(pool) // 2)
            offset = rng.randrange(len(pool) - count + 1)
            file.write(memoryview(pool)[offset : offset + count])
            remaining -= count


def make_sparse(path: Path, size: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(descriptor, size)
    finally:
        os.close(descriptor)


IGNORE_FILE = """\
# Build outputs and scratch files that the image does not need.
cache/
**/*.tmp
"""


def make_context_tree(
    folder: Path, files: int, total_bytes: int, *, sparse: bool, containerfile: str
) -> tuple[int, int]:
    """Fill ``folder`` with a context whose ignore file excludes half of it.

    A quarter of the files are under ``cache/`` and a quarter are ``*.tmp``
    files next to the kept ones, about 200 a directory. Sizes are random with
    a mean of ``total_bytes / files``. With ``sparse`` the files are holes,
    which the packer reads as zeros, so that a large tree takes seconds to make.
    Returns the number and bytes of the files that the ignore file keeps.
    """
    rng = random.Random(files)
    pool = b"" if sparse else os.urandom(8 * MIB)
    directories = max(1, files // 200)
    for top in ("src", "cache"):
        for index in range(directories):
            (folder / top / f"d{index:04d}").mkdir(parents=True)
    mean = total_bytes // files
    kept_files = kept_bytes = 0
    for index in range(files):
        directory = f"d{index % directories:04d}"
        if index % 4 == 0:
            path = folder / "cache" / directory / f"f{index:06d}.bin"
        elif index % 4 == 1:
            path = folder / "src" / directory / f"f{index:06d}.tmp"
        else:
            path = folder / "src" / directory / f"f{index:06d}.dat"
            kept_files += 1
        size = rng.randint(0, 2 * mean)
        if index % 4 >= 2:
            kept_bytes += size
        if sparse:
            make_sparse(path, size)
        else:
            write_file(path, size, pool, rng)
    (folder / ".containerignore").write_text(IGNORE_FILE)
    (folder / "Containerfile").write_text(containerfile)
    return kept_files, kept_bytes


def make_small_files(folder: Path, files: int, mean: int, containerfile: str) -> int:
    """Fill ``folder`` with ``files`` small files of random content; return bytes."""
    rng = random.Random(files)
    pool = os.urandom(MIB)
    directories = max(1, files // 200)
    for index in range(directories):
        (folder / f"d{index:04d}").mkdir(parents=True)
    total = 0
    for index in range(files):
        size = rng.randint(0, 2 * mean)
        write_file(
            folder / f"d{index % directories:04d}" / f"f{index:06d}", size, pool, rng
        )
        total += size
    (folder / "Containerfile").write_text(containerfile)
    return total


def human_bytes(count: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if count >= size:
            return f"{count / size:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{count:.0f} B"


# A stand-in for the build endpoint, for packing only


SINK_IMAGE_ID = "5" * 64


class _SinkServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _SinkHandler(BaseHTTPRequestHandler):
    """Serve the calls that `bootc-build build` makes and discard the context.

    The build endpoint reads and discards the whole chunked body before it
    replies. The two-step stream it returns has an output line with the number
    of bytes received, so the harness can check that every byte arrived.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def address_string(self) -> str:
        return "unix-socket"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/_ping"):
            self._reply(200, b"OK", {"Libpod-API-Version": "4.3.1"})
        elif path.endswith("/containers/json"):
            self._reply(200, b"[]")
        else:
            self._reply(404, b'{"message": "not in the benchmark stand-in"}')

    def do_POST(self) -> None:
        received = self._discard_body()
        if not self.path.split("?", 1)[0].endswith("/build"):
            self._reply(404, b'{"message": "not in the benchmark stand-in"}')
            return
        messages = [
            {"stream": "[1/1] STEP 1/2: FROM scratch\n"},
            {"stream": "[1/1] STEP 2/2: COPY (benchmark stand-in)\n"},
            {"stream": f"received {received} bytes of context\n"},
            {"stream": "[1/1] COMMIT\n"},
            {"stream": f"--> {SINK_IMAGE_ID[:11]}\n"},
            {"aux": {"ID": f"sha256:{SINK_IMAGE_ID}"}},
            {"stream": f"{SINK_IMAGE_ID}\n"},
        ]
        body = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
        self._reply(200, body)

    def _discard_body(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._discard_chunked()
        remaining = int(self.headers.get("Content-Length") or 0)
        received = remaining
        while remaining:
            data = self.rfile.read(min(remaining, MIB))
            if not data:
                break
            remaining -= len(data)
        return received - remaining

    def _discard_chunked(self) -> int:
        buffer = memoryview(bytearray(MIB))
        received = 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return received
            remaining = size
            while remaining:
                count = self.rfile.readinto(buffer[: min(remaining, MIB)])
                if not count:
                    return received
                remaining -= count
                received += count
            self.rfile.readline()

    def _reply(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _serve_sink(socket_path: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _SinkServer(socket_path, _SinkHandler) as server:
        server.serve_forever()


@contextlib.contextmanager
def sink_service(bench: Bench) -> Iterator[str]:
    """Run the build endpoint stand-in in a child process; yield its URL."""
    path = bench.tmp / "sink.sock"
    process = multiprocessing.get_context("fork").Process(
        target=_serve_sink, args=(str(path),), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 10
        while unix_http_get(path, "/_ping") != 200:
            if time.monotonic() > deadline or not process.is_alive():
                raise BenchError("the build endpoint stand-in did not start")
            time.sleep(0.05)
        yield f"unix://{path}"
    finally:
        process.terminate()
        process.join(10)


# Registries


@contextlib.contextmanager
def loopback_registry(bench: Bench) -> Iterator[str]:
    """Run Debian's docker-registry on 127.0.0.1 with empty storage; yield HOST:PORT."""
    folder = Path(tempfile.mkdtemp(prefix="registry-", dir=bench.work))
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: {LOOPBACK}:{port}\n"
    )
    with (folder / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 15
            while loopback_get(f"http://{LOOPBACK}:{port}/v2/") != 200:
                if time.monotonic() > deadline or process.poll() is not None:
                    log_text = tail_text(folder / "registry.log")
                    raise BenchError(f"docker-registry did not start: {log_text}")
                time.sleep(0.05)
            yield f"{LOOPBACK}:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    shutil.rmtree(folder, ignore_errors=True)


# Scenarios


def bench_cached_rebuild(bench: Bench, plan: RunPlan, report: Report) -> None:
    copy_s = bench.copy_image(GO_TOOLSET_IMAGE)
    report.notes.append(
        "The stand-ins of `make standins` (the Go toolset made with mmdebstrap "
        "and the 2 MB busybox bootc base) were copied from the default storage "
        f"with `podman save | podman --root ... load` ({copy_s:.0f} s, not "
        "measured). A first, unmeasured `podman build` fills the layer cache. "
        "Every podman run checks that it returns that build's image id, and "
        "every bootc-build run that it returns the id of its own warm-up run."
    )
    args = [
        *("--build-arg", f"BUILDER_IMAGE={GO_TOOLSET_IMAGE}"),
        *("--build-arg", f"BASE_IMAGE={BOOTC_BASE_IMAGE}"),
        str(TWO_STAGE),
    ]
    image_id = bench.podman("build", "--quiet", *args).split()[-1]
    cached = SameImage(image_id.removeprefix("sha256:"))
    ours_cached = SameImage()
    bootc = bench.bootc_argv("build", "--url", bench.url, "--log-format", "json")
    named = report.add(
        bench,
        compare(
            bench,
            [
                Variant("bootc-build", [*bootc, *args], ours_cached),
                Variant("podman build", bench.podman_argv("build", *args), cached),
                Variant(
                    "podman --remote build", bench.remote_argv("build", *args), cached
                ),
            ],
            plan.runs,
        ),
    )
    if ours_cached.image_id != cached.image_id:
        report.notes.append(
            f"bootc-build returned image {ours_cached.image_id:.12} on every run, "
            f"not the {cached.image_id:.12} that Podman's cache gives, so its "
            "warm-up run made an image of its own and later runs reused it."
        )
    ours, local = named["bootc-build"], named["podman build"]
    report.figures += [
        ratio_figure("bootc-build / podman build", ours, local, 1.0, strict=False),
        info_ratio(
            "bootc-build / podman --remote build", ours, named["podman --remote build"]
        ),
        rss_figure("bootc-build peak RSS", ours),
    ]


def log_context(bench: Bench, lines: int) -> Path:
    """Make a context whose RUN step prints ``lines`` lines of 26 bytes."""
    folder = bench.work / f"logs-{lines}"
    folder.mkdir()
    program = f'BEGIN {{ for (i = 1; i <= {lines}; i++) printf "{LOG_LINE}\\n", i }}'
    (folder / "Containerfile").write_text(
        f"FROM {BOOTC_BASE_IMAGE}\nRUN awk '{program}'\n"
    )
    return folder


LOG_LINE = "log line %07d abcdefgh"


def bench_log_volume(bench: Bench, plan: RunPlan, report: Report) -> None:
    report.notes.append(
        "The RUN step prints lines of 26 bytes (`log line 0000001 abcdefgh`) with "
        "busybox awk, and every run uses --no-cache so that the step runs each "
        "time. Each tool's stdout and stderr go to files, as in CI. Every run "
        "checks that the step's last line reached the log."
    )
    by_volume: dict[str, dict[str, Series]] = {}
    for volume, lines, runs in (
        ("1x", LOG_LINES, plan.runs),
        ("10x", 10 * LOG_LINES, plan.volume_runs),
    ):
        context = str(log_context(bench, lines))
        marker = LOG_LINE.replace("%07d", f"{lines:07d}")
        in_stdout = expect_text(marker, in_stderr=False)
        in_stderr = expect_text(marker, in_stderr=True)
        bootc = bench.bootc_argv("build", "--no-cache", "--url", bench.url, context)
        variants = [
            Variant(
                f"{volume} bootc-build JSON",
                [*bootc, "--log-format", "json"],
                in_stderr,
            ),
            Variant(
                f"{volume} bootc-build console",
                [*bootc, "--log-format", "console"],
                in_stderr,
            ),
            Variant(
                f"{volume} podman build",
                bench.podman_argv("build", "--no-cache", context),
                in_stdout,
            ),
            Variant(
                f"{volume} podman --remote build",
                bench.remote_argv("build", "--no-cache", context),
                in_stdout,
            ),
            Variant(
                f"{volume} curl, the endpoint alone",
                endpoint_argv(bench, Path(context), no_cache=True),
                in_stdout,
            ),
        ]
        print(f"  {volume}: {lines:,} lines", flush=True)
        # A warm-up adds little to the long 10x runs.
        named = report.add(bench, compare(bench, variants, runs, warmup=volume == "1x"))
        by_volume[volume] = named
        as_json = named[f"{volume} bootc-build JSON"]
        console = named[f"{volume} bootc-build console"]
        local, remote = (
            named[f"{volume} podman build"],
            named[f"{volume} podman --remote build"],
        )
        endpoint = named[f"{volume} curl, the endpoint alone"]
        report.figures += [
            info_ratio(
                f"{volume} curl, the endpoint alone / podman build", endpoint, local
            ),
            ratio_figure(
                f"{volume} console / podman build", console, local, 1.10, strict=False
            ),
            ratio_figure(
                f"{volume} JSON / podman build", as_json, local, 1.20, strict=False
            ),
            ratio_figure(
                f"{volume} console / podman --remote build",
                console,
                remote,
                1.0,
                strict=True,
            ),
            ratio_figure(
                f"{volume} JSON / podman --remote build",
                as_json,
                remote,
                1.0,
                strict=True,
            ),
            rss_figure(f"{volume} console peak RSS", console),
            rss_figure(f"{volume} JSON peak RSS", as_json),
        ]
        for name, item in (("console", console), ("JSON", as_json)):
            extra_us = (item.wall_s - local.wall_s) / lines * 1e6
            cpu_us = item.cpu_s / lines * 1e6
            report.figures.append(
                info_figure(
                    f"{volume} {name}: wall time per line beyond podman build",
                    f"{extra_us:.1f} µs (bootc-build CPU per line: {cpu_us:.1f} µs)",
                )
            )
    for name in ("console", "JSON"):
        report.figures.append(
            flat_rss_figure(
                f"{name} peak RSS flat from 1x to 10x",
                by_volume["1x"][f"1x bootc-build {name}"],
                by_volume["10x"][f"10x bootc-build {name}"],
            )
        )


def bench_context(bench: Bench, plan: RunPlan, report: Report) -> None:
    folder = bench.work / "context"
    folder.mkdir()
    start = time.monotonic()
    kept_files, kept_bytes = make_context_tree(
        folder,
        CONTEXT_FILES,
        CONTEXT_BYTES,
        sparse=False,
        containerfile=f"FROM {BOOTC_BASE_IMAGE}\nCOPY . /ctx/\n",
    )
    report.notes.append(
        f"The context has {CONTEXT_FILES:,} files of random content, "
        f"{human_bytes(CONTEXT_BYTES)} in all, about 200 a directory. Its "
        ".containerignore (`cache/` and `**/*.tmp`) excludes half, so "
        f"{kept_files:,} files and {human_bytes(kept_bytes)} are sent (made in "
        f"{time.monotonic() - start:.0f} s, not measured). The Containerfile is "
        "`FROM <busybox base>` and `COPY . /ctx/`. A first local build fills the "
        "layer cache and every run checks that it hit it, so each run sends (or, "
        "for podman build, reads) the context, and Podman copies it to check the "
        "cached COPY."
    )

    context = str(folder)
    image_id = bench.podman("build", "--quiet", context).split()[-1]
    cached = SameImage(image_id.removeprefix("sha256:"))
    bootc = bench.bootc_argv("build", "--url", bench.url, "--log-format", "json")
    variants = [
        Variant("bootc-build", [*bootc, context], SameImage()),
        Variant("podman build", bench.podman_argv("build", context), cached),
        # One podman --remote run takes about half a minute on a 2-core machine.
        Variant(
            "podman --remote build",
            bench.remote_argv("build", context),
            cached,
            max_runs=plan.slow_reference_runs,
        ),
        Variant(
            "curl, the endpoint alone",
            endpoint_argv(bench, folder, no_cache=False),
            expect_text(image_id.removeprefix("sha256:"), in_stderr=False),
            max_runs=plan.slow_reference_runs,
        ),
    ]
    # The first local build has filled the page cache.
    named = report.add(bench, compare(bench, variants, plan.context_runs, warmup=False))

    ours = named["bootc-build"]
    report.figures += [
        ratio_figure(
            "bootc-build / podman --remote build",
            ours,
            named["podman --remote build"],
            1.0,
            strict=False,
        ),
        ratio_figure(
            "bootc-build / podman build", ours, named["podman build"], 1.3, strict=False
        ),
        info_ratio(
            "curl, the endpoint alone / podman build",
            named["curl, the endpoint alone"],
            named["podman build"],
        ),
        rss_figure("bootc-build peak RSS", ours),
    ]
    shutil.rmtree(folder)


def sink_check(expected_files: int) -> Check:
    """Require the stand-in to have received every byte that bootc-build sent."""

    def check(stdout: Path, stderr: Path) -> None:
        del stdout
        finished = last_json_event(stderr, "build.finished")
        sent = int(finished["context_bytes"])
        if f"received {sent} bytes of context" not in tail_text(stderr, 64 * KIB):
            raise BenchError(f"the stand-in did not receive all {sent} bytes")
        if int(finished["context_files"]) != expected_files:
            raise BenchError(
                f"bootc-build sent {finished['context_files']} files, "
                f"expected {expected_files}"
            )

    return check


@dataclass(frozen=True)
class PackingInput:
    label: str
    folder: Path
    files: int
    runs: int


def make_packing_inputs(
    bench: Bench, plan: RunPlan, report: Report
) -> list[PackingInput]:
    """Make the four contexts of the packing scenario and describe them."""
    scratch_copy = "FROM scratch\nCOPY {source} /\n"
    inputs: list[PackingInput] = []
    for scale in (1, 10):
        folder = bench.work / f"packing-{scale}x"
        folder.mkdir()
        kept, kept_bytes = make_context_tree(
            folder,
            CONTEXT_FILES * scale,
            CONTEXT_BYTES * scale,
            sparse=True,
            containerfile=scratch_copy.format(source="src/d0000/f000002.dat"),
        )
        label = (
            f"{scale}x context, {CONTEXT_FILES * scale:,} files, "
            f"{human_bytes(CONTEXT_BYTES * scale)}, half ignored"
        )
        # The Containerfile and the ignore file are sent with the kept files.
        runs = plan.runs if scale == 1 else plan.volume_runs
        inputs.append(PackingInput(label, folder, kept + 2, runs))
        report.notes.append(
            f"{label}: {kept + 2:,} files and {human_bytes(kept_bytes)} sent."
        )

    folder = bench.work / "packing-small-files"
    folder.mkdir()
    total = make_small_files(
        folder, SMALL_FILES, SMALL_FILE_MEAN_BYTES, scratch_copy.format(source="x")
    )
    label = f"{SMALL_FILES:,} small files"
    inputs.append(PackingInput(label, folder, SMALL_FILES + 1, plan.runs))
    report.notes.append(
        f"{label}: random content, {human_bytes(total)} in all, 200 a directory."
    )

    folder = bench.work / "packing-sparse-file"
    folder.mkdir()
    make_sparse(folder / "disk.img", SPARSE_FILE_BYTES)
    (folder / "hello.txt").write_text("hello\n")
    (folder / "Containerfile").write_text(scratch_copy.format(source="hello.txt"))
    label = f"one {human_bytes(SPARSE_FILE_BYTES)} sparse file"
    inputs.append(PackingInput(label, folder, 3, plan.runs))
    report.notes.append(f"{label}: with a small file and the Containerfile.")
    return inputs


def bench_packing(bench: Bench, plan: RunPlan, report: Report) -> None:
    start = time.monotonic()
    inputs = make_packing_inputs(bench, plan, report)
    report.notes.append(
        f"The contexts were made in {time.monotonic() - start:.0f} s (not "
        "measured). The 1x and 10x trees have the layout of the `context` "
        "scenario, but their files are sparse (holes read as zeros), so that "
        "10 GiB take seconds to make. bootc-build sends each context to a "
        "stand-in for the build endpoint in this harness, on a Unix socket: it "
        "reads and discards the archive and returns a two-step build stream. So "
        "these runs measure bootc-build's walk, packing and upload alone, without "
        "the Podman service unpacking the archive. Each run checks that the "
        "stand-in received every byte that bootc-build sent, and the file count. "
        "A warm-up run first puts the holes in the page cache: a first read of "
        "the 10x tree takes about three times as long as later ones."
    )
    named: dict[str, Series] = {}
    with sink_service(bench) as url:
        for item in inputs:
            argv = bench.bootc_argv(
                "build", "--url", url, "--log-format", "json", str(item.folder)
            )
            variant = Variant(item.label, argv, sink_check(item.files))
            print(f"  {item.label}", flush=True)
            named |= report.add(bench, compare(bench, [variant], item.runs))
    small_tree, large_tree = named[inputs[0].label], named[inputs[1].label]
    report.figures += [
        rss_figure("1x context peak RSS", small_tree),
        rss_figure("10x context peak RSS", large_tree),
        flat_rss_figure("peak RSS flat from 1x to 10x context", small_tree, large_tree),
        info_ratio("10x / 1x context wall time", large_tree, small_tree),
    ]
    for item in inputs[2:]:
        series = named[item.label]
        report.figures += [
            rss_figure(
                f"{item.label}: peak RSS, large-context target",
                series,
                LARGE_CONTEXT_RSS_LIMIT_MIB,
            ),
            rss_figure(f"{item.label}: peak RSS", series),
        ]
    for item in inputs:
        shutil.rmtree(item.folder)


def push_variant(
    bench: Bench, label: str, make_argv: Callable[[str], list[str]]
) -> Variant:
    """Return a variant that pushes to a registry that is empty for each run."""

    @contextlib.contextmanager
    def prepare() -> Iterator[list[str]]:
        with loopback_registry(bench) as host:
            yield make_argv(f"{host}/{PUSH_REPOSITORY}:latest")
            status = loopback_get(
                f"http://{host}/v2/{PUSH_REPOSITORY}/manifests/latest",
                {"Accept": MANIFEST_MEDIA_TYPES},
            )
            if status != 200:
                raise BenchError(f"the registry returned {status} for the pushed tag")

    displayed_argv = make_argv(f"{LOOPBACK}:PORT/{PUSH_REPOSITORY}:latest")
    return Variant(label, displayed_argv, warmup=False, prepare=prepare)


def build_push_image(bench: Bench) -> int:
    """Build PUSH_IMAGE with layers of random content; return its size in bytes."""
    folder = bench.work / "push"
    folder.mkdir()
    rng = random.Random(PUSH_LAYER_BYTES)
    pool = os.urandom(16 * MIB)
    lines = [f"FROM {BOOTC_BASE_IMAGE}"]
    for index in range(PUSH_LAYERS):
        write_file(folder / f"layer{index}.bin", PUSH_LAYER_BYTES, pool, rng)
        lines.append(f"COPY layer{index}.bin /data/")
    (folder / "Containerfile").write_text("\n".join(lines) + "\n")
    bench.podman("build", "--quiet", "--tag", PUSH_IMAGE, str(folder))
    shutil.rmtree(folder)
    return int(json.loads(bench.podman("image", "inspect", PUSH_IMAGE))[0]["Size"])


def bench_push(bench: Bench, plan: RunPlan, report: Report) -> None:
    size = build_push_image(bench)
    report.notes.append(
        f"The image has {PUSH_LAYERS} layers of {human_bytes(PUSH_LAYER_BYTES)} of "
        f"random content on the busybox base, {human_bytes(size)} in all. Each run "
        "pushes it to a docker-registry on 127.0.0.1 with empty storage, started "
        "before the run and stopped after it, and checks that the registry serves "
        "the tag. Podman compresses the layers on every push."
    )
    bootc = bench.bootc_argv(
        "push", "--no-tls-verify", "--url", bench.url, "--log-format", "json"
    )
    variants = [
        push_variant(bench, "bootc-build push", lambda to: [*bootc, PUSH_IMAGE, to]),
        push_variant(
            bench,
            "podman push",
            lambda to: bench.podman_argv("push", "--tls-verify=false", PUSH_IMAGE, to),
        ),
        push_variant(
            bench,
            "podman --remote push",
            lambda to: bench.remote_argv("push", "--tls-verify=false", PUSH_IMAGE, to),
        ),
    ]
    named = report.add(bench, compare(bench, variants, plan.runs, warmup=False))
    ours = named["bootc-build push"]
    report.figures += [
        ratio_figure(
            "bootc-build push / podman push",
            ours,
            named["podman push"],
            1.05,
            strict=False,
        ),
        info_ratio(
            "bootc-build push / podman --remote push",
            ours,
            named["podman --remote push"],
        ),
        rss_figure("bootc-build push peak RSS", ours),
    ]


def bench_startup(bench: Bench, plan: RunPlan, report: Report) -> None:
    variants = [
        Variant("bootc-build --version", bench.bootc_argv("--version")),
        Variant("bootc-build --help", bench.bootc_argv("--help")),
        Variant("podman --version", ["podman", "--version"]),
    ]
    named = report.add(bench, compare(bench, variants, plan.startup_runs))
    for label, limit_ms in (
        ("bootc-build --version", 100),
        ("bootc-build --help", 250),
    ):
        item = named[label]
        wall_ms = item.wall_s * 1000
        report.figures += [
            Figure(
                f"{label} wall time",
                f"{wall_ms:.0f} ms",
                f"< {limit_ms} ms",
                wall_ms < limit_ms,
            ),
            rss_figure(f"{label} peak RSS", item),
        ]
    podman_ms = named["podman --version"].wall_s * 1000
    report.figures.append(
        info_figure("podman --version wall time", f"{podman_ms:.0f} ms")
    )


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    run: Callable[[Bench, RunPlan, Report], None]


SCENARIOS = (
    Scenario(
        "cached-rebuild",
        "Fully cached rebuild of the two-stage example",
        bench_cached_rebuild,
    ),
    Scenario("log-volume", "Build output of 200,000 lines, and 10x", bench_log_volume),
    Scenario(
        "context", "Context of 20,000 files and 1 GiB, half ignored", bench_context
    ),
    Scenario(
        "packing",
        "Packing large contexts: 10x the files, 100,000 small files, a sparse file",
        bench_packing,
    ),
    Scenario("push", "Push of a 300 MB image to a loopback registry", bench_push),
    Scenario("startup", "Start-up: --version and --help", bench_startup),
)


# Machine, versions and the report


def command_output(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=30
        )
    except OSError as error:
        return f"unavailable ({error.strerror})"
    return (result.stdout or result.stderr).strip()


def machine_facts() -> list[tuple[str, str]]:
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = human_bytes(int(line.split()[1]) * KIB)
                break
    commit = command_output(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    changed = command_output(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "bootc_builder"]
    )
    if changed:
        commit += " plus uncommitted changes in bootc_builder/"
    python = command_output(
        [str(REPO / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.version)"]
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        ("CPU", f"{cpu_model}, {os.cpu_count()} cores (nproc)"),
        ("load average at the start (1, 5, 15 min)", load),
        ("memory", memory),
        ("kernel", os.uname().release),
        ("podman", command_output(["podman", "--version"])),
        ("python (.venv)", python.splitlines()[0] if python else "unknown"),
        (
            "bootc-build",
            f"{command_output([str(BOOTC_BUILD), '--version'])}, git {commit}",
        ),
        ("docker-registry", command_output(["docker-registry", "--version"])),
    ]


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "info"}[passed]


def render_markdown(
    reports: Sequence[Report],
    facts: Sequence[tuple[str, str]],
    *,
    mode: str,
    total_s: float,
    finished: datetime,
) -> str:
    duration = f"{total_s / 60:.1f} minutes" if total_s >= 120 else f"{total_s:.0f} s"
    out: list[str] = [
        "# Benchmark results",
        "",
        f"Written by `benchmarks/run.py` ({mode}) on "
        f"{finished:%Y-%m-%d %H:%M} UTC. The whole run, with set-up and clean-up, "
        f"took {duration}. benchmarks/README.md explains how to run it and what "
        "each figure means.",
        "",
        "Wall and CPU times are medians over the runs and peak RSS is the maximum. "
        "CPU time and RSS come from os.wait4 on the measured command, so CPU time "
        "covers that process and the children it waited for. For bootc-build and "
        "`podman --remote` both leave out the work of the Podman service.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts),
        "",
        "## Summary",
        "",
        "| scenario | figure | value | target | result |",
        "|---|---|---|---|---|",
    ]
    for report in reports:
        if report.error is not None:
            first_line = report.error.splitlines()[0]
            out.append(f"| {report.key} | not measured | {first_line} | | ERROR |")
        for figure in report.figures:
            out.append(
                f"| {report.key} | {figure.name} | {figure.value} | {figure.target} "
                f"| {verdict(figure.passed)} |"
            )
    for number, report in enumerate(reports, start=1):
        out += ["", f"## {number}. {report.title} (`{report.key}`)", ""]
        out.append(f"Took {report.elapsed_s:.0f} s with set-up.")
        if report.notes:
            out += ["", *(f"- {note}" for note in report.notes)]
        if report.error is not None:
            out += ["", "This scenario failed:", "", "```", report.error, "```"]
        if report.series:
            out += [
                "",
                "| command | runs | wall (s) | CPU (s) | peak RSS (MiB) |",
                "|---|---|---|---|---|",
            ]
            for item in report.series:
                if not item.samples:
                    continue
                out.append(
                    f"| {item.variant.label} | {len(item.samples)} | "
                    f"{item.wall_s:.3f} | {item.cpu_s:.3f} | {item.rss_mib:.1f} |"
                )
            out += [
                "",
                "Commands (`$BENCH_TMP` is the temporary directory):",
                "",
                "```sh",
            ]
            out += report.commands
            out.append("```")
    return "\n".join(out) + "\n"


def print_summary(reports: Sequence[Report]) -> None:
    print("\nSummary:")
    for report in reports:
        if report.error is not None:
            print(f"  {report.key}: ERROR {report.error.splitlines()[0]}")
        for figure in report.figures:
            print(
                f"  {report.key}: {figure.name}: {figure.value} "
                f"(target {figure.target}) {verdict(figure.passed)}"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare bootc-build with podman build, podman --remote build "
        "and podman push on private storage."
    )
    parser.add_argument(
        "--quick", action="store_true", help="Fewer runs each, for development."
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[scenario.key for scenario in SCENARIOS],
        metavar="NAME",
        help="Run only this scenario; repeatable. Names: "
        + ", ".join(scenario.key for scenario in SCENARIOS),
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="Write the Markdown report here [default: benchmarks/RESULTS.md for a "
        "full run of every scenario, else no file].",
    )
    return parser.parse_args(argv)


def check_prerequisites() -> None:
    missing = [tool for tool in ("podman", "docker-registry") if not shutil.which(tool)]
    if missing:
        raise BenchError(f"{', '.join(missing)} not found; run `make deps` first")
    if not BOOTC_BUILD.exists():
        raise BenchError(f"{BOOTC_BUILD} not found; run `make install` first")
    if os.geteuid() != 0:
        raise BenchError("the benchmarks need root, as Podman's rootful storage does")


def _raise_interrupt(signal_number: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    selected = [s for s in SCENARIOS if args.only is None or s.key in args.only]
    output = args.output
    if output is None and not args.quick and args.only is None:
        output = DEFAULT_OUTPUT
    check_prerequisites()

    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    facts = machine_facts()
    bench = Bench()
    reports: list[Report] = []
    try:
        print(f"private storage and service in {bench.tmp}", flush=True)
        bench.prime_bytecode()
        bench.start_service()
        bench.copy_image(BOOTC_BASE_IMAGE)
        for scenario in selected:
            report = Report(scenario.key, scenario.title)
            reports.append(report)
            print(f"== {scenario.key}: {scenario.title}", flush=True)
            scenario_start = time.monotonic()
            try:
                scenario.run(bench, plan, report)
            except BenchError as error:
                report.error = str(error)
                print(f"  failed: {error}", flush=True)
            report.elapsed_s = time.monotonic() - scenario_start
    finally:
        print("removing the private storage and temporary files", flush=True)
        bench.cleanup()

    total_s = time.monotonic() - started
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    facts.append(("load average at the end (1, 5, 15 min)", load))
    print_summary(reports)
    print(f"\ntotal {total_s:.0f} s")
    if output is not None:
        mode = "quick mode" if args.quick else "full mode"
        if args.only:
            mode += ", only " + ", ".join(args.only)
        text = render_markdown(
            reports,
            facts,
            mode=mode,
            total_s=total_s,
            finished=datetime.now(UTC),
        )
        # The reasons behind missed targets are written by hand, with the
        # profiles that show them, and kept beside the harness.
        if ANALYSIS.exists():
            text = text.rstrip("\n") + "\n\n" + ANALYSIS.read_text()
        output.write_text(text)
        print(f"wrote {output}")
    return 1 if any(report.error for report in reports) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
