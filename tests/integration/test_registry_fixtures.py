"""The registry and fault proxy fixtures, checked with `podman push` and requests.

The podman tests also pin down how podman 4.3.1 reports each injected fault, so a
change in those messages after a Podman upgrade shows up here first.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import PodmanService

# Importing a fixture is what makes pytest find it here. Test parameters then
# shadow the imported names, which ruff would report as F811 on every test.
# ruff: noqa: F811
from tests.registry import (
    CERTS_D,
    FaultProxy,
    ProxyFactory,
    ProxyRecord,
    Registry,
    RegistryFactory,
    auth_registry,  # noqa: F401
    fault_proxy,  # noqa: F401
    plain_registry,  # noqa: F401
    proxy_factory,  # noqa: F401
    registry_factory,  # noqa: F401
    tls_registry,  # noqa: F401
)

pytestmark = pytest.mark.integration

REPOSITORY = "bootc-build-test/busybox"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def push(
    podman: PodmanService,
    image: str,
    destination: str,
    *flags: str,
    digest_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `podman push` without raising on failure."""
    argv = ["push", *flags]
    if digest_file is not None:
        argv += ["--digestfile", str(digest_file)]
    return podman.podman(*argv, image, destination, check=False)


@pytest.fixture
def digest_file() -> Iterator[Path]:
    """A path for `podman push --digestfile`, deleted after the test."""
    with tempfile.TemporaryDirectory(prefix="bootc-build-digest-") as folder:
        yield Path(folder) / "digest"


def session() -> requests.Session:
    client = requests.Session()
    client.trust_env = False
    return client


def is_upload(record: ProxyRecord) -> bool:
    return "/blobs/uploads/" in record.path and record.method in {
        "POST",
        "PATCH",
        "PUT",
    }


# Registries


def test_plain_registry_push_and_digest(
    podman_service: PodmanService,
    busybox_image: str,
    plain_registry: Registry,
    digest_file: Path,
) -> None:
    assert plain_registry.url == f"http://{plain_registry.host}"
    assert plain_registry.tags(REPOSITORY) == []

    done = push(
        podman_service,
        busybox_image,
        f"{plain_registry.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
        digest_file=digest_file,
    )

    assert done.returncode == 0, done.stderr
    assert plain_registry.tags(REPOSITORY) == ["v1"]
    digest = plain_registry.manifest_digest(REPOSITORY, "v1")
    assert DIGEST.fullmatch(digest)
    assert digest == digest_file.read_text().strip()


def test_auth_registry_rejects_wrong_password(
    podman_service: PodmanService, busybox_image: str, auth_registry: Registry
) -> None:
    destination = f"{auth_registry.host}/{REPOSITORY}:v1"

    wrong = push(
        podman_service,
        busybox_image,
        destination,
        "--tls-verify=false",
        "--creds",
        f"{auth_registry.username}:wrong-{auth_registry.password}",
    )
    assert wrong.returncode != 0
    assert "unauthorized: authentication required" in wrong.stderr
    anonymous = session().get(f"{auth_registry.url}/v2/", timeout=10)
    assert anonymous.status_code == 401

    right = push(
        podman_service,
        busybox_image,
        destination,
        "--tls-verify=false",
        "--creds",
        f"{auth_registry.username}:{auth_registry.password}",
    )
    assert right.returncode == 0, right.stderr
    assert auth_registry.tags(REPOSITORY) == ["v1"]
    assert DIGEST.fullmatch(auth_registry.manifest_digest(REPOSITORY, "v1"))


def test_tls_registry_trusted_through_certs_d(
    podman_service: PodmanService, busybox_image: str, tls_registry: Registry
) -> None:
    assert tls_registry.url == f"https://{tls_registry.host}"
    assert tls_registry.ca_file is not None
    assert tls_registry.certs_dir == CERTS_D / tls_registry.host
    trusted = (tls_registry.certs_dir / "ca.crt").read_bytes()
    assert trusted == tls_registry.ca_file.read_bytes()

    done = push(
        podman_service,
        busybox_image,
        f"{tls_registry.host}/{REPOSITORY}:v1",
        "--tls-verify=true",
    )

    assert done.returncode == 0, done.stderr
    assert DIGEST.fullmatch(tls_registry.manifest_digest(REPOSITORY, "v1"))
    with pytest.raises(requests.exceptions.SSLError):
        session().get(f"{tls_registry.url}/v2/", timeout=10)


