"""Container registries and a fault-injecting proxy for push tests.

`registry_factory` starts Debian's `docker-registry` (CNCF distribution 2.8) on a
free 127.0.0.1 port with storage in a temporary folder, either over plain HTTP,
with htpasswd basic auth, or over TLS with a self-signed certificate. `FaultProxy`
sits in front of a registry and forwards every request unless a test asked it to
fail, reset or delay upload requests, or to reject everything with 401.

Everything listens on 127.0.0.1 only, and the fixtures stop every process and
thread and delete every file they made at teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import secrets
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Literal, NamedTuple

import pytest
import requests

__all__ = [
    "CERTS_D",
    "FaultProxy",
    "ProxyFactory",
    "ProxyRecord",
    "Registry",
    "RegistryFactory",
    "RegistryKind",
    "auth_registry",
    "fault_proxy",
    "plain_registry",
    "proxy_factory",
    "registry_factory",
    "start_registry",
    "tls_registry",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# containers/image reads trusted CAs for a registry at HOST:PORT from
# CERTS_D/HOST:PORT/*.crt when the process runs as root.
CERTS_D = Path("/etc/containers/certs.d")

REGISTRY_BINARY = "docker-registry"

# Media types a client accepts for GET /v2/<name>/manifests/<reference>. Without
# them the registry converts or rejects some manifests, and the digest differs
# from the one a push reports.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)

RegistryKind = Literal["plain", "auth", "tls"]

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
_HTTP_TIMEOUT = 30.0


def _free_port() -> int:
    # The port is free when this returns, but another process can take it before
    # the registry binds it, so start_registry retries on a bind failure.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _http_session(verify: str | bool) -> requests.Session:
    session = requests.Session()
    # Ignore HTTP(S)_PROXY, .netrc and REQUESTS_CA_BUNDLE, so that requests go
    # straight to the loopback port and verify only against the fixture's CA.
    session.trust_env = False
    session.verify = verify
    return session


def _fetch_manifest_digest(
    session: requests.Session, base_url: str, repository: str, tag: str
) -> str:
    response = session.get(
        f"{base_url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        timeout=_HTTP_TIMEOUT,
    )
    response.raise_for_status()
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise AssertionError(
            f"{base_url} returned no Docker-Content-Digest for {repository}:{tag}"
        )
    return digest


def _fetch_tags(session: requests.Session, base_url: str, repository: str) -> list[str]:
    response = session.get(
        f"{base_url}/v2/{repository}/tags/list", timeout=_HTTP_TIMEOUT
    )
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return sorted(response.json().get("tags") or [])


@dataclass
class Registry:
    """A running `docker-registry serve` on 127.0.0.1 and the files it uses."""

    kind: RegistryKind
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    certs_dir: Path | None = None
    """The certs.d/HOST:PORT folder this registry created, removed by close()."""
    _remove_certs_d: bool = False
    _session: requests.Session = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._session = _http_session(str(self.ca_file) if self.ca_file else True)
        if self.username is not None and self.password is not None:
            self._session.auth = (self.username, self.password)

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.kind == "tls" else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "registry.log"

    def manifest_digest(self, repository: str, tag: str) -> str:
        """Return the Docker-Content-Digest the registry serves for repository:tag."""
        return _fetch_manifest_digest(self._session, self.url, repository, tag)

    def tags(self, repository: str) -> list[str]:
        """Return the repository's tags, sorted, or [] if the registry has no such
        repository."""
        return _fetch_tags(self._session, self.url, repository)

    def read_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the registry, then delete its storage and its certs.d folder.

        Calling it again does nothing.
        """
        try:
            _stop_process(self.process)
        finally:
            self._session.close()
            self._remove_certs_dir()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove_certs_dir(self) -> None:
        if self.certs_dir is None:
            return
        shutil.rmtree(self.certs_dir, ignore_errors=True)
        if self._remove_certs_d:
            # rmdir fails, and CERTS_D stays, if something else was put there.
            with contextlib.suppress(OSError):
                CERTS_D.rmdir()


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed; run `make deps` or .ci/run first")
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed with exit {done.returncode}: {done.stderr}"
        )
    return done


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    """Create a self-signed certificate for IP 127.0.0.1 and return (cert, key)."""
    cert = folder / "registry.crt"
    key = folder / "registry.key"
    _run_tool(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=bootc-build test registry",
        "-addext",
        f"subjectAltName=IP:{LOOPBACK}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    return cert, key


def _registry_config(kind: RegistryKind, workdir: Path, port: int) -> dict[str, object]:
    http_config: dict[str, object] = {
        "addr": f"{LOOPBACK}:{port}",
        "secret": secrets.token_hex(16),
    }
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
            # The purge job only logs noise in a registry that lives for a test.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http_config,
    }
    if kind == "auth":
        config["auth"] = {
            "htpasswd": {
                "realm": "bootc-build-test",
                "path": str(workdir / "htpasswd"),
            }
        }
    if kind == "tls":
        http_config["tls"] = {
            "certificate": str(workdir / "registry.crt"),
            "key": str(workdir / "registry.key"),
        }
    return config


