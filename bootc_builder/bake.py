"""Build the images of a plan on one or more Podman services, in parallel.

1. ``Placement``: before anything runs, find the hosts that may build each
   image. A host must build the image's platform natively when some host lists
   it. An image and a plan base that cannot move through a registry must share
   a host, which is the case without ``--push``, without a push destination,
   or when FROM names the base without an ARG.
2. ``_connect_hosts``: check that every host responds; without hosts, find or
   start the local service once for the whole run.
3. ``_Scheduler``: start each image whose plan bases are built on a host with a
   free job, preferring the host that built its bases, then the host with
   the most free jobs. Each build runs in its own thread through
   ``pipeline.build``, and every log event of that thread carries ``image``
   and ``host``.

A base built on another host reaches the dependent build through the registry:
its first push destination, pinned to the digest the registry serves, replaces
the build argument that names the base, and ``pipeline.build`` pulls it first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog

from bootc_builder.bakefile import BakePlan, HostSpec, ImageSpec, PlanError
from bootc_builder.config import BuildOptions, PullPolicy, SecretSpec, parse_secret
from bootc_builder.connection import open_connection
from bootc_builder.errors import (
    BootcBuildError,
    ExitCode,
    InputError,
    PodmanUnreachableError,
)
from bootc_builder.pipeline import BuildOutcome, build
from bootc_builder.push import PushedImage, RegistryOptions, push_image

__all__ = [
    "SUMMARY_SCHEMA",
    "BakeFailedError",
    "ImageReport",
    "Placement",
    "format_summary",
    "run_plan",
    "summary_document",
]

SUMMARY_SCHEMA = 1

log = structlog.get_logger("bootc_builder")

BuildFunction = Callable[..., BuildOutcome]
PushFunction = Callable[[str, str, Sequence[str], RegistryOptions], list[PushedImage]]


class BakeFailedError(BootcBuildError):
    """One or more images of the plan were not built.

    The exit code is that of the first failed image in plan order.
    """

    def __init__(self, message: str, *, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(slots=True)
class ImageReport:
    """The outcome of one image: built, failed, skipped or cancelled."""

    name: str
    result: str = "pending"
    host: str | None = None
    url: str | None = None
    duration_s: float | None = None
    image_id: str | None = None
    tags: tuple[str, ...] = ()
    pushed: list[PushedImage] = field(default_factory=list)
    error: str | None = None
    exit_code: int = int(ExitCode.OK)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "result": self.result,
            "host": self.host,
            "url": self.url,
            "duration_s": self.duration_s,
            "image_id": self.image_id,
            "tags": list(self.tags),
            "pushed": [image.as_dict() for image in self.pushed],
            "error": self.error,
            "exit_code": self.exit_code,
        }


# --- Placement -----------------------------------------------------------------


def _normalize_platform(platform: str) -> str:
    # linux/arm64 means v8 and linux/amd64 means v1, so those variants are dropped.
    lowered = platform.lower()
    for implied in ("linux/arm64/v8", "linux/amd64/v1"):
        if lowered == implied:
            return implied.rsplit("/", 1)[0]
    return lowered


def _platform_hosts(spec: ImageSpec, hosts: Sequence[HostSpec]) -> set[str]:
    """Return the hosts that may build the image's platform.

    Hosts that list the platform win. Without any, hosts that list no platforms
    may try, because their native platform is unknown.
    """
    if spec.platform is None:
        return {host.name for host in hosts}
    wanted = _normalize_platform(spec.platform)
    native = {
        host.name
        for host in hosts
        if wanted in {_normalize_platform(p) for p in host.platforms}
    }
    return native or {host.name for host in hosts if not host.platforms}


class Placement:
    """The hosts each image may build on, and the images that must share a host.

    Raises:
        PlanError: an image has no host, or images that must share a host have
            no host in common.
    """

    def __init__(self, plan: BakePlan, *, push: bool) -> None:
        self.plan = plan
        self.push = push
        self._parent: dict[str, str] = {name: name for name in plan.images}
        self._allowed: dict[str, set[str]] = {}
        for name, spec in plan.images.items():
            hosts = _platform_hosts(spec, plan.hosts)
            if not hosts:
                listed = "; ".join(
                    f"{host.name}: {', '.join(host.platforms)}" for host in plan.hosts
                )
                raise PlanError(
                    f"{plan.source}: images.{name}.platform: no host builds "
                    f"{spec.platform} natively ({listed}); add it to a host's "
                    "platforms or remove the platform"
                )
            self._allowed[name] = hosts
        for name, spec in plan.images.items():
            for base in spec.bases:
                reason = self.stay_reason(spec, base.image)
                if reason is not None:
                    self._join(name, base.image, reason)

    def stay_reason(self, spec: ImageSpec, base_name: str) -> str | None:
        """Say why ``base_name`` cannot move to another host for ``spec``, or None."""
        base = next(b for b in spec.bases if b.image == base_name)
        if not self.push:
            return f"bake runs without --push, so images.{base_name} is not pushed"
        if not self.plan.images[base_name].push:
            return (
                f"images.{base_name} has no push destination; add push = "
                '["REGISTRY/NAME:TAG"] to it'
            )
        if base.build_arg is None:
            return (
                f"the Containerfile of images.{spec.name} names {base.reference} in "
                "FROM without an ARG, so the build cannot be pointed at the pushed "
                "copy; declare ARG BASE_IMAGE=... and use FROM ${BASE_IMAGE}"
            )
        return None

    def _root(self, name: str) -> str:
        while self._parent[name] != name:
            name = self._parent[name]
        return name

    def _join(self, name: str, base: str, reason: str) -> None:
        first, second = self._root(name), self._root(base)
        if first == second:
            return
        common = self._allowed[first] & self._allowed[second]
        if not common:
            raise PlanError(
                f"{self.plan.source}: images.{name} must build on the same host as "
                f"its base images.{base} because {reason}; but no host can build "
                f"both ({name}: {', '.join(sorted(self._allowed[first]))}; "
                f"{base}: {', '.join(sorted(self._allowed[second]))})"
            )
        self._parent[second] = first
        self._allowed[first] = common
        del self._allowed[second]

    def group(self, name: str) -> str:
        """Name the group of images that must share a host with ``name``."""
        return self._root(name)

    def allowed(self, name: str) -> set[str]:
        return self._allowed[self._root(name)]


def _image_secrets(source: str, spec: ImageSpec) -> tuple[SecretSpec, ...]:
    """Parse an image's secrets as --secret does; a relative src is under its context.

    Raises:
        InputError: a secret is malformed, or its file or variable is missing.
    """
    parsed = []
    for value in spec.secrets:
        fields = [
            f"src={spec.context / field[4:]}"
            if field.startswith("src=") and not os.path.isabs(field[4:])
            else field
            for field in value.split(",")
        ]
        try:
            parsed.append(parse_secret(",".join(fields)))
        except InputError as exc:
            raise InputError(f"{source}: images.{spec.name}.secrets: {exc}") from None
    return tuple(parsed)


def _check_secrets(plan: BakePlan) -> None:
    for spec in plan.images.values():
        _image_secrets(plan.source, spec)


# --- Hosts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Host:
    spec: HostSpec
    url: str
    index: int

    @property
    def name(self) -> str:
        return self.spec.name


def _connect_hosts(hosts: Sequence[HostSpec], stack: ExitStack) -> list[_Host]:
    """Check that every host responds; keep the local service open for the run.

    Raises:
        PodmanUnreachableError: a host did not respond.
    """
    connected: list[_Host] = []
    for index, spec in enumerate(hosts):
        if spec.url is None:
            connection = stack.enter_context(open_connection(None))
            connected.append(_Host(spec, connection.url, index))
            continue
        if spec.identity is not None:
            # NOTE: the Podman connection layer takes a URL only, so ssh uses
            # the keys of the ssh agent and ~/.ssh/config, not this file.
            log.warning(
                "host.identity_ignored",
                host=spec.name,
                identity=spec.identity,
                message=f"host {spec.name}: the identity file {spec.identity} of "
                "its podman system connection is not used; add the key to the "
                "ssh agent or to ~/.ssh/config",
            )
        try:
            with open_connection(spec.url):
                pass
        except PodmanUnreachableError as exc:
            raise PodmanUnreachableError(f"host {spec.name}: {exc}") from exc
        connected.append(_Host(spec, spec.url, index))
    return connected


def _push_to(
    url: str, image_id: str, destinations: Sequence[str], registry: RegistryOptions
) -> list[PushedImage]:
    with open_connection(url) as connection:
        return push_image(connection, image_id, destinations, registry)


def _repository(reference: str) -> str:
    """Strip the tag or digest from ``reference``."""
    name = reference.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


# --- Scheduling ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    spec: ImageSpec
    host: _Host
    options: BuildOptions
    notes: tuple[tuple[str, dict[str, Any]], ...]
    """Warning events to log in the build's thread, where image and host are bound."""


