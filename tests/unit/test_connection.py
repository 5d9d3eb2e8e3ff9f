"""Which Podman addresses are tried, and in what order."""

from __future__ import annotations

import pytest

from bootc_builder.connection import ROOTFUL_SOCKET, candidate_urls, validate_url
from bootc_builder.errors import InputError


def test_explicit_url_is_the_only_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "unix:///elsewhere.sock")

    assert candidate_urls("tcp://127.0.0.1:8080") == [("tcp://127.0.0.1:8080", "--url")]


def test_defaults_follow_container_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "unix:///from-env.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")

    urls = [url for url, _ in candidate_urls(None)]

    assert urls == [
        "unix:///from-env.sock",
        ROOTFUL_SOCKET,
        "unix:///run/user/1234/podman/podman.sock",
    ]


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "/run/podman/podman.sock", "npipe:////./pipe/x"]
)
def test_unknown_scheme_is_input_error(url: str) -> None:
    with pytest.raises(InputError) as failure:
        validate_url(url)

    assert repr(url) in str(failure.value)


def test_bad_container_host_is_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST", "gopher://x")

    with pytest.raises(InputError):
        candidate_urls(None)