def _wait_until_ready(registry: Registry) -> None:
    """Poll GET /v2/ until the registry returns any HTTP status."""
    session = _http_session(str(registry.ca_file) if registry.ca_file else True)
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if registry.process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {registry.process.returncode} "
                    f"before it listened on {registry.host}:\n{registry.read_log()}"
                )
            try:
                session.get(f"{registry.url}/v2/", timeout=1)
            except requests.ConnectionError:
                time.sleep(0.02)
            else:
                return
    finally:
        session.close()
    raise RuntimeError(
        f"docker-registry did not answer on {registry.url} within "
        f"{_START_TIMEOUT} s:\n{registry.read_log()}"
    )


def _claim_certs_dir(host: str) -> tuple[Path, bool]:
    """Create CERTS_D/host and return it and whether CERTS_D was created too."""
    if not os.access(CERTS_D if CERTS_D.exists() else CERTS_D.parent, os.W_OK):
        pytest.fail(
            f"a TLS registry needs write access to {CERTS_D} so that Podman trusts "
            "its certificate; run the tests as root"
        )
    created_parent = not CERTS_D.exists()
    certs_dir = CERTS_D / host
    try:
        certs_dir.mkdir(parents=True)
    except FileExistsError:
        # NOTE: a test run killed before its teardown leaves such a folder behind.
        # It is not deleted here, because it may belong to someone else.
        pytest.fail(f"{certs_dir} already exists; remove it if no registry uses it")
    return certs_dir, created_parent


def _check_kind(kind: str) -> None:
    if kind not in ("plain", "auth", "tls"):
        raise ValueError(f"unknown registry kind {kind!r}; use plain, auth or tls")


def start_registry(kind: RegistryKind, workdir: Path) -> Registry:
    """Start a registry of the given kind, which the caller must close().

    workdir must be an empty folder, and close() deletes it.
    """
    _check_kind(kind)
    if shutil.which(REGISTRY_BINARY) is None:
        pytest.fail(
            f"{REGISTRY_BINARY} is not installed; run `make deps` or .ci/run first"
        )
    username = password = None
    ca_file = None
    if kind == "auth":
        username, password = "bootc-build", secrets.token_urlsafe(12)
        entry = _run_tool("htpasswd", "-Bbn", username, password).stdout
        (workdir / "htpasswd").write_text(entry.strip() + "\n")
    elif kind == "tls":
        ca_file, _ = _make_certificate(workdir)

    # REGISTRY_* variables override the configuration file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    attempts = 3
    for attempt in range(1, attempts + 1):
        port = _free_port()
        config_file = workdir / "config.yml"
        # JSON is valid YAML, and the registry's YAML parser reads it.
        config_file.write_text(json.dumps(_registry_config(kind, workdir, port)))
        with (workdir / "registry.log").open("wb") as log_stream:
            process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
            )
        registry = Registry(
            kind=kind,
            port=port,
            workdir=workdir,
            process=process,
            username=username,
            password=password,
            ca_file=ca_file,
        )
        try:
            if kind == "tls":
                assert ca_file is not None
                registry.certs_dir, registry._remove_certs_d = _claim_certs_dir(
                    registry.host
                )
                shutil.copy(ca_file, registry.certs_dir / "ca.crt")
            _wait_until_ready(registry)
        except RuntimeError:
            bind_failed = "address already in use" in registry.read_log()
            _stop_process(process)
            registry._remove_certs_dir()
            if bind_failed and attempt < attempts:
                log.warning("port %d was taken before the registry bound it", port)
                continue
            registry.close()
            raise
        except BaseException:
            registry.close()
            raise
        log.info("started %s registry at %s (pid %d)", kind, registry.url, process.pid)
        return registry
    raise AssertionError("unreachable")


