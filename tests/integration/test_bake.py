"""`bootc-build bake` on two real Podman services with a registry between them.

Each service has its own storage, as two machines would, so an image built on
one reaches the other only through the registry. One test reaches a service
through ssh:// and a private sshd on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootc_builder.containerfile import default_platform_args
from tests.conftest import (
    BUSYBOX_IMAGE,
    CONTAINERS_CONF,
    PodmanService,
    run_cli,
    service_env,
    wait_for_socket,
)
from tests.registry import Registry

pytestmark = pytest.mark.integration

SSHD = Path("/usr/sbin/sshd")
SSHD_PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")
NATIVE_PLATFORM = default_platform_args()["TARGETPLATFORM"]


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _start_service(base: Path) -> PodmanService:
    env = service_env(base)
    service = PodmanService(
        root=base / "root", runroot=base / "run", socket=base / "podman.sock", env=env
    )
    with (base / "service.log").open("wb") as log:
        service.process = subprocess.Popen(
            service.podman_argv("system", "service", "--time=0", service.url),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for_socket(service, timeout=30)
    return service


def _stop_service(service: PodmanService) -> None:
    assert service.process is not None
    service.process.terminate()
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
    # The storage is private to this service, so reset removes only its images.
    service.wipe()


def _build_busybox(service: PodmanService, context: Path) -> None:
    service.podman("build", "--quiet", "--tag", BUSYBOX_IMAGE, str(context))


@pytest.fixture(scope="module")
def services() -> Iterator[list[PodmanService]]:
    """Two Podman services with separate storage, each with the busybox image."""
    if shutil.which("podman") is None or shutil.which("busybox") is None:
        pytest.fail("podman and busybox are needed; run `make deps` first")
    # Podman 4.3 rejects a runroot path longer than 50 characters, which a
    # folder under pytest's temporary root can exceed.
    base = Path(tempfile.mkdtemp(prefix="bake-"))
    context = base / "busybox"
    context.mkdir()
    shutil.copy(str(shutil.which("busybox")), context / "busybox")
    (context / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    started: list[PodmanService] = []
    try:
        for name in ("a", "b"):
            folder = base / name
            folder.mkdir()
            started.append(_start_service(folder))
            _build_busybox(started[-1], context)
        yield started
    finally:
        for service in started:
            _stop_service(service)
        shutil.rmtree(base, ignore_errors=True)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _image_exists(service: PodmanService, reference: str) -> bool:
    return service.podman("image", "exists", reference, check=False).returncode == 0


def _remove_images(service: PodmanService, *references: str) -> None:
    service.podman("rmi", "--force", "--ignore", *references, check=False)


def test_dependent_built_on_other_host_from_pushed_base(
    services: list[PodmanService], plain_registry: Registry, tmp_path: Path
) -> None:
    first, second = services
    registry = plain_registry.host
    _write(
        tmp_path / "base" / "Containerfile",
        f"ARG ROOT={BUSYBOX_IMAGE}\nFROM ${{ROOT}}\nRUN echo from-base > /marker\n",
    )
    _write(
        tmp_path / "app" / "Containerfile",
        "ARG BASE_IMAGE=localhost/bake-test/base:latest\n"
        "FROM ${BASE_IMAGE}\n"
        "RUN cp /marker /app-saw\n",
    )
    _write(
        tmp_path / "other" / "Containerfile",
        f"FROM {BUSYBOX_IMAGE}\nRUN echo other > /other\n",
    )
    # The app must build on the second host, the only one that lists the
    # platform it requests, while its base builds on the first.
    plan = _write(
        tmp_path / "bootc-build.toml",
        f"""
[[hosts]]
name = "first"
url = "{first.url}"
jobs = 1

[[hosts]]
name = "second"
url = "{second.url}"
jobs = 1
platforms = ["{NATIVE_PLATFORM}"]

[groups.default]
images = ["app", "other"]

[images.base]
context = "base"
tags = ["localhost/bake-test/base:latest"]
push = ["{registry}/bake-test/base:latest"]

[images.app]
context = "app"
platform = "{NATIVE_PLATFORM}"
tags = ["localhost/bake-test/app:latest"]
push = ["{registry}/bake-test/app:{{version}}"]

