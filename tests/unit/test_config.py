"""Option checks: KEY=VALUE pairs and image references."""

from __future__ import annotations

import pytest

from bootc_builder.config import parse_key_values, validate_image_reference
from bootc_builder.errors import ExitCode, InputError


def test_key_values_parsed_later_wins() -> None:
    parsed = parse_key_values(["A=1", "B=x=y", "A=2", "EMPTY="], option="--build-arg")

    assert parsed == {"A": "2", "B": "x=y", "EMPTY": ""}


@pytest.mark.parametrize("bad", ["NOVALUE", "=value", " =x"])
def test_key_values_rejects_malformed(bad: str) -> None:
    with pytest.raises(InputError) as failure:
        parse_key_values([bad], option="--label")

    assert failure.value.exit_code == ExitCode.USAGE
    assert "--label" in str(failure.value)
    assert repr(bad) in str(failure.value)


@pytest.mark.parametrize(
    "reference",
    [
        "localhost/app",
        "localhost/app:1.0",
        "quay.io/org/app:latest",
        "registry.example.com:5000/a/b/c:v1-rc.1",
        "app",
        "127.0.0.1:5000/app@sha256:" + "a" * 64,
    ],
)
def test_reference_accepts_valid(reference: str) -> None:
    assert validate_image_reference(reference) == reference


def test_reference_rejects_upper_case_repository() -> None:
    with pytest.raises(InputError) as failure:
        validate_image_reference("localhost/MyApp:1")

    assert "lower-case" in str(failure.value)


@pytest.mark.parametrize(
    "bad", ["", "app:", "app:bad tag", "-app", "a//b", "app:" + "x" * 200]
)
def test_reference_rejects_malformed(bad: str) -> None:
    with pytest.raises(InputError) as failure:
        validate_image_reference(bad, option="--tag")

    assert "--tag" in str(failure.value)