RegistryFactory = Callable[[RegistryKind], Registry]


@pytest.fixture
def registry_factory() -> Iterator[RegistryFactory]:
    """Return start(kind) for registries that all stop when the test ends."""
    started: list[Registry] = []

    def start(kind: RegistryKind = "plain") -> Registry:
        _check_kind(kind)
        workdir = Path(tempfile.mkdtemp(prefix=f"bootc-build-registry-{kind}-"))
        registry = start_registry(kind, workdir)
        started.append(registry)
        return registry

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for registry in reversed(started):
            try:
                registry.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def plain_registry(registry_factory: RegistryFactory) -> Registry:
    """A registry over plain HTTP without authentication."""
    return registry_factory("plain")


@pytest.fixture
def auth_registry(registry_factory: RegistryFactory) -> Registry:
    """A registry over plain HTTP that requires `username` and `password`."""
    return registry_factory("auth")


@pytest.fixture
def tls_registry(registry_factory: RegistryFactory) -> Registry:
    """A registry over HTTPS whose CA is `ca_file` and is trusted through certs.d."""
    return registry_factory("tls")


# ---------------------------------------------------------------------------
# Fault-injecting proxy


class ProxyRecord(NamedTuple):
    """One request the proxy received and the status it sent back.

    status is 502 when the upstream registry failed, and None when the proxy
    reset the connection or closed it without a response.
    """

    method: str
    path: str
    status: int | None


@dataclass
class _Fault:
    kind: Literal["status", "reset", "delay"]
    remaining: int
    status: int = 503
    retry_after: int | str | None = None
    body: bytes = b""
    seconds: float = 0.0


UPLOAD_METHODS = frozenset({"POST", "PATCH", "PUT"})

# Headers that apply to one connection only (RFC 9110, section 7.6.1), and
# Expect, because BaseHTTPRequestHandler has already sent 100 Continue for it.
# Transfer-Encoding is not in the list because the proxy forwards chunked
# bodies with their framing.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)

_CHUNK = 64 * 1024
_TLS_HANDSHAKE_RECORD = 0x16


