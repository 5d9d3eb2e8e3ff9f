"""The build as a list of named steps, each of which may end the run with an error.

1. ``load_containerfile``: read and check the Containerfile, expand ARGs.
2. ``select_target``: find the target stage and the stages it needs.
3. ``pack_context``: check the context and prepare the streamed archive.
4. ``open_connection``: find or start a Podman service.
5. ``pull_bases``: pull the bases of the needed stages, with retries.
6. ``run_build``: send the build, follow its stream, log per stage.
7. ``push_image``: with ``--push``, push every tag and read back its digest.

Steps 1 to 3 run before anything is sent to Podman, so bad input fails fast.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from bootc_builder.buildstream import BuildMonitor, BuildResult, StageRecord
from bootc_builder.config import BuildOptions, ImageFormat, PullPolicy, SecretSpec
from bootc_builder.connection import open_connection
from bootc_builder.containerfile import Containerfile, Stage, read_containerfile
from bootc_builder.context import ContextArchive
from bootc_builder.errors import (
    ContextError,
    InputError,
    Interrupted,
    PodmanUnreachableError,
    StepFailedError,
)
from bootc_builder.fingerprint import fingerprint_build, recall, remember
from bootc_builder.logs import register_secret
from bootc_builder.podman_api import PodmanConnection, QueryParams
from bootc_builder.push import PushedImage, RegistryOptions, pull_bases, push_image
from bootc_builder.stages import needed_stages, resolve_target
from bootc_builder.summary import BuildSummary, summarize

log = structlog.get_logger("bootc_builder")

_MANIFEST_TYPES = {
    ImageFormat.OCI: "application/vnd.oci.image.manifest.v1+json",
    ImageFormat.DOCKER: "application/vnd.docker.distribution.manifest.v2+json",
}
# buildah's names for the pull policies of `podman build --pull`.
_PULL_POLICIES = {
    PullPolicy.ALWAYS: "always",
    PullPolicy.MISSING: "missing",
    PullPolicy.NEVER: "never",
    PullPolicy.NEWER: "ifnewer",
}


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """The result of the checks before a build: the stages and the context."""

    containerfile: Containerfile
    target: Stage
    needed: list[int]
    archive: ContextArchive
    # Values for the ``secrets`` parameter: id and name inside the archive.
    secrets: tuple[str, ...] = ()


def load_containerfile(options: BuildOptions) -> Containerfile:
    return read_containerfile(options.containerfile, options.build_args)


def select_target(
    containerfile: Containerfile, target: str | None
) -> tuple[Stage, list[int]]:
    stage = resolve_target(containerfile, target)
    return stage, needed_stages(containerfile, stage)


def pack_context(options: BuildOptions) -> ContextArchive:
    return ContextArchive(options.context, options.containerfile)


def plan_build(options: BuildOptions) -> BuildPlan:
    """Run every check that needs no Podman service.

    Raises:
        InputError: the Containerfile, the target or the context is invalid.
    """
    if not options.context.exists():
        raise ContextError(
            f"build context {str(options.context)!r} not found; "
            "pass an existing directory as CONTEXT"
        )
    if not options.context.is_dir():
        raise ContextError(
            f"build context {str(options.context)!r} is not a directory; "
            "pass a directory as CONTEXT"
        )
    containerfile = load_containerfile(options)
    target, needed = select_target(containerfile, options.target)
    archive = pack_context(options)
    secrets = tuple(
        f"id={secret.id},src={archive.add_secret(read_secret(secret))}"
        for secret in options.secrets
    )
    return BuildPlan(containerfile, target, needed, archive, secrets)


def read_secret(secret: SecretSpec) -> bytes:
    """Read a secret's value and register it for redaction from every output.

    Raises:
        InputError: the file cannot be read.
    """
    if secret.env is not None:
        content = os.environ[secret.env].encode()
    else:
        assert secret.source is not None
        try:
            content = secret.source.read_bytes()
        except OSError as exc:
            raise InputError(
                f"--secret {secret.id}: cannot read {str(secret.source)!r}: "
                f"{exc.strerror or exc}"
            ) from None
    text = content.decode("utf-8", "replace")
    register_secret(text.strip())
    for line in text.splitlines():
        register_secret(line.strip())
    return content


def build_query(options: BuildOptions, plan: BuildPlan) -> QueryParams:
    """Translate the options into libpod build query parameters."""
    params: QueryParams = [
        ("dockerfile", json.dumps([plan.archive.containerfile_name])),
        # The libpod endpoint defaults to no layer cache; podman build uses it.
        ("layers", "true"),
        # Podman 4.3 leaves the working container of a failed step behind
        # unless asked to remove it.
        ("rm", "true"),
        ("forcerm", "true"),
        ("pullpolicy", _PULL_POLICIES[options.pull]),
        # Podman 4.3 finds no cached layer when the format is left empty, so
        # it is always sent; oci is what `podman build` uses by default.
        ("outputformat", _MANIFEST_TYPES[options.image_format]),
    ]
    if options.target is not None:
        params.append(("target", options.target))
    params.extend(("t", tag) for tag in options.tags)
    if options.build_args:
        params.append(("buildargs", json.dumps(options.build_args)))
    if options.labels:
        params.append(("labels", json.dumps(options.labels)))
    if options.no_cache:
        params.append(("nocache", "true"))
    if options.platform:
        params.append(("platform", options.platform))
    if plan.secrets:
        params.append(("secrets", json.dumps(list(plan.secrets))))
    return params


def remove_new_containers(
    connection: PodmanConnection, known: set[str], *, settle_s: float = 3.0
) -> None:
    """Remove storage containers that appeared since ``known`` was listed.

    The service needs a moment to notice the cancelled build, so the list is
    read again until it stops growing or ``settle_s`` has passed.
    """
    deadline = time.monotonic() + settle_s
    removed: set[str] = set()
    while True:
        leftovers = connection.storage_container_ids() - known - removed
        for container_id in leftovers:
            connection.remove_container(container_id)
            log.info("container.removed", container=container_id[:12])
        removed |= leftovers
        if time.monotonic() >= deadline or (removed and not leftovers):
            return
        time.sleep(0.2)


def run_build(
    connection: PodmanConnection,
    options: BuildOptions,
    plan: BuildPlan,
    *,
    registry_headers: dict[str, str] | None = None,
) -> BuildResult:
    """Send the build and follow its stream until the image is built.

    Raises:
        BuildFailedError: a step failed or the stream ended without an image.
        PodmanUnreachableError: the service went away during the build.
    """
    monitor = BuildMonitor(
        plan.containerfile, plan.target, log, podman_command=connection.podman_command
    )
    log.info(
        "build.started",
        target=plan.target.label,
        needed=[plan.containerfile.stages[i].label for i in plan.needed],
        needed_index=plan.needed,
        url=connection.url,
    )
    known_containers = connection.storage_container_ids()
    stream = connection.build(
        build_query(options, plan), plan.archive.chunks(), headers=registry_headers
    )
    try:
        for message in stream:
            monitor.feed(message)
    except PodmanUnreachableError as exc:
        current = monitor.current_stage
        during = f" during stage {current.label}" if current is not None else ""
        raise PodmanUnreachableError(f"{exc}{during}") from exc
    except Interrupted:
        # Closing the stream makes the service cancel the build, but Podman
        # 4.3 then leaves the build's working containers in storage.
        stream.close()
        remove_new_containers(connection, known_containers)
        raise
    # "Successfully tagged" lines name every tag the image has, older ones
    # included; the result reports the tags this build asked for.
    result = replace(monitor.finish(), tags=options.tags)
    log.info(
        "build.finished",
        image_id=result.image_id,
        tags=list(result.tags),
        duration_s=result.duration_s,
        context_files=plan.archive.files,
        context_bytes=plan.archive.bytes,
    )
    return result


def reuse_image(
    connection: PodmanConnection, options: BuildOptions, plan: BuildPlan, digest: str
) -> BuildResult | None:
    """Return the image built earlier from the same inputs as this build's result.

    The image gets the requested tags, and each needed stage is reported as
    cached. Returns None when no such image exists.
    """
    recorded = recall(digest)
    # An image id is the digest of the image's configuration, so an image that
    # still has the recorded id is the one that build produced.
    if recorded is None or connection.image_id(recorded) is None:
        return None
    started = time.monotonic()
    image_id = recorded
    stages = plan.containerfile.stages
    log.info(
        "build.started",
        target=plan.target.label,
        needed=[stages[i].label for i in plan.needed],
        needed_index=plan.needed,
        url=connection.url,
    )
    for tag in options.tags:
        connection.tag_image(image_id, tag)
    records = []
    for index in plan.needed:
        stage = stages[index]
        total = len(stage.instructions)
        record = StageRecord(
            index=index,
            label=stage.label,
            total_steps=total,
            started_at=started,
            finished_at=started,
            steps=total,
            cached_steps=total - 1,
            status="cached",
        )
        stage_log = log.bind(stage=stage.label, stage_index=index)
        stage_log.info("stage.started", steps=total)
        stage_log.info(
            "stage.finished",
            status="cached",
            duration_s=0.0,
            steps=total,
            cached_steps=total - 1,
        )
        records.append(record)
    duration = round(time.monotonic() - started, 3)
    log.info("build.reused", image_id=image_id, inputs=digest)
    log.info(
        "build.finished",
        image_id=image_id,
        tags=list(options.tags),
        duration_s=duration,
        reused=True,
    )
    return BuildResult(image_id, options.tags, duration, tuple(records))


def external_bases(plan: BuildPlan) -> list[str]:
    """List the base images of the needed stages that are neither stages nor scratch."""
    stages = plan.containerfile.stages
    bases: list[str] = []
    for index in plan.needed:
        stage = stages[index]
        earlier = {s.name for s in stages[:index] if s.name} | {
            str(s.index) for s in stages[:index]
        }
        if stage.base in earlier or stage.base == "scratch" or stage.base in bases:
            continue
        bases.append(stage.base)
    return bases


@dataclass(frozen=True, slots=True)
class BuildOutcome:
    """A successful build and, with ``--push``, where it went."""

    result: BuildResult
    pushed: list[PushedImage]
    # None only where a caller builds an outcome without a service, in tests.
    summary: BuildSummary | None = None


# Called while the connection is still open, with the service's URL, so a
# shell can be opened on a private service before it stops.
StepFailureHook = Callable[[StepFailedError, str], None]
SuccessHook = Callable[[BuildResult, str], None]


def build(
    options: BuildOptions,
    *,
    url: str | None,
    registry: RegistryOptions,
    push: bool = False,
    on_step_failure: StepFailureHook | None = None,
    on_success: SuccessHook | None = None,
) -> BuildOutcome:
    """Check the input, connect to Podman, pull bases, build, and push if asked.

    Raises:
        InputError, PodmanUnreachableError, RegistryError, BuildFailedError.
    """
    plan = plan_build(options)
    with open_connection(url) as connection:
        pulled = pull_bases(
            connection,
            external_bases(plan),
            options.pull,
            registry,
            platform=options.platform,
        )
        if pulled:
            # The bases are in place; a second pull inside the build would
            # run without the retries above.
            options = replace(options, pull=PullPolicy.MISSING)
        fingerprint = fingerprint_build(
            connection,
            options,
            plan.containerfile,
            plan.needed,
            plan.archive,
            external_bases(plan),
        )
        result = None
        if fingerprint.digest is not None:
            result = reuse_image(connection, options, plan, fingerprint.digest)
        else:
            log.debug("build.fingerprint_skipped", reason=fingerprint.reason)
        try:
            if result is None:
                result = run_build(
                    connection, options, plan, registry_headers=registry.auth.header()
                )
                if fingerprint.digest is not None:
                    remember(fingerprint.digest, result.image_id)
        except StepFailedError as error:
            if on_step_failure is not None:
                on_step_failure(error, connection.url)
            raise
        if on_success is not None:
            on_success(result, connection.url)
        pushed: list[PushedImage] = []
        if push:
            pushed = push_image(connection, result.image_id, options.tags, registry)
        # Sizes are read while the connection, maybe to a private service, is open.
        summary = summarize(
            result, connection.image_size, target=options.target, pushed=pushed
        )
        return BuildOutcome(result, pushed, summary)