class _Scheduler:
    def __init__(
        self,
        plan: BakePlan,
        hosts: Sequence[_Host],
        placement: Placement,
        *,
        registry: RegistryOptions,
        push: bool,
        fail_fast: bool,
        build_image: BuildFunction,
        push_images: PushFunction,
    ) -> None:
        self._plan = plan
        self._hosts = list(hosts)
        self._placement = placement
        self._registry = registry
        self._push = push
        self._fail_fast = fail_fast
        self._build_image = build_image
        self._push_images = push_images
        self._changed = threading.Condition()
        self._free = {host.name: host.spec.jobs for host in hosts}
        self._pending = list(plan.images)
        self._running: set[str] = set()
        self._reports: dict[str, ImageReport] = {}
        self._group_host: dict[str, str] = {}
        self._failed = False
        self._crash: Exception | None = None

    def run(self) -> list[ImageReport]:
        with self._changed:
            while self._pending or self._running:
                self._drop_blocked()
                self._start_ready()
                if not self._running and self._pending:
                    self._fail_unplaceable()
                    break
                if self._running:
                    self._changed.wait()
        if self._crash is not None:
            raise self._crash
        return [self._reports[name] for name in self._plan.images]

    def _drop_blocked(self) -> None:
        """Skip images whose plan bases were not built; with --fail-fast, all."""
        for name in list(self._pending):
            if self._fail_fast and self._failed:
                self._finish_unstarted(
                    name, "cancelled", "cancelled by --fail-fast after a failure"
                )
                continue
            for base in self._plan.images[name].depends_on:
                report = self._reports.get(base)
                if report is not None and report.result != "built":
                    self._finish_unstarted(
                        name, "skipped", f"not built because {base} {report.result}"
                    )
                    break

    def _finish_unstarted(self, name: str, result: str, reason: str) -> None:
        self._pending.remove(name)
        self._reports[name] = ImageReport(
            name, result=result, error=reason, exit_code=int(ExitCode.FAILED)
        )
        with structlog.contextvars.bound_contextvars(image=name):
            log.warning(f"image.{result}", message=f"{name}: {reason}")

    def _fail_unplaceable(self) -> None:
        # Placement admits every image to some host, so this is a safety net.
        for name in list(self._pending):
            self._finish_unstarted(
                name, "failed", "no host may build it next to its bases"
            )
            self._failed = True

    def _start_ready(self) -> None:
        for name in list(self._pending):
            spec = self._plan.images[name]
            if any(base not in self._reports for base in spec.depends_on):
                continue
            host = self._choose_host(spec)
            if host is None:
                continue
            job = self._prepare(spec, host)
            self._pending.remove(name)
            self._running.add(name)
            self._free[host.name] -= 1
            self._group_host.setdefault(self._placement.group(name), host.name)
            thread = threading.Thread(
                target=self._work, args=(job,), name=f"bake-{name}", daemon=True
            )
            thread.start()

    def _choose_host(self, spec: ImageSpec) -> _Host | None:
        allowed = self._placement.allowed(spec.name)
        pinned = self._group_host.get(self._placement.group(spec.name))
        candidates = [
            host
            for host in self._hosts
            if host.name in allowed
            and self._free[host.name] > 0
            and (pinned is None or host.name == pinned)
        ]
        if not candidates:
            return None

        def rank(host: _Host) -> tuple[int, int, int]:
            bases_here = sum(
                self._reports[base].host == host.name for base in spec.depends_on
            )
            return (-bases_here, -self._free[host.name], host.index)

        return min(candidates, key=rank)

    def _prepare(self, spec: ImageSpec, host: _Host) -> _Job:
        """Set the build arguments and pull policy for the bases' locations."""
        build_args = dict(spec.build_args)
        pull = spec.pull
        notes: list[tuple[str, dict[str, Any]]] = []
        from_registry = False
        for base in spec.bases:
            report = self._reports[base.image]
            same_host = report.host == host.name
            wants_pull = pull in (PullPolicy.ALWAYS, PullPolicy.NEWER)
            if report.pushed and base.build_arg and (not same_host or wants_pull):
                pushed = report.pushed[0]
                reference = f"{_repository(pushed.ref)}@{pushed.digest}"
                build_args[base.build_arg] = reference
                from_registry = True
                notes.append(
                    (
                        "image.base_from_registry",
                        {
                            "base": base.image,
                            "base_host": report.host,
                            "build_arg": base.build_arg,
                            "ref": reference,
                        },
                    )
                )
            elif wants_pull:
                # The base exists only in this host's storage, so pulling it
                # from a registry would fail.
                pull = PullPolicy.MISSING
                notes.append(
                    (
                        "image.pull_policy_changed",
                        {
                            "policy": str(PullPolicy.MISSING),
                            "reason": f"{base.image} is in local storage only",
                        },
                    )
                )
        if from_registry and pull is PullPolicy.NEVER:
            pull = PullPolicy.MISSING
            notes.append(
                (
                    "image.pull_policy_changed",
                    {
                        "policy": str(PullPolicy.MISSING),
                        "reason": "a base built on another host must be pulled",
                    },
                )
            )
        options = BuildOptions(
            context=spec.context,
            containerfile=spec.containerfile,
            target=spec.target,
            tags=spec.tags,
            build_args=build_args,
            labels=dict(spec.labels),
            pull=pull,
            no_cache=spec.no_cache,
            platform=spec.platform,
            secrets=_image_secrets(self._plan.source, spec),
        )
        return _Job(spec, host, options, tuple(notes))

    def _work(self, job: _Job) -> None:
        spec, host = job.spec, job.host
        report = ImageReport(spec.name, result="failed", host=host.name, url=host.url)
        started = time.monotonic()
        try:
            with structlog.contextvars.bound_contextvars(
                image=spec.name, host=host.name
            ):
                self._build_one(job, report, started)
        except Exception as exc:
            # A bug, not a build failure: the main thread raises it at the end.
            report.error = f"{type(exc).__name__}: {exc}"
            report.exit_code = int(ExitCode.FAILED)
            self._crash = exc
        finally:
            if report.duration_s is None:
                report.duration_s = round(time.monotonic() - started, 3)
            with self._changed:
                self._reports[spec.name] = report
                self._running.discard(spec.name)
                self._free[host.name] += 1
                if report.result != "built":
                    self._failed = True
                self._changed.notify_all()

    def _build_one(self, job: _Job, report: ImageReport, started: float) -> None:
        spec, host = job.spec, job.host
        for event, fields in job.notes:
            log.warning(event, **fields)
        log.info(
            "image.started",
            url=host.url,
            depends_on=list(spec.depends_on),
            tags=list(spec.tags),
        )
        try:
            outcome = self._build_image(
                job.options, url=host.url, registry=self._registry, push=False
            )
            report.image_id = outcome.result.image_id
            report.tags = tuple(outcome.result.tags)
            if self._push and spec.push:
                report.pushed = self._push_images(
                    host.url, outcome.result.image_id, spec.push, self._registry
                )
        except BootcBuildError as exc:
            report.duration_s = round(time.monotonic() - started, 3)
            report.error = str(exc)
            report.exit_code = int(exc.exit_code)
            log.error("image.failed", duration_s=report.duration_s, **exc.log_fields())
            return
        report.result = "built"
        report.duration_s = round(time.monotonic() - started, 3)
        log.info(
            "image.finished",
            image_id=report.image_id,
            duration_s=report.duration_s,
            pushed=[image.as_dict() for image in report.pushed],
        )