def _registry_error_body(status: int) -> bytes:
    """Return an error body in the format of the distribution registry API."""
    code = {401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(
        status, "UNKNOWN"
    )
    message = f"fault injected by the test proxy (HTTP {status})"
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry that injects faults.

    Upload requests are POST, PATCH and PUT requests whose path contains
    `/blobs/uploads/`. fail_uploads, reset_uploads and delay_uploads queue faults
    that the next upload requests consume in call order, so `reset_uploads(1)`
    then `fail_uploads(2)` resets the first upload request and fails the next two.
    deny_all rejects every request until clear_faults. All methods are thread-safe.
    """

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._deny_status: int | None = None
        self._requests_seen = 0
        self._uploads_seen = 0
        self._faults_injected = 0
        self._log: list[ProxyRecord] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._server = _ProxyServer(self)
        self.port = int(self._server.server_address[1])
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fault-proxy-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        self._closed = False
        log.info("fault proxy at %s forwards to %s", self.url, upstream.url)

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # Fault configuration.

    def fail_uploads(
        self,
        n: int,
        status: int = 503,
        retry_after: int | str | None = None,
        body: bytes | None = None,
    ) -> None:
        """Return `status` to the next n upload requests without forwarding them.

        retry_after sets a Retry-After header (seconds or an HTTP date). The body
        defaults to a JSON error in the registry API format, with code UNAVAILABLE
        for 503 and TOOMANYREQUESTS for 429.
        """
        error_body = _registry_error_body(status) if body is None else body
        self._queue(
            _Fault("status", n, status=status, retry_after=retry_after, body=error_body)
        )

    def reset_uploads(self, n: int) -> None:
        """Close the connection with a TCP RST on the next n upload requests."""
        self._queue(_Fault("reset", n))

    def delay_uploads(self, n: int, seconds: float) -> None:
        """Wait `seconds` before forwarding each of the next n upload requests."""
        self._queue(_Fault("delay", n, seconds=seconds))

    def deny_all(self, status: int = 401) -> None:
        """Return `status` with a Basic challenge to every request until
        clear_faults()."""
        with self._lock:
            self._deny_status = status

    def clear_faults(self) -> None:
        """Drop queued faults and stop deny_all. The counters keep their values."""
        with self._lock:
            self._faults.clear()
            self._deny_status = None

    def _queue(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError(f"n must be at least 1, got {fault.remaining}")
        with self._lock:
            self._faults.append(fault)

    # Counters.

    @property
    def requests_seen(self) -> int:
        """Number of HTTP requests received, faulted ones included."""
        with self._lock:
            return self._requests_seen

    @property
    def uploads_seen(self) -> int:
        """Number of upload requests received, faulted ones included."""
        with self._lock:
            return self._uploads_seen

    @property
    def faults_injected(self) -> int:
        """Number of requests that got a fault, deny_all rejections included."""
        with self._lock:
            return self._faults_injected

    @property
    def pending_faults(self) -> int:
        """Number of upload requests that queued faults will still hit."""
        with self._lock:
            return sum(fault.remaining for fault in self._faults)

    @property
    def log(self) -> list[ProxyRecord]:
        """A copy of the request log, in the order the requests finished."""
        with self._lock:
            return list(self._log)

    # Registry queries through the proxy.

    def manifest_digest(self, repository: str, tag: str) -> str:
        """Return the Docker-Content-Digest served through the proxy."""
        with self._client_session() as session:
            return _fetch_manifest_digest(session, self.url, repository, tag)

    def tags(self, repository: str) -> list[str]:
        with self._client_session() as session:
            return _fetch_tags(session, self.url, repository)

    def _client_session(self) -> requests.Session:
        session = _http_session(True)
        if self.upstream.username is not None and self.upstream.password is not None:
            session.auth = (self.upstream.username, self.upstream.password)
        return session

    # Lifecycle.

    def close(self) -> None:
        """Stop accepting, cut open connections and join every thread.

        Raises RuntimeError if a thread is still alive after 10 seconds.
        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_sockets = list(self._sockets)
            threads = [self._serve_thread, *self._threads]
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads did not stop: {alive}")
        log.info("fault proxy at %s stopped", self.url)

    # Internals used by the handler threads.

    def _admit(self, method: str, path: str) -> _Fault | None:
        """Count a request and return the fault to inject, if any."""
        is_upload = method in UPLOAD_METHODS and "/blobs/uploads/" in path
        with self._lock:
            self._requests_seen += 1
            if is_upload:
                self._uploads_seen += 1
            if self._deny_status is not None:
                self._faults_injected += 1
                return _Fault(
                    "status",
                    1,
                    status=self._deny_status,
                    body=_registry_error_body(self._deny_status),
                )
            if not is_upload or not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.popleft()
            self._faults_injected += 1
            return fault

    def _record(self, method: str, path: str, status: int | None) -> None:
        with self._lock:
            self._log.append(ProxyRecord(method, path, status))

    def _track(self, sock: socket.socket, thread: threading.Thread | None) -> None:
        with self._lock:
            self._sockets.add(sock)
            if thread is not None:
                self._threads.append(thread)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _rewrite_location(self, location: str) -> str:
        """Return location with an absolute upstream URL pointed at the proxy.

        Relative and foreign locations are returned unchanged.
        """
        prefix = self.upstream.url
        if location.startswith(prefix + "/") or location == prefix:
            return self.url + location[len(prefix) :]
        return location

    def _open_upstream(self) -> http.client.HTTPConnection:
        if self.upstream.kind == "tls":
            context = ssl.create_default_context(cafile=str(self.upstream.ca_file))
            return http.client.HTTPSConnection(
                LOOPBACK, self.upstream.port, timeout=_HTTP_TIMEOUT, context=context
            )
        return http.client.HTTPConnection(
            LOOPBACK, self.upstream.port, timeout=_HTTP_TIMEOUT
        )


class _ProxyServer(socketserver.TCPServer):
    """Accepts connections and serves each in a thread that FaultProxy joins.

    socketserver.TCPServer is used instead of http.server.HTTPServer because
    HTTPServer.server_bind looks up the host name, which may query DNS.
    """

    allow_reuse_address = False
    # containers/image opens several connections at once to push layers.
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__((LOOPBACK, 0), _ProxyHandler)

    def process_request(
        self,
        request: socket.socket,
        client_address: object,  # type: ignore[override]
    ) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"fault-proxy-{self.server_address[1]}-conn",
            # A daemon thread cannot keep the interpreter alive if close() fails.
            daemon=True,
        )
        self.proxy._track(request, thread)
        if self.proxy._stopping.is_set():
            request.shutdown(socket.SHUT_RDWR)
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: object) -> None:
        try:
            self.finish_request(request, client_address)  # type: ignore[arg-type]
        except Exception:
            log.exception("fault proxy connection from %s failed", client_address)
        finally:
            self.proxy._untrack(request)
            self.shutdown_request(request)