def test_registry_close_removes_everything(registry_factory: RegistryFactory) -> None:
    certs_d_existed = CERTS_D.exists()
    registry = registry_factory("tls")
    certs_dir = registry.certs_dir
    assert certs_dir is not None
    assert certs_dir.is_dir()

    registry.close()

    assert registry.process.returncode is not None
    assert not registry.workdir.exists()
    assert not certs_dir.exists()
    assert CERTS_D.exists() == certs_d_existed
    with pytest.raises(requests.ConnectionError):
        session().get(f"{registry.url}/v2/", timeout=10, verify=False)
    registry.close()


def test_registry_factory_rejects_unknown_kind(
    registry_factory: RegistryFactory,
) -> None:
    with pytest.raises(ValueError, match="unknown registry kind 'insecure'"):
        registry_factory("insecure")


# Fault proxy with podman


def test_proxy_forwards_push_unchanged(
    podman_service: PodmanService,
    busybox_image: str,
    fault_proxy: FaultProxy,
    digest_file: Path,
) -> None:
    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
        digest_file=digest_file,
    )

    assert done.returncode == 0, done.stderr
    through_proxy = fault_proxy.manifest_digest(REPOSITORY, "v1")
    direct = fault_proxy.upstream.manifest_digest(REPOSITORY, "v1")
    assert through_proxy == direct
    assert direct == digest_file.read_text().strip()
    assert fault_proxy.faults_injected == 0
    methods = {record.method for record in fault_proxy.log if is_upload(record)}
    # PATCH and PUT go to the Location of the POST, so the proxy only receives them
    # if it rewrote that Location to point at itself.
    assert methods == {"POST", "PATCH", "PUT"}
    assert fault_proxy.uploads_seen == sum(map(is_upload, fault_proxy.log))
    assert fault_proxy.requests_seen == len(fault_proxy.log)
    assert all(record.status is not None for record in fault_proxy.log)


def test_proxy_503_fails_push_without_retry(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail_uploads(1)

    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
    )

    assert done.returncode == 125
    # podman 4.3.1 reports:
    # Error: writing blob: initiating layer upload to /v2/<repo>/blobs/uploads/
    # in 127.0.0.1:<port>: received unexpected HTTP status: 503 Service Unavailable
    assert "Error: writing blob: initiating layer upload to" in done.stderr
    assert "received unexpected HTTP status: 503 Service Unavailable" in done.stderr
    assert "retrying" not in done.stderr
    assert fault_proxy.faults_injected == 1
    assert fault_proxy.pending_faults == 0
    failed = [record for record in fault_proxy.log if record.status == 503]
    assert [record.method for record in failed] == ["POST"]
    assert fault_proxy.upstream.tags(REPOSITORY) == []


def test_proxy_reset_is_retried_by_podman(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.reset_uploads(1)

    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
    )

    # podman 4.3.1 retries the whole copy after a connection reset, up to 3
    # times and 1 s apart, and logs a warning such as:
    # Failed, retrying in 1s ... (1/3). Error: writing blob: Post
    # "http://127.0.0.1:<port>/v2/<repo>/blobs/uploads/": read tcp
    # 127.0.0.1:<port>->127.0.0.1:<port>: read: connection reset by peer
    assert done.returncode == 0, done.stderr
    assert "Failed, retrying in 1s ... (1/3)" in done.stderr
    assert "read: connection reset by peer" in done.stderr
    assert fault_proxy.faults_injected == 1
    reset = [record for record in fault_proxy.log if record.status is None]
    assert [record.method for record in reset] == ["POST"]
    assert fault_proxy.upstream.tags(REPOSITORY) == ["v1"]


