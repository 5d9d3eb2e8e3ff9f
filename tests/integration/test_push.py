"""`bootc-build push` and `build --push` against real registries and a fault proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONTAINERS_CONF, PodmanService, run_cli
from tests.registry import FaultProxy, Registry

pytestmark = pytest.mark.integration

FAST_RETRIES = ["--retry-delay", "100ms"]


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _push(
    url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `bootc-build push` with optional stdin, which run_cli does not feed."""
    env = {
        "CONTAINER_HOST": url,
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "bootc_builder", "push", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_push_reports_registry_digest(
    podman_service: PodmanService,
    busybox_image: str,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    destination = f"{plain_registry.host}/test/busybox:1"
    digestfile = tmp_path / "digest"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--json",
        "--digestfile",
        str(digestfile),
        "--log-format",
        "json",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    served = plain_registry.manifest_digest("test/busybox", "1")
    document = json.loads(result.stdout)
    assert document["schema"] == 1
    assert document["pushed"] == [{"ref": destination, "digest": served}]
    assert digestfile.read_text() == served
    pushed = [e for e in _events(result.stderr) if e["event"] == "image.pushed"]
    assert [e["digest"] for e in pushed] == [served]


def test_push_to_several_destinations(
    podman_service: PodmanService, busybox_image: str, plain_registry: Registry
) -> None:
    first = f"{plain_registry.host}/test/a:1"
    second = f"{plain_registry.host}/test/b:2"

    result = run_cli(
        "push", busybox_image, first, second, "--no-tls-verify", url=podman_service.url
    )

    assert result.exit_code == 0, result.describe()
    assert result.stdout.splitlines() == [
        f"{first}@{plain_registry.manifest_digest('test/a', '1')}",
        f"{second}@{plain_registry.manifest_digest('test/b', '2')}",
    ]


def test_push_with_credentials(
    podman_service: PodmanService, busybox_image: str, auth_registry: Registry
) -> None:
    destination = f"{auth_registry.host}/test/private:1"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--creds",
        f"{auth_registry.username}:{auth_registry.password}",
        "--log-format",
        "json",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    assert result.stdout.strip().endswith(
        auth_registry.manifest_digest("test/private", "1")
    )
    assert str(auth_registry.password) not in result.stdout + result.stderr


def test_password_from_stdin(
    podman_service: PodmanService, busybox_image: str, auth_registry: Registry
) -> None:
    destination = f"{auth_registry.host}/test/stdin:1"

    done = _push(
        podman_service.url,
        busybox_image,
        destination,
        "--no-tls-verify",
        "--creds",
        str(auth_registry.username),
        "--password-stdin",
        stdin=f"{auth_registry.password}\n",
    )

    assert done.returncode == 0, done.stderr
    assert auth_registry.tags("test/stdin") == ["1"]


def test_wrong_password_fails_once_and_stays_hidden(
    podman_service: PodmanService, busybox_image: str, auth_registry: Registry
) -> None:
    wrong = "wrong-Pa55word-7f3a"
    destination = f"{auth_registry.host}/test/private:1"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--json",
        "--creds",
        f"{auth_registry.username}:{wrong}",
        "--log-format",
        "json",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert wrong not in result.stdout
    assert wrong not in result.stderr
    failed = [e for e in _events(result.stderr) if e["event"] == "command.failed"]
    assert len(failed) == 1
    assert failed[0]["attempts"] == 1
    assert failed[0]["cause"] == "authentication required"
    assert "podman login" in failed[0]["message"]
    assert not [e for e in _events(result.stderr) if e["event"] == "push.retrying"]


def test_tls_registry_with_trusted_ca(
    podman_service: PodmanService, busybox_image: str, tls_registry: Registry
) -> None:
    destination = f"{tls_registry.host}/test/secure:1"

    result = run_cli("push", busybox_image, destination, url=podman_service.url)

    assert result.exit_code == 0, result.describe()
    assert result.stdout.strip() == (
        f"{destination}@{tls_registry.manifest_digest('test/secure', '1')}"
    )


def test_plain_registry_with_tls_verify_fails_with_hint(
    podman_service: PodmanService, busybox_image: str, plain_registry: Registry
) -> None:
    result = run_cli(
        "push",
        busybox_image,
        f"{plain_registry.host}/test/x:1",
        "--log-format",
        "console",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert "--no-tls-verify" in result.stderr
    assert "Traceback" not in result.stderr


def test_faults_within_budget_are_retried(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail_uploads(2)
    destination = f"{fault_proxy.host}/test/flaky:1"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--retry",
        "3",
        "--log-format",
        "json",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    assert fault_proxy.faults_injected == 2
    retries = [e for e in _events(result.stderr) if e["event"] == "push.retrying"]
    # The image has two layers that may upload in parallel, so one attempt can
    # meet one fault or both.
    assert [e["attempt"] for e in retries] in ([1], [1, 2])
    assert all(e["level"] == "warning" for e in retries)
    assert all(e["cause"] == "503 Service Unavailable" for e in retries)
    assert all(e["reference"] == destination for e in retries)
    served = fault_proxy.upstream.manifest_digest("test/flaky", "1")
    assert result.stdout.strip() == f"{destination}@{served}"


def test_faults_beyond_budget_fail(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail_uploads(50)
    destination = f"{fault_proxy.host}/test/down:1"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--retry",
        "2",
        "--log-format",
        "console",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    # Each attempt meets one fault for each layer it starts to upload.
    assert 3 <= fault_proxy.faults_injected <= 6
    assert destination in result.stderr
    assert "after 3 attempts" in result.stderr
    assert "503 Service Unavailable on every attempt" in result.stderr
    assert fault_proxy.upstream.tags("test/down") == []


def test_connection_resets_are_retried(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    # Podman 4.3 itself retries a reset copy three times, one second apart, so
    # bootc-build sees a failure only when every one of those is reset too.
    fault_proxy.reset_uploads(8)
    destination = f"{fault_proxy.host}/test/reset:1"

    result = run_cli(
        "push",
        busybox_image,
        destination,
        "--no-tls-verify",
        "--retry",
        "3",
        "--log-format",
        "json",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    served = fault_proxy.upstream.manifest_digest("test/reset", "1")
    assert result.stdout.strip() == f"{destination}@{served}"


def test_unauthorized_fails_at_once(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.deny_all(401)

    result = run_cli(
        "push",
        busybox_image,
        f"{fault_proxy.host}/test/denied:1",
        "--no-tls-verify",
        "--log-format",
        "json",
        *FAST_RETRIES,
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    failed = [e for e in _events(result.stderr) if e["event"] == "command.failed"]
    assert failed[0]["attempts"] == 1
    assert "podman login" in failed[0]["message"]


def test_push_of_missing_image_is_input_error(
    podman_service: PodmanService, plain_registry: Registry
) -> None:
    result = run_cli(
        "push",
        "localhost/does-not-exist:1",
        f"{plain_registry.host}/x:1",
        "--no-tls-verify",
        url=podman_service.url,
    )

    assert result.exit_code == 2, result.describe()
    assert "not found" in result.stderr


def test_build_push_pushes_every_tag(
    podman_service: PodmanService,
    busybox_image: str,
    plain_registry: Registry,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    (tmp_path / "Containerfile").write_text(
        f"FROM {busybox_image}\nRUN echo built > /x\n"
    )
    first = f"{plain_registry.host}/test/built:1"
    second = f"{plain_registry.host}/test/built:latest"

    result = run_cli(
        "build",
        str(tmp_path),
        "-t",
        first,
        "-t",
        second,
        "--push",
        "--no-tls-verify",
        "--json",
        "--log-format",
        "json",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    document = json.loads(result.stdout)
    assert document["pushed"] == [
        {"ref": first, "digest": plain_registry.manifest_digest("test/built", "1")},
        {
            "ref": second,
            "digest": plain_registry.manifest_digest("test/built", "latest"),
        },
    ]
    assert len(document["image_id"]) == 64


def test_failed_build_pushes_nothing(
    podman_service: PodmanService,
    busybox_image: str,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    (tmp_path / "Containerfile").write_text(f"FROM {busybox_image}\nRUN exit 3\n")

    result = run_cli(
        "build",
        str(tmp_path),
        "-t",
        f"{fault_proxy.host}/test/never:1",
        "--push",
        "--no-tls-verify",
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert fault_proxy.requests_seen == 0


def test_build_pulls_base_from_registry(
    podman_service: PodmanService,
    busybox_image: str,
    plain_registry: Registry,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    base = f"{plain_registry.host}/test/base:1"
    podman_service.podman("push", "--tls-verify=false", busybox_image, base)
    (tmp_path / "Containerfile").write_text(f"FROM {base}\nRUN echo on top\n")

    result = run_cli(
        "build",
        str(tmp_path),
        "--pull",
        "always",
        "--no-tls-verify",
        "--log-format",
        "json",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    pulled = [e for e in _events(result.stderr) if e["event"] == "image.pulled"]
    assert [e["ref"] for e in pulled] == [base]
    podman_service.podman("rmi", "--force", base, check=False)


def test_push_requires_tag_for_build(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")

    result = run_cli("build", str(tmp_path), "--push")

    assert result.exit_code == 2, result.describe()
    assert "--tag" in result.stderr
