"""Fixtures shared by the whole suite.

Integration tests run against a real Podman service that these fixtures start
on a private socket, with storage of its own in a temporary folder, so that
nothing the tests build lands in the machine's shared Podman storage and the
teardown can remove everything at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The registry and fault proxy fixtures live in their own module.
pytest_plugins = ["tests.registry"]

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "contrib" / "containers.conf"
BUSYBOX_IMAGE = "localhost/bootc-build-test/busybox:latest"

# Variables that would point the tool or Podman somewhere other than the
# fixtures' own service, or change how output is rendered.
_STRIPPED_ENV = (
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "NO_COLOR",
    "FORCE_COLOR",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the record of reusable images out of the user's cache folder."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _STRIPPED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("BOOTC_BUILD_"):
            monkeypatch.delenv(name, raising=False)


@dataclass
class PodmanService:
    """A `podman system service` with private storage, and a CLI that shares it."""

    root: Path
    runroot: Path
    socket: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def podman_argv(self, *args: str) -> list[str]:
        storage = ["--root", str(self.root), "--runroot", str(self.runroot)]
        return ["podman", *storage, *args]

    def podman(
        self, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the podman CLI on the service's storage."""
        return subprocess.run(
            self.podman_argv(*args),
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )

    def image_ids(self) -> set[str]:
        out = self.podman("images", "--all", "--quiet", "--no-trunc").stdout
        return {image_id.removeprefix("sha256:") for image_id in out.split()}

    def wipe(self) -> None:
        """Remove every container and image of the private storage, then the folders.

        `podman system reset` would also remove the machine's networks, which
        other users of the machine share, so the storage is emptied by hand.
        """
        self.podman("rm", "--all", "--force", check=False)
        for container in self.container_ids():
            self.podman("rm", "--force", container, check=False)
        self.podman("rmi", "--all", "--force", check=False)
        for folder in (self.root, self.runroot):
            _unmount_below(folder)
            shutil.rmtree(folder, ignore_errors=True)

    def container_ids(self) -> set[str]:
        out = self.podman("ps", "--all", "--external", "--quiet").stdout
        return set(out.split())


def _unmount_below(folder: Path) -> None:
    """Unmount whatever storage left mounted below ``folder``, deepest first."""
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [
            line.split()[1] for line in mounts if line.split()[1].startswith(prefix)
        ]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def service_env(base: Path) -> dict[str, str]:
    """Return the environment for a private Podman service and CLI under ``base``.

    TMPDIR points into ``base``. Podman 4.3 otherwise works under /var/tmp,
    where each run of the interrupt tests left an empty ``buildah*`` folder.
    """
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    for name in _STRIPPED_ENV:
        env.pop(name, None)
    scratch = base / "tmp"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    return env


def wait_for_socket(service: PodmanService, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.process is not None
        if service.process.poll() is not None:
            raise RuntimeError(
                f"podman system service exited with {service.process.returncode}"
            )
        if service.socket.exists():
            probe = subprocess.run(
                ["podman", "--remote", "--url", service.url, "version"],
                capture_output=True,
                env=service.env,
                check=False,
            )
            if probe.returncode == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"podman system service did not answer on {service.socket}")


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    """Start a Podman service with private storage; stop it and wipe the storage."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed; run `make deps` or .ci/run first")

    base = tmp_path_factory.mktemp("podman")
    env = service_env(base)
    service = PodmanService(
        root=base / "root", runroot=base / "run", socket=base / "podman.sock", env=env
    )
    log = (base / "service.log").open("wb")
    service.process = subprocess.Popen(
        service.podman_argv("system", "service", "--time=0", service.url),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_socket(service, timeout=30)
        yield service
    finally:
        service.process.terminate()
        try:
            service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
        log.close()
        service.wipe()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_image(
    podman_service: PodmanService, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A 2 MB image with a shell, made from Debian's static busybox without network."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed; run `make deps` or .ci/run first")
    context = tmp_path_factory.mktemp("busybox")
    shutil.copy(busybox, context / "busybox")
    (context / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    podman_service.podman("build", "--tag", BUSYBOX_IMAGE, str(context))
    return BUSYBOX_IMAGE


@pytest.fixture
def new_images(podman_service: PodmanService) -> Iterator[set[str]]:
    """Collect the images a test makes and remove them afterwards."""
    before = podman_service.image_ids()
    created: set[str] = set()
    yield created
    created |= podman_service.image_ids() - before
    if created:
        podman_service.podman("rmi", "--force", *created, check=False)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n"
            f"--- stderr\n{self.stderr}"
        )


def run_cli(
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> CliResult:
    """Run bootc-build in a child process, as a user would.

    The child gets a temporary folder of its own as TMPDIR, removed afterwards,
    so the output log a failed build keeps is not left behind.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    child_env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    if url is not None:
        child_env["CONTAINER_HOST"] = url
    child_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="bootc-build-test-") as scratch:
        child_env.setdefault("TMPDIR", scratch)
        done = subprocess.run(
            [sys.executable, "-m", "bootc_builder", *args],
            capture_output=True,
            text=True,
            env=child_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    return CliResult(done.returncode, done.stdout, done.stderr)
