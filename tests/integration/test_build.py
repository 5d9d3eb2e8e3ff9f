"""`bootc-build build` and `stages` against a real Podman service."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PodmanService, run_cli

pytestmark = pytest.mark.integration

TWO_STAGE = """\
ARG BUILDER_IMAGE=registry.access.redhat.com/ubi10/go-toolset:latest
ARG BASE_IMAGE=registry.redhat.io/rhel10/rhel-bootc:latest
FROM ${BUILDER_IMAGE} AS builder
ARG GREETING=hello
RUN echo "compiling $GREETING" && mkdir -p /out && echo "$GREETING" > /out/app
RUN echo second line from builder
FROM ${BASE_IMAGE}
COPY --from=builder /out/app /usr/bin/app
RUN echo "final stage sees $(cat /usr/bin/app)"
"""


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def two_stage(tmp_path: Path, busybox_image: str) -> Path:
    (tmp_path / "Containerfile").write_text(TWO_STAGE)
    return tmp_path


@pytest.fixture
def base_args(busybox_image: str) -> list[str]:
    return [
        "--build-arg",
        f"BUILDER_IMAGE={busybox_image}",
        "--build-arg",
        f"BASE_IMAGE={busybox_image}",
    ]


def test_target_builds_only_that_stage(
    podman_service: PodmanService,
    two_stage: Path,
    base_args: list[str],
    new_images: set[str],
) -> None:
    result = run_cli(
        "build",
        str(two_stage),
        "--target",
        "builder",
        "--log-format",
        "json",
        *base_args,
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    events = _events(result.stderr)
    started = [e for e in events if e["event"] == "stage.started"]
    assert [e["stage"] for e in started] == ["builder"]
    output = [e for e in events if e["event"] == "step.output"]
    compile_line = next(e for e in output if e["line"] == "compiling hello")
    assert compile_line["stage"] == "builder"
    assert compile_line["stage_index"] == 0
    assert all(e["level"] and e["timestamp"] for e in events)
    image_id = result.stdout.strip()
    assert len(image_id) == 64
    assert image_id in podman_service.image_ids()


def test_full_build_with_tags_args_and_labels(
    podman_service: PodmanService,
    two_stage: Path,
    base_args: list[str],
    new_images: set[str],
) -> None:
    result = run_cli(
        "build",
        str(two_stage),
        "--log-format",
        "json",
        *base_args,
        "-t",
        "localhost/bootc-build-test/app:1",
        "--tag",
        "localhost/bootc-build-test/app:latest",
        "--build-arg",
        "GREETING=bonjour",
        "--label",
        "org.example.flavor=server",
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    events = _events(result.stderr)
    output = {e["line"]: e for e in events if e["event"] == "step.output"}
    assert output["compiling bonjour"]["stage"] == "builder"
    assert output["final stage sees bonjour"]["stage_index"] == 1
    finished = [e for e in events if e["event"] == "build.finished"]
    assert len(finished) == 1
    assert set(finished[0]["tags"]) == {
        "localhost/bootc-build-test/app:1",
        "localhost/bootc-build-test/app:latest",
    }
    inspect = json.loads(
        podman_service.podman(
            "image", "inspect", "localhost/bootc-build-test/app:1"
        ).stdout
    )[0]
    assert inspect["Id"] == result.stdout.strip()
    assert inspect["Labels"]["org.example.flavor"] == "server"
    assert "localhost/bootc-build-test/app:latest" in inspect["RepoTags"]


def test_rebuild_uses_layer_cache(
    podman_service: PodmanService,
    two_stage: Path,
    base_args: list[str],
    new_images: set[str],
) -> None:
    first = run_cli(
        "build",
        str(two_stage),
        "--log-format",
        "json",
        *base_args,
        url=podman_service.url,
    )
    second = run_cli(
        "build",
        str(two_stage),
        "--log-format",
        "json",
        *base_args,
        url=podman_service.url,
    )

    assert first.exit_code == 0, first.describe()
    assert second.exit_code == 0, second.describe()
    assert first.stdout == second.stdout
    finished = [e for e in _events(second.stderr) if e["event"] == "stage.finished"]
    assert [e["cached_steps"] for e in finished] == [3, 2]


def test_failing_run_reports_step_and_cleans_up(
    podman_service: PodmanService,
    tmp_path: Path,
    busybox_image: str,
    new_images: set[str],
) -> None:
    (tmp_path / "Containerfile").write_text(
        f"FROM {busybox_image} AS builder\n"
        "RUN echo preparing && touch /made-by-step-2\n"
        "RUN echo about to fail; exit 7\n"
        "FROM builder\n"
    )
    containers_before = podman_service.container_ids()

    result = run_cli(
        "build",
        str(tmp_path),
        "-t",
        "localhost/bootc-build-test/broken:1",
        "--log-format",
        "console",
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert "stage builder, step 3/3 `RUN echo about to fail; exit 7`" in result.stderr
    assert "Containerfile:3" in result.stderr
    assert "exit status 7" in result.stderr
    assert "| about to fail" in result.stderr
    # The layer is in the service's storage, which the plain CLI may not see.
    assert f"podman --remote --url {podman_service.url} run --rm -it " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert podman_service.container_ids() == containers_before
    tagged = podman_service.podman(
        "image", "exists", "localhost/bootc-build-test/broken:1", check=False
    )
    assert tagged.returncode == 1


def test_failing_run_leaves_a_layer_with_a_shell(
    podman_service: PodmanService,
    tmp_path: Path,
    busybox_image: str,
    new_images: set[str],
) -> None:
    (tmp_path / "Containerfile").write_text(
        f"FROM {busybox_image}\nRUN touch /made-by-step-2\nRUN false\n"
    )

    result = run_cli(
        "build", str(tmp_path), "--log-format", "json", url=podman_service.url
    )

    assert result.exit_code == 1, result.describe()
    failed = [e for e in _events(result.stderr) if e["event"] == "build.failed"]
    assert len(failed) == 1
    assert failed[0]["level"] == "error"
    layer = failed[0]["last_layer"]
    listing = podman_service.podman("run", "--rm", layer, "ls", "/made-by-step-2")
    assert listing.stdout.strip() == "/made-by-step-2"


def test_unknown_target_fails_before_podman(
    podman_service: PodmanService, two_stage: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "build",
        str(two_stage),
        "--target",
        "bulider",
        url=f"unix://{tmp_path}/no-service-here.sock",
    )

    assert result.exit_code == 2, result.describe()
    assert "did you mean builder?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_unreachable_url_exits_3(two_stage: Path, tmp_path: Path) -> None:
    result = run_cli(
        "build",
        str(two_stage),
        "--log-format",
        "console",
        "--url",
        f"unix://{tmp_path}/missing.sock",
    )

    assert result.exit_code == 3, result.describe()
    assert "missing.sock" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_url_scheme_exits_2(two_stage: Path) -> None:
    result = run_cli("build", str(two_stage), "--url", "ftp://example.invalid/podman")

    assert result.exit_code == 2, result.describe()
    assert "ftp://" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(
    os.path.exists("/run/podman/podman.sock"),
    reason="a rootful Podman service is running, so no private one would start",
)
def test_private_service_started_and_stopped(
    two_stage: Path,
    base_args: list[str],
    tmp_path: Path,
    busybox_image: str,
    podman_service: PodmanService,
) -> None:
    storage_conf = tmp_path / "storage.conf"
    storage_conf.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{podman_service.root}"\n'
        f'runroot = "{podman_service.runroot}"\n'
    )
    runtime_dir = tmp_path / "xdg"
    runtime_dir.mkdir()

    result = run_cli(
        "build",
        str(two_stage),
        "--target",
        "builder",
        "--log-format",
        "json",
        *base_args,
        env={
            "CONTAINERS_STORAGE_CONF": str(storage_conf),
            "XDG_RUNTIME_DIR": str(runtime_dir),
        },
    )

    assert result.exit_code == 0, result.describe()
    events = _events(result.stderr)
    started = [e for e in events if e["event"] == "podman.service_started"]
    stopped = [e for e in events if e["event"] == "podman.service_stopped"]
    assert len(started) == 1
    assert len(stopped) == 1
    assert not os.path.exists(f"/proc/{started[0]['pid']}")
    socket_dir = Path(started[0]["url"].removeprefix("unix://")).parent
    assert not socket_dir.exists()
    podman_service.podman("rmi", "--force", result.stdout.strip(), check=False)


def test_stages_json_for_two_stage(two_stage: Path) -> None:
    result = run_cli(
        "stages", str(two_stage), "--json", "--build-arg", "BASE_IMAGE=x/base:1"
    )

    assert result.exit_code == 0, result.describe()
    report = json.loads(result.stdout)
    assert report["schema"] == 1
    assert report["target"] == 1
    assert report["needed"] == [0, 1]
    assert report["stages"][1]["base"] == "x/base:1"
    assert report["stages"][1]["depends_on"] == [0]


def test_stages_table_marks_needed(two_stage: Path) -> None:
    result = run_cli("stages", str(two_stage), "--target", "builder")

    assert result.exit_code == 0, result.describe()
    assert "target builder needs, in build order: builder" in result.stdout


def test_help_lists_commands() -> None:
    result = run_cli("--help")

    assert result.exit_code == 0, result.describe()
    assert "build" in result.stdout
    assert "stages" in result.stdout


def test_url_of_something_else_exits_3(plain_registry: Any) -> None:
    context_dir = Path(__file__).resolve().parents[2] / "Containerfiles" / "chain"

    result = run_cli("build", str(context_dir), "--url", f"tcp://{plain_registry.host}")

    assert result.exit_code == 3, result.describe()
    assert "not as a Podman service" in result.stderr
