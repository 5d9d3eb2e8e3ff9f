"""The inputs that keep a build from reusing an earlier image."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootc_builder import fingerprint
from bootc_builder.containerfile import parse_containerfile
from bootc_builder.fingerprint import _from_value, _unseen_input
from bootc_builder.stages import needed_stages, resolve_target


def _blocker(text: str, target: str | None = None) -> str | None:
    containerfile = parse_containerfile(text)
    stage = resolve_target(containerfile, target)
    return _unseen_input(containerfile, needed_stages(containerfile, stage))


def test_stage_references_are_seen() -> None:
    text = (
        "FROM quay.io/a/b:1 AS ctx\n"
        "FROM quay.io/a/b:1\n"
        "COPY --from=ctx /x /x\n"
        "COPY --from=0 /y /y\n"
        "RUN --mount=type=bind,from=ctx,target=/m true\n"
        "RUN --mount=type=cache,target=/c true\n"
    )

    assert _blocker(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM scratch\nCOPY --from=quay.io/x/y:1 /a /a\n", "quay.io/x/y:1"),
        (
            "FROM scratch\nRUN --mount=from=quay.io/x/y:1,target=/m true\n",
            "quay.io/x/y:1",
        ),
        ("FROM scratch\nADD https://example.invalid/f /f\n", "remote source"),
        ("FROM scratch\nARG IMG=quay.io/x\nCOPY --from=$IMG /a /a\n", "$IMG"),
    ],
)
def test_unseen_inputs_block_reuse(text: str, expected: str) -> None:
    blocker = _blocker(text)

    assert blocker is not None
    assert expected in blocker


def test_only_needed_stages_count() -> None:
    text = (
        "FROM scratch AS clean\nCOPY a /a\n"
        "FROM scratch AS other\nCOPY --from=quay.io/x/y:1 /a /a\n"
    )

    assert _blocker(text, "clean") is None
    assert _blocker(text, "other") is not None


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--from=builder", "builder"),
        ("--mount=type=bind,from=ctx,target=/m", "ctx"),
        ("--mount=type=cache,target=/c", None),
        ("--chown=1000", None),
    ],
)
def test_from_value(flag: str, value: str | None) -> None:
    assert _from_value(flag) == value


def test_index_remembers_latest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(fingerprint, "MAX_RECORDS", 3)

    for number in range(5):
        fingerprint.remember(f"digest-{number}", f"image-{number}")
    fingerprint.remember("digest-2", "image-2b")

    assert fingerprint.recall("digest-0") is None
    assert fingerprint.recall("digest-1") is None
    assert fingerprint.recall("digest-2") == "image-2b"
    assert fingerprint.recall("digest-4") == "image-4"


def test_unreadable_index_means_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    index = tmp_path / "bootc-build" / "reused-images.json"
    index.parent.mkdir()
    index.write_text("not json")

    assert fingerprint.recall("anything") is None