[images.other]
context = "other"
tags = ["localhost/bake-test/other:latest"]
push = []
""",
    )
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "2.5"\n')

    started = time.monotonic()
    result = run_cli(
        "bake",
        "--config",
        str(plan),
        "--push",
        "--no-tls-verify",
        "--retry-delay",
        "100ms",
        "--json",
        "--log-format",
        "json",
    )
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.describe()
    summary = {entry["name"]: entry for entry in json.loads(result.stdout)["images"]}
    assert list(summary) == ["base", "app", "other"]
    assert {name: entry["host"] for name, entry in summary.items()} == {
        "base": "first",
        "app": "second",
        "other": "second",
    }
    assert all(entry["result"] == "built" for entry in summary.values())
    base_digest = plain_registry.manifest_digest("bake-test/base", "latest")
    assert summary["base"]["pushed"] == [
        {"ref": f"{registry}/bake-test/base:latest", "digest": base_digest}
    ]
    app_digest = plain_registry.manifest_digest("bake-test/app", "2.5")
    assert summary["app"]["pushed"] == [
        {"ref": f"{registry}/bake-test/app:2.5", "digest": app_digest}
    ]
    assert summary["other"]["pushed"] == []
    assert elapsed < 60

    events = _events(result.stderr)
    moved = [e for e in events if e["event"] == "image.base_from_registry"]
    pinned = f"{registry}/bake-test/base@{base_digest}"
    assert [(e["image"], e["host"], e["ref"]) for e in moved] == [
        ("app", "second", pinned)
    ]
    pulls = [e for e in events if e["event"] == "image.pulled"]
    assert [(e["image"], e["host"], e["ref"]) for e in pulls] == [
        ("app", "second", pinned)
    ]
    outputs = [e for e in events if e["event"] == "step.output"]
    assert outputs
    for event in outputs:
        assert event["image"] in summary
        assert event["host"] in ("first", "second")
        assert "stage" in event

    # The base reached the second host through the registry only.
    assert _image_exists(first, "localhost/bake-test/base:latest")
    assert not _image_exists(second, "localhost/bake-test/base:latest")
    assert _image_exists(second, pinned)
    saw = second.podman(
        "run", "--rm", "localhost/bake-test/app:latest", "cat", "/app-saw"
    )
    assert saw.stdout.strip() == "from-base"

    _remove_images(first, "localhost/bake-test/base:latest")
    _remove_images(
        second, "localhost/bake-test/app:latest", "localhost/bake-test/other:latest"
    )


def test_failed_image_skips_dependents_only(
    services: list[PodmanService], tmp_path: Path
) -> None:
    first = services[0]
    _write(
        tmp_path / "broken" / "Containerfile",
        f"FROM {BUSYBOX_IMAGE}\nRUN echo about to fail && exit 7\n",
    )
    _write(
        tmp_path / "child" / "Containerfile",
        "ARG BASE_IMAGE=localhost/bake-fail/broken:latest\nFROM ${BASE_IMAGE}\n",
    )
    _write(
        tmp_path / "fine" / "Containerfile",
        f"FROM {BUSYBOX_IMAGE}\nRUN echo fine > /fine\n",
    )
    plan = _write(
        tmp_path / "bootc-build.toml",
        f"""
[[hosts]]
url = "{first.url}"

[groups.default]
images = ["broken", "child", "fine"]

[images.broken]
context = "broken"
tags = ["localhost/bake-fail/broken:latest"]

[images.child]
context = "child"
tags = ["localhost/bake-fail/child:latest"]