def test_proxy_429_is_retried_by_podman(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail_uploads(1, status=429, retry_after=1)

    started = time.monotonic()
    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
    )
    elapsed = time.monotonic() - started

    # Unlike a 503, podman 4.3.1 repeats a request that got 429 after the
    # Retry-After time, without printing a warning.
    assert done.returncode == 0, done.stderr
    assert "retrying" not in done.stderr
    assert elapsed >= 1.0
    assert fault_proxy.faults_injected == 1
    limited = [record for record in fault_proxy.log if record.status == 429]
    assert [record.method for record in limited] == ["POST"]
    assert fault_proxy.upstream.tags(REPOSITORY) == ["v1"]


def test_proxy_delay_slows_push(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.delay_uploads(1, 1.0)

    started = time.monotonic()
    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
    )
    elapsed = time.monotonic() - started

    # podman 4.3.1 waits for the delayed response, so the push only slows down.
    assert done.returncode == 0, done.stderr
    assert elapsed >= 1.0
    assert fault_proxy.faults_injected == 1
    assert fault_proxy.upstream.tags(REPOSITORY) == ["v1"]


def test_proxy_deny_all_fails_push(
    podman_service: PodmanService, busybox_image: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.deny_all()

    done = push(
        podman_service,
        busybox_image,
        f"{fault_proxy.host}/{REPOSITORY}:v1",
        "--tls-verify=false",
        "--creds",
        "someone:secret",
    )

    # podman 4.3.1 fails on the first blob check:
    # Error: trying to reuse blob sha256:<digest> at destination: checking
    # whether a blob sha256:<digest> exists in 127.0.0.1:<port>/<repo>:
    # unauthorized: authentication required
    assert done.returncode == 125
    assert "unauthorized: authentication required" in done.stderr
    assert fault_proxy.uploads_seen == 0
    assert fault_proxy.log
    assert {record.status for record in fault_proxy.log} == {401}
    assert fault_proxy.faults_injected == fault_proxy.requests_seen


# Fault proxy with requests


def test_proxy_streams_chunked_blob_upload(fault_proxy: FaultProxy) -> None:
    piece = bytes(range(256)) * 256
    pieces = 128  # 8 MiB in 64 KiB pieces
    digest = _sha256_of(piece, pieces)
    client = session()

    started = client.post(f"{fault_proxy.url}/v2/{REPOSITORY}/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["Location"]
    assert location.startswith(f"{fault_proxy.url}/v2/{REPOSITORY}/blobs/uploads/")

    # A generator body makes requests send Transfer-Encoding: chunked.
    patched = client.patch(location, data=(piece for _ in range(pieces)))
    assert patched.status_code == 202
    assert patched.headers["Range"] == f"0-{len(piece) * pieces - 1}"
    finished = client.put(patched.headers["Location"], params={"digest": digest})
    assert finished.status_code == 201

    blob_url = f"{fault_proxy.url}/v2/{REPOSITORY}/blobs/{digest}"
    head = client.head(blob_url)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(piece) * pieces)
    assert head.headers["Docker-Content-Digest"] == digest
    with client.get(blob_url, stream=True) as body:
        assert body.status_code == 200
        received = list(body.iter_content(len(piece)))
    assert b"".join(received) == piece * pieces
    assert [record.method for record in fault_proxy.log] == [
        "POST",
        "PATCH",
        "PUT",
        "HEAD",
        "GET",
    ]


def _sha256_of(piece: bytes, count: int) -> str:
    hasher = hashlib.sha256()
    for _ in range(count):
        hasher.update(piece)
    return f"sha256:{hasher.hexdigest()}"


def test_proxy_faults_apply_in_call_order(fault_proxy: FaultProxy) -> None:
    fault_proxy.reset_uploads(1)
    fault_proxy.fail_uploads(1, status=429, retry_after=7)
    upload_url = f"{fault_proxy.url}/v2/{REPOSITORY}/blobs/uploads/"
    client = session()

    assert client.get(f"{fault_proxy.url}/v2/").status_code == 200
    with pytest.raises(requests.ConnectionError):
        client.post(upload_url)
    limited = client.post(upload_url)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert client.post(upload_url).status_code == 202

    assert fault_proxy.requests_seen == 4
    assert fault_proxy.uploads_seen == 3
    assert fault_proxy.faults_injected == 2
    assert [record.status for record in fault_proxy.log] == [200, None, 429, 202]


def test_proxy_delay_exceeds_client_timeout(fault_proxy: FaultProxy) -> None:
    fault_proxy.delay_uploads(1, 2.0)
    upload_url = f"{fault_proxy.url}/v2/{REPOSITORY}/blobs/uploads/"

    with pytest.raises(requests.exceptions.ReadTimeout):
        session().post(upload_url, timeout=0.5)
    assert session().post(upload_url, timeout=10).status_code == 202
    assert fault_proxy.faults_injected == 1


def test_proxy_reset_sends_rst(fault_proxy: FaultProxy) -> None:
    fault_proxy.reset_uploads(1)
    request = (
        f"POST /v2/{REPOSITORY}/blobs/uploads/ HTTP/1.1\r\n"
        f"Host: {fault_proxy.host}\r\nContent-Length: 0\r\n\r\n"
    ).encode()

    with socket.create_connection(("127.0.0.1", fault_proxy.port), timeout=10) as raw:
        raw.sendall(request)
        # recv returns b"" after a FIN and raises only after an RST.
        with pytest.raises(ConnectionResetError):
            raw.recv(1024)


def test_proxy_deny_all_sends_basic_challenge(fault_proxy: FaultProxy) -> None:
    fault_proxy.deny_all()
    client = session()

    denied = client.get(f"{fault_proxy.url}/v2/")
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"] == 'Basic realm="proxy"'
    assert denied.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # A HEAD response without a body keeps the kept-alive connection usable.
    assert client.head(f"{fault_proxy.url}/v2/").status_code == 401
    assert client.get(f"{fault_proxy.url}/v2/").status_code == 401

    fault_proxy.clear_faults()
    assert client.get(f"{fault_proxy.url}/v2/").status_code == 200
    assert fault_proxy.faults_injected == 3


def test_proxy_forwards_to_auth_and_tls_upstreams(
    proxy_factory: ProxyFactory,
    auth_registry: Registry,
    tls_registry: Registry,
) -> None:
    to_auth = proxy_factory(auth_registry)
    challenge = session().get(f"{to_auth.url}/v2/")
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert to_auth.tags(REPOSITORY) == []

    to_tls = proxy_factory(tls_registry)
    assert session().get(f"{to_tls.url}/v2/").status_code == 200


def test_proxy_close_stops_threads(
    proxy_factory: ProxyFactory, plain_registry: Registry
) -> None:
    proxy = proxy_factory(plain_registry)
    proxy.delay_uploads(1, 60)
    client = session()
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            client.post(f"{proxy.url}/v2/{REPOSITORY}/blobs/uploads/", timeout=30)
        except requests.ConnectionError as error:
            errors.append(error)

    uploader = threading.Thread(target=upload)
    uploader.start()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as idle:
        # A keep-alive connection that has finished a request and waits for the
        # next one, which close() must cut.
        idle.sendall(b"GET /v2/ HTTP/1.1\r\nHost: proxy\r\n\r\n")
        response = b""
        while not response.endswith(b"\r\n\r\n{}"):
            received = idle.recv(1024)
            assert received, f"connection closed after {response!r}"
            response += received
        assert response.startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 10
        while proxy.uploads_seen == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

        started = time.monotonic()
        proxy.close()
        uploader.join(timeout=10)

        assert time.monotonic() - started < 5
        assert not uploader.is_alive()
        assert len(errors) == 1
        assert idle.recv(1024) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
