"""Build secrets reach RUN --mount=type=secret and nothing else."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import PodmanService, run_cli

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-value-9c41e7"
ENV_SECRET = "env-secret-value-52b8a0"


def _image_bytes(service: PodmanService, image: str, folder: Path) -> bytes:
    """Return every byte of every layer and of the config of ``image``."""
    archive = folder / "image.tar"
    service.podman(
        "save", "--format", "docker-archive", "--output", str(archive), image
    )
    content = bytearray()
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            extracted = outer.extractfile(member)
            if extracted is not None:
                content += extracted.read()
    archive.unlink()
    return bytes(content)


def test_secret_readable_in_run_and_absent_from_image(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(SECRET + "\n")
    (context / "Containerfile").write_text(
        f"FROM {busybox_image}\n"
        "COPY . /ctx/\n"
        "RUN --mount=type=secret,id=token "
        "sha256sum /run/secrets/token > /token.sum && wc -c < /run/secrets/token\n"
        "RUN --mount=type=secret,id=fromenv cat /run/secrets/fromenv | wc -c\n"
    )

    result = run_cli(
        "build",
        str(context),
        "--log-format",
        "json",
        "--secret",
        f"id=token,src={secret_file}",
        "--secret",
        "id=fromenv,env=BOOTC_TEST_SECRET",
        url=podman_service.url,
        env={"BOOTC_TEST_SECRET": ENV_SECRET},
    )

    assert result.exit_code == 0, result.describe()
    image = result.stdout.strip()
    new_images.add(image)
    output = [
        json.loads(line)["line"]
        for line in result.stderr.splitlines()
        if '"step.output"' in line
    ]
    assert str(len(SECRET) + 1) in output
    assert str(len(ENV_SECRET)) in output
    checksum = podman_service.podman("run", "--rm", image, "cat", "/token.sum").stdout
    assert (
        checksum.split()[0]
        == __import__("hashlib").sha256((SECRET + "\n").encode()).hexdigest()
    )
    listing = podman_service.podman("run", "--rm", image, "ls", "-a", "/ctx").stdout
    assert listing.split() == [".", "..", "Containerfile"]
    for value in (SECRET, ENV_SECRET):
        assert value not in result.stdout
        assert value not in result.stderr
        history = podman_service.podman("history", "--no-trunc", image).stdout
        assert value not in history
        assert value.encode() not in _image_bytes(podman_service, image, tmp_path)


def test_missing_secret_file_is_input_error(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")

    result = run_cli(
        "build",
        str(tmp_path),
        "--secret",
        f"id=x,src={tmp_path}/missing",
        "--url",
        f"unix://{tmp_path}/none.sock",
    )

    assert result.exit_code == 2, result.describe()
    assert "missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_secret_echoed_by_a_step_is_redacted(
    podman_service: PodmanService,
    busybox_image: str,
    tmp_path: Path,
    new_images: set[str],
) -> None:
    secret_file = tmp_path / "leak.txt"
    secret_file.write_text(SECRET)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        f"FROM {busybox_image}\n"
        "RUN --mount=type=secret,id=leak cat /run/secrets/leak; echo; exit 4\n"
    )

    result = run_cli(
        "build",
        str(context),
        "--log-format",
        "console",
        "--secret",
        f"id=leak,src={secret_file}",
        url=podman_service.url,
    )

    assert result.exit_code == 1, result.describe()
    assert SECRET not in result.stderr
    assert "***" in result.stderr