def run_plan(
    plan: BakePlan,
    *,
    registry: RegistryOptions,
    push: bool,
    fail_fast: bool,
    build_image: BuildFunction = build,
    push_images: PushFunction = _push_to,
) -> list[ImageReport]:
    """Build every image of the plan and return one report per image, in plan order.

    ``build_image`` and ``push_images`` replace ``pipeline.build`` and the push
    step, for tests.

    Raises:
        InputError: the placement is impossible or a secret cannot be read;
            nothing was built.
        PodmanUnreachableError: a host did not respond; nothing was built.
    """
    placement = Placement(plan, push=push)
    _check_secrets(plan)
    with ExitStack() as stack:
        hosts = _connect_hosts(plan.hosts, stack)
        log.info(
            "bake.started",
            images=list(plan.images),
            hosts=[{"name": host.name, "url": host.url} for host in hosts],
            push=push,
        )
        reports = _Scheduler(
            plan,
            hosts,
            placement,
            registry=registry,
            push=push,
            fail_fast=fail_fast,
            build_image=build_image,
            push_images=push_images,
        ).run()
    built = [report.name for report in reports if report.result == "built"]
    log.info(
        "bake.finished",
        built=built,
        not_built=[report.name for report in reports if report.result != "built"],
    )
    return reports


