"""The adapter to podman-py: the only module that imports ``podman`` or ``requests``.

podman-py's high-level ``images.build()`` reads the whole stream before it
returns and drops keyword arguments it does not know, so builds go through its
low-level ``APIClient`` with explicit query parameters and a streamed body.
Every podman-py and requests exception is translated here, in
``_translate_errors``, into the project's own errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from podman.api.client import APIClient
from podman.errors import APIError, PodmanError

from bootc_builder.errors import PodmanAPIError, PodmanUnreachableError

# The oldest libpod API that has every build parameter used here.
API_VERSION = "4.0.0"
SUPPORTED_SCHEMES = ("unix", "tcp", "ssh", "http")

QueryParams = list[tuple[str, str]]


@contextmanager
def _translate_errors(url: str, action: str) -> Iterator[None]:
    """Map podman-py and requests failures during ``action`` to own errors."""
    try:
        yield
    except APIError as exc:
        if exc.response is None:
            # podman-py wraps OSError (refused, missing socket) without a response.
            raise PodmanUnreachableError(
                f"cannot reach the Podman service at {url} to {action}: "
                f"{_root_cause(exc)}"
            ) from exc
        raise PodmanAPIError(
            f"the Podman service rejected the request to {action}: "
            f"{_service_message(exc)}",
            status=exc.status_code,
        ) from exc
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise PodmanUnreachableError(
            f"lost the connection to the Podman service at {url} while trying to "
            f"{action}: {_root_cause(exc)}"
        ) from exc
    except requests.Timeout as exc:
        raise PodmanUnreachableError(
            f"the Podman service at {url} did not answer in time to {action}"
        ) from exc
    except (requests.RequestException, PodmanError, ValueError) as exc:
        raise PodmanAPIError(f"the request to {action} failed: {exc}") from exc


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__


def _service_message(exc: APIError) -> str:
    response = exc.response
    try:
        body = response.json() if response is not None else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    if response is not None and response.text:
        return str(response.text).strip()
    return str(exc)


class PodmanConnection:
    """A connection to one Podman service through its REST API."""

    def __init__(self, url: str) -> None:
        self.url = url
        with _translate_errors(url, "connect"):
            self._client = APIClient(base_url=url, version=API_VERSION)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PodmanConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def ping(self, *, timeout: float = 3.0) -> str:
        """Return the service's API version; raise if it does not answer."""
        with _translate_errors(self.url, "check that it is running"):
            response = self._client.get("/_ping", timeout=timeout)
            response.raise_for_status()
            return str(response.headers.get("Libpod-API-Version", "unknown"))

    def build(
        self, params: QueryParams, body: Iterable[bytes], *, headers: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        """Start a build and yield the decoded JSON messages of its stream as they come.

        ``body`` is the build context as tar chunks; requests sends it with
        chunked transfer encoding, so the archive is never held in memory.
        """
        action = "build the image"
        with _translate_errors(self.url, action):
            # podman-py's annotations are narrower than what it hands on to
            # requests, which takes repeated keys as pairs and bodies as iterators.
            response = self._client.post(
                "/build",
                params=params,  # type: ignore[arg-type]
                data=iter(body),  # type: ignore[arg-type]
                headers={"Content-Type": "application/x-tar", **headers},
                stream=True,
            )
            response.raise_for_status()
        try:
            with _translate_errors(self.url, action):
                for raw in response.iter_lines(chunk_size=65536):
                    if raw:
                        yield _decode(raw)
        finally:
            response.close()


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except ValueError:
        return {"stream": raw.decode("utf-8", "replace") + "\n"}
    return message if isinstance(message, dict) else {"stream": f"{message}\n"}
