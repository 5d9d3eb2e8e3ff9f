"""The build stream of a real Podman service, read through the adapter."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootc_builder import podman_api
from bootc_builder.config import BuildOptions
from bootc_builder.pipeline import build_query, plan_build
from bootc_builder.podman_api import PodmanConnection
from tests.conftest import PodmanService, run_cli


def test_build_stream_read_in_batches(
    podman_service: PodmanService,
    busybox_image: str,
    new_images: set[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readers: list[Callable[[int], bytes]] = []
    batched = podman_api._chunked_payloads

    def recording(read1: Callable[[int], bytes]) -> Iterator[bytes]:
        readers.append(read1)
        return batched(read1)

    monkeypatch.setattr(podman_api, "_chunked_payloads", recording)
    (tmp_path / "Containerfile").write_text(f"FROM {busybox_image}\nRUN seq 1 20000\n")
    options = BuildOptions(tmp_path, tmp_path / "Containerfile", no_cache=True)
    plan = plan_build(options)

    with PodmanConnection(podman_service.url) as connection:
        messages = list(
            connection.build(build_query(options, plan), plan.archive.chunks())
        )

    # The service's own stream, not requests' line reader, was decoded.
    assert len(readers) == 1
    text = "".join(str(message.get("stream", "")) for message in messages)
    numbers = [line for line in text.splitlines() if line.isdecimal()]
    assert numbers == [str(n) for n in range(1, 20001)]
    assert "COMMIT" in text
    # The stream ran to its end, where Podman prints the image id.
    assert re.search(r"^[0-9a-f]{64}$", text, re.MULTILINE)


def test_marker_lookalikes_logged_as_output(
    podman_service: PodmanService,
    busybox_image: str,
    new_images: set[str],
    tmp_path: Path,
) -> None:
    lookalikes = [
        "STEP 9/9: RUN fake",
        "[2/2] STEP 1/2: FROM x",
        "--> abcdef0",
        "--> Using cache 0123456789abcdef",
        "0" * 64,
        "still stage one",
    ]
    script = "; ".join(f"echo '{line}'" for line in lookalikes)
    (tmp_path / "Containerfile").write_text(
        f"FROM {busybox_image} AS one\n"
        f"RUN {script}; touch /done\n"
        f"FROM {busybox_image} AS two\n"
        "COPY --from=one /done /done\n"
    )

    result = run_cli(
        "build",
        "--no-cache",
        "--log-format",
        "json",
        str(tmp_path),
        url=podman_service.url,
    )

    assert result.exit_code == 0, result.describe()
    events = [json.loads(line) for line in result.stderr.splitlines()]
    output = [
        (event["stage"], event["line"])
        for event in events
        if event["event"] == "step.output" and event["line"] in lookalikes
    ]
    assert output == [("one", line) for line in lookalikes]
    steps = [(e["stage"], e["step"]) for e in events if e["event"] == "step.started"]
    assert steps == [("one", 1), ("one", 2), ("two", 1), ("two", 2)]