[images.fine]
context = "fine"
tags = ["localhost/bake-fail/fine:latest"]
""",
    )

    result = run_cli("bake", "--config", str(plan), "--json", "--log-format", "json")

    assert result.exit_code == 1, result.describe()
    summary = {entry["name"]: entry for entry in json.loads(result.stdout)["images"]}
    assert summary["broken"]["result"] == "failed"
    assert "exit status 7" in summary["broken"]["error"]
    assert summary["child"]["result"] == "skipped"
    assert summary["child"]["host"] is None
    assert summary["fine"]["result"] == "built"
    events = _events(result.stderr)
    failed = [e for e in events if e["event"] == "image.failed"]
    assert [(e["image"], e["exit_status"]) for e in failed] == [("broken", 7)]
    final = [e for e in events if e["event"] == "command.failed"]
    assert len(final) == 1
    assert "2 of 3 images were not built" in final[0]["message"]
    _remove_images(first, "localhost/bake-fail/fine:latest")


EXAMPLE_PLAN = Path(__file__).resolve().parents[2] / "Containerfiles" / "plan"


def test_example_plan_builds_offline(services: list[PodmanService]) -> None:
    first = services[0]

    result = run_cli(
        "bake",
        "--config",
        str(EXAMPLE_PLAN / "bootc-build.toml"),
        "--log-format",
        "json",
        url=first.url,
        env={"BOOTC_BASE": BUSYBOX_IMAGE},
    )

    assert result.exit_code == 0, result.describe()
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(row[0], row[2]) for row in rows] == [
        ("base", "built"),
        ("desktop", "built"),
        ("server", "built"),
        ("debug", "built"),
    ]
    debug = first.podman(
        "run",
        "--rm",
        "localhost/bootc-build-plan/server:debug",
        "cat",
        "/usr/share/bootc-build-plan/base",
        "/usr/share/bootc-build-plan/flavour",
        "/usr/share/bootc-build-plan/debug",
    )
    assert debug.stdout.split() == ["base", "server", "debug"]
    _remove_images(
        first,
        *(
            f"localhost/bootc-build-plan/{name}"
            for name in ("base:latest", "base:1.0", "desktop:latest")
        ),
        "localhost/bootc-build-plan/server:latest",
        "localhost/bootc-build-plan/server:debug",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port}")


def _ssh_keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture
def ssh_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Run a private sshd on loopback; return the environment for a client of it.

    The server takes only the key made here. The client runs through an ssh
    wrapper on PATH that reads a config in the same folder, so nothing is read
    from or written to ~/.ssh.
    """
    if not SSHD.exists() or shutil.which("ssh") is None:
        pytest.skip("sshd is not installed (Debian package openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("sshd for the ssh:// test needs root")
    folder = tmp_path_factory.mktemp("sshd")
    _ssh_keygen(folder / "host_key")
    _ssh_keygen(folder / "client_key")
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {folder}/host_key\n"
        f"PidFile {folder}/sshd.pid\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        # The keys live under /tmp, which every user may write to.
        "StrictModes no\n"
        "AllowStreamLocalForwarding yes\n"
    )
    (folder / "ssh_config").write_text(
        "Host *\n"
        f"  IdentityFile {folder}/client_key\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {folder}/known_hosts\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  BatchMode yes\n"
        "  LogLevel ERROR\n"
    )
    wrapper_dir = folder / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "ssh"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shutil.which("ssh")} -F {folder}/ssh_config "$@"\n'
    )
    wrapper.chmod(0o755)
    runtime_dir = folder / "runtime"
    runtime_dir.mkdir(mode=0o700)

    made_privilege_dir = not SSHD_PRIVILEGE_SEPARATION_DIR.exists()
    if made_privilege_dir:
        SSHD_PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755)
    log_path = folder / "sshd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(folder / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process, log_path)
        yield {
            "PATH": f"{wrapper_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # podman-py puts the forwarded socket in XDG_RUNTIME_DIR/podman.
            "XDG_RUNTIME_DIR": str(runtime_dir),
            "SSH_AUTH_SOCK": "",
            "port": str(port),
            "folder": str(folder),
        }
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if made_privilege_dir:
            shutil.rmtree(SSHD_PRIVILEGE_SEPARATION_DIR, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_host_reached_over_ssh_by_connection_name(
    services: list[PodmanService], ssh_client: dict[str, str], tmp_path: Path
) -> None:
    second = services[1]
    url = f"ssh://root@127.0.0.1:{ssh_client['port']}{second.socket}"
    # A connection as `podman system connection add` records it, in a private
    # containers.conf so that the machine's list stays untouched.
    containers_conf = tmp_path / "containers.conf"
    containers_conf.write_text(
        CONTAINERS_CONF.read_text()
        + "\n[engine.service_destinations.bake-ssh]\n"
        + f'uri = "{url}"\n'
        + f'identity = "{ssh_client["folder"]}/client_key"\n'
    )
    _write(
        tmp_path / "one" / "Containerfile",
        f"FROM {BUSYBOX_IMAGE}\nRUN echo over-ssh > /ssh\n",
    )
    plan = _write(
        tmp_path / "bootc-build.toml",
        """
[[hosts]]
url = "bake-ssh"
jobs = 1

[images.default]
context = "one"
tags = ["localhost/bake-ssh/one:latest"]
""",
    )
    env = {
        "CONTAINERS_CONF": str(containers_conf),
        "PATH": ssh_client["PATH"],
        "XDG_RUNTIME_DIR": ssh_client["XDG_RUNTIME_DIR"],
        "SSH_AUTH_SOCK": "",
    }

    result = run_cli(
        "bake", "--config", str(plan), "--json", "--log-format", "json", env=env
    )

    assert result.exit_code == 0, result.describe()
    (entry,) = json.loads(result.stdout)["images"]
    assert entry["result"] == "built"
    assert entry["host"] == "bake-ssh"
    assert entry["url"] == url
    assert _image_exists(second, "localhost/bake-ssh/one:latest")
    events = _events(result.stderr)
    ignored = [e for e in events if e["event"] == "host.identity_ignored"]
    assert len(ignored) == 1
    assert not list(Path(ssh_client["XDG_RUNTIME_DIR"], "podman").glob("*.sock"))
    _remove_images(second, "localhost/bake-ssh/one:latest")