def raise_for_failures(reports: Sequence[ImageReport]) -> None:
    """Raise BakeFailedError if any image was not built.

    Raises:
        BakeFailedError: with the exit code of the first failed image.
    """
    missed = [report for report in reports if report.result != "built"]
    if not missed:
        return
    failed = [report for report in missed if report.result == "failed"]
    exit_code = ExitCode(failed[0].exit_code if failed else ExitCode.FAILED)
    listed = ", ".join(f"{report.name} ({report.result})" for report in missed)
    raise BakeFailedError(
        f"{len(missed)} of {len(reports)} images were not built: {listed}",
        exit_code=exit_code,
    )


# --- Summary -----------------------------------------------------------------------


def summary_document(reports: Sequence[ImageReport]) -> dict[str, object]:
    return {
        "schema": SUMMARY_SCHEMA,
        "images": [report.as_dict() for report in reports],
    }


def _summary_rows(reports: Sequence[ImageReport]) -> Iterator[tuple[str, ...]]:
    yield ("IMAGE", "HOST", "RESULT", "DURATION", "PUSHED")
    for report in reports:
        duration = (
            f"{report.duration_s:.1f} s" if report.duration_s is not None else "-"
        )
        pushed = [f"{image.ref}@{image.digest}" for image in report.pushed] or ["-"]
        yield (report.name, report.host or "-", report.result, duration, pushed[0])
        for line in pushed[1:]:
            yield ("", "", "", "", line)


def format_summary(reports: Sequence[ImageReport]) -> str:
    """Render the reports as a table: one row per image, one line per push."""
    rows = list(_summary_rows(reports))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    for report in reports:
        if report.error:
            lines.append(f"{report.name}: {report.error.splitlines()[0]}")
    return "\n".join(lines)