class _ClientGone(Exception):
    """The client closed its connection in the middle of a request body."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle client connections are closed after this many seconds.
    timeout = 60
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.proxy = self.server.proxy
        self.upstream_connection: http.client.HTTPConnection | None = None

    def handle(self) -> None:
        if self._client_starts_tls():
            return
        try:
            super().handle()
        except (OSError, _ClientGone) as error:
            # The client went away or close() cut the connection.
            log.debug("fault proxy connection ended: %s", error)

    def finish(self) -> None:
        if self.upstream_connection is not None:
            self.upstream_connection.close()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("fault proxy: " + format, *args)

    def _client_starts_tls(self) -> bool:
        """Reject a TLS ClientHello with 400 and return whether it did.

        containers/image tries HTTPS first even for an insecure registry and falls
        back to HTTP when the TLS handshake fails. Without this check the handler
        would wait for a line break that the ClientHello may never contain.
        """
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        if first and first[0] == _TLS_HANDSHAKE_RECORD:
            self.wfile.write(
                b"HTTP/1.1 400 Bad Request\r\n"
                b"Connection: close\r\nContent-Length: 0\r\n\r\n"
            )
            return True
        return False

    # BaseHTTPRequestHandler dispatches on do_<METHOD>.
    def do_proxy(self) -> None:
        method, path = self.command, self.path
        fault = self.proxy._admit(method, path)
        self._recorded = False
        try:
            if fault is None or fault.kind == "delay":
                if fault is not None:
                    log.info(
                        "fault proxy delays %s %s by %s s", method, path, fault.seconds
                    )
                    if self.proxy._stopping.wait(fault.seconds):
                        self.close_connection = True
                        return
                self._forward()
            elif fault.kind == "reset":
                log.info("fault proxy resets %s %s", method, path)
                self._reset_connection()
            else:
                log.info("fault proxy returns %d to %s %s", fault.status, method, path)
                self._send_fault(fault)
        finally:
            if not self._recorded:
                self._record(None)

    def _record(self, status: int | None) -> None:
        """Log the request once its status is known, before the client sees it,
        so a test that got a response always finds its record."""
        self._recorded = True
        self.proxy._record(self.command, self.path, status)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_proxy

    def _reset_connection(self) -> None:
        self.close_connection = True
        # With a zero linger time, close() sends RST in place of FIN. The socket
        # is detached first because rfile holds a reference that would otherwise
        # keep the descriptor open past close().
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.proxy._untrack(self.connection)
        os.close(self.connection.detach())

    def _send_fault(self, fault: _Fault) -> None:
        # Read the request body first, so that the connection stays usable and
        # the client reads the status instead of a failed write.
        for _ in self._request_body():
            pass
        self._record(fault.status)
        self.send_response_only(fault.status)
        if fault.retry_after is not None:
            self.send_header("Retry-After", str(fault.retry_after))
        if fault.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="proxy"')
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(fault.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(fault.body)

    def _request_body(self) -> Iterator[bytes]:
        """Yield the request body as received, with chunked framing kept."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked_request_body()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                raise _ClientGone("client closed the connection inside the body")
            remaining -= len(data)
            yield data

    def _chunked_request_body(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line.endswith(b"\n"):
                raise _ClientGone(f"invalid chunk size line {size_line!r}")
            yield size_line
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ClientGone(f"invalid chunk size line {size_line!r}") from None
            if size == 0:
                break
            remaining = size + 2  # the chunk and its CRLF
            while remaining > 0:
                data = self.rfile.read(min(_CHUNK, remaining))
                if not data:
                    raise _ClientGone("client closed the connection inside a chunk")
                remaining -= len(data)
                yield data
        # Trailer fields, then the empty line that ends the body.
        while True:
            line = self.rfile.readline(8192)
            if not line:
                raise _ClientGone("client closed the connection in the trailer")
            yield line
            if line in (b"\r\n", b"\n"):
                return

    def _forward(self) -> None:
        """Send the request upstream and stream the response back."""
        try:
            response = self._send_upstream()
        except _ClientGone:
            # The upstream got part of a request and cannot be reused.
            self._drop_upstream()
            self.close_connection = True
            raise
        except (OSError, http.client.HTTPException) as error:
            log.warning(
                "fault proxy could not forward %s %s to %s: %s",
                self.command,
                self.path,
                self.proxy.upstream.url,
                error,
            )
            self._drop_upstream()
            self.close_connection = True
            self._record(502)
            self.send_error(502, f"upstream registry failed: {error}")
            return
        self._record(response.status)
        try:
            self._send_response(response)
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self.close_connection = True
            raise

    def _drop_upstream(self) -> None:
        if self.upstream_connection is not None:
            self.upstream_connection.close()
            self.upstream_connection = None

    def _send_upstream(self) -> http.client.HTTPResponse:
        if self.upstream_connection is None:
            self.upstream_connection = self.proxy._open_upstream()
        upstream = self.upstream_connection
        upstream.putrequest(
            self.command, self.path, skip_host=True, skip_accept_encoding=True
        )
        # The registry builds absolute Location URLs from Host, so it gets its
        # own address here and _rewrite_location maps them back to the proxy.
        upstream.putheader("Host", self.proxy.upstream.host)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "host":
                upstream.putheader(name, value)
        upstream.endheaders()
        for data in self._request_body():
            upstream.send(data)
        return upstream.getresponse()

    def _send_response(self, response: http.client.HTTPResponse) -> None:
        chunked = self._send_response_headers(response)
        if self.command == "HEAD" or response.status in (204, 304):
            response.read()
            return

        while data := response.read1(_CHUNK):
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

        # read1 leaves a response with Content-Length: 0 open, and http.client
        # sends no further request on the connection until the response is closed.
        response.read()

    def _send_response_headers(self, response: http.client.HTTPResponse) -> bool:
        """Send the status line and headers and return whether the body is chunked."""
        self.send_response_only(response.status, response.reason)
        chunked = False
        has_length = False
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            if lower == "content-length":
                has_length = True
            if lower == "location":
                value = self.proxy._rewrite_location(value)
            self.send_header(name, value)

        has_body = self.command != "HEAD" and response.status not in (204, 304)
        if has_body and not chunked and not has_length:
            # The body ends when the upstream closes, so the client connection
            # must close after it as well.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        return chunked


ProxyFactory = Callable[[Registry], FaultProxy]


@pytest.fixture
def proxy_factory() -> Iterator[ProxyFactory]:
    """Return start(upstream) for fault proxies that all stop when the test ends."""
    started: list[FaultProxy] = []

    def start(upstream: Registry) -> FaultProxy:
        proxy = FaultProxy(upstream)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for proxy in reversed(started):
            try:
                proxy.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def fault_proxy(proxy_factory: ProxyFactory, plain_registry: Registry) -> FaultProxy:
    """A fault proxy in front of `plain_registry`, which is its `upstream`."""
    return proxy_factory(plain_registry)
