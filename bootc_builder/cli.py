"""The command-line interface: option wiring only; the work is in pipeline and push.

Exceptions become exit codes in ``main`` and nowhere else. Heavy modules are
imported inside the commands so that ``--version`` and ``--help`` start fast.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer

from bootc_builder import __version__
from bootc_builder._entry import freeze_loaded_objects
from bootc_builder.config import ImageFormat, LogFormat, PullPolicy
from bootc_builder.errors import (
    BootcBuildError,
    ExitCode,
    InputError,
    Interrupted,
    StepFailedError,
)

if TYPE_CHECKING:
    from bootc_builder.buildstream import BuildResult
    from bootc_builder.containerfile import Containerfile, Stage
    from bootc_builder.pipeline import BuildOutcome
    from bootc_builder.progress import BuildOutput
    from bootc_builder.push import PushedImage, RegistryOptions

app = typer.Typer(
    name="bootc-build",
    help="Build bootc images from multi-stage Containerfiles through the Podman API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts contain literal brackets ([default: ...], OS/ARCH[/VARIANT])
    # that rich markup would swallow or reject; help is printed without rich.
    rich_markup_mode=None,
)

RESULT_SCHEMA = 1

ContextArg = Annotated[
    Path,
    typer.Argument(help="Build context directory.", show_default=True),
]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="Containerfile to build [default: CONTEXT/Containerfile, "
        "else CONTEXT/Dockerfile].",
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="Stop at this stage [default: the last].")
]
BuildArgOpt = Annotated[
    list[str] | None,
    typer.Option("--build-arg", help="Build argument KEY=VALUE; repeatable."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Podman service URL (unix://, tcp://, ssh://) [default: "
        "CONTAINER_HOST, else the default sockets, else a private service].",
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format", help="auto: console on a terminal, JSON lines otherwise."
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Log only warnings and errors.")
]
BuildQuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Show only warnings, errors and the result: no live view, no "
        "output lines, no summary.",
    ),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Print every output line, above the live view on a terminal.",
    ),
]
ProgressOpt = Annotated[
    str,
    typer.Option(
        "--progress",
        click_type=click.Choice(["auto", "tty", "plain"]),
        help="tty: a live view of the stages; plain: each output line with its "
        "stage; auto: tty on a terminal outside CI, else plain, with folded "
        "stages on GitHub Actions and GitLab CI.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
]
TlsVerifyOpt = Annotated[
    bool,
    typer.Option(
        "--tls-verify/--no-tls-verify",
        help="Require HTTPS and verify registry certificates.",
    ),
]
AuthfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--authfile",
        help="Registry auth file [default: REGISTRY_AUTH_FILE, else "
        "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
        "~/.docker/config.json].",
    ),
]
CredsOpt = Annotated[
    str | None,
    typer.Option("--creds", help="Registry credentials USER[:PASSWORD]."),
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the registry password from stdin."),
]
RetryOpt = Annotated[
    int,
    typer.Option(
        "--retry", min=0, max=100, help="Retries after a transient registry failure."
    ),
]
RetryDelayOpt = Annotated[
    str,
    typer.Option(
        "--retry-delay",
        help="First wait before a retry (500ms, 2s, 1m); later waits double, "
        "with jitter, within 10 minutes in all.",
    ),
]
DigestfileOpt = Annotated[
    Path | None,
    typer.Option("--digestfile", help="Write the pushed digest to this file."),
]
PushFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        click_type=click.Choice(["oci", "v2s2"]),
        help="Manifest format to push [default: the image's own].",
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bootc-build {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version.",
        ),
    ] = False,
) -> None:
    """Build bootc images from multi-stage Containerfiles through the Podman API."""


def _default_containerfile(context: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for name in ("Containerfile", "Dockerfile"):
        if (context / name).exists():
            return context / name
    return context / "Containerfile"


def _registry_options(
    *,
    tls_verify: bool,
    authfile: Path | None,
    creds: str | None,
    password_stdin: bool,
    retry: int,
    retry_delay: str,
) -> RegistryOptions:
    from bootc_builder.credentials import resolve_auth
    from bootc_builder.push import RegistryOptions
    from bootc_builder.retry import RetryPolicy, parse_duration

    try:
        first_delay = parse_duration(retry_delay)
    except ValueError as exc:
        raise InputError(f"invalid --retry-delay: {exc}") from None
    password = _read_password_stdin() if password_stdin else None
    auth = resolve_auth(creds=creds, password_stdin=password, authfile=authfile)
    return RegistryOptions(
        tls_verify=tls_verify,
        auth=auth,
        retry=RetryPolicy(retries=retry, first_delay=first_delay),
    )


def _read_password_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("--password-stdin needs the password piped on stdin")
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise InputError("--password-stdin read an empty password")
    return password


def _pushed_lines(pushed: list[PushedImage]) -> list[str]:
    return [f"{image.ref}@{image.digest}" for image in pushed]


@app.command()
def build(
    context: ContextArg = Path("."),
    file: FileOpt = None,
    target: TargetOpt = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Name the image NAME[:TAG]; repeatable."),
    ] = None,
    build_arg: BuildArgOpt = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Image label KEY=VALUE; repeatable."),
    ] = None,
    pull: Annotated[
        PullPolicy, typer.Option("--pull", help="When to pull base images.")
    ] = PullPolicy.MISSING,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not use cached layers.")
    ] = False,
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Target platform OS/ARCH[/VARIANT]."),
    ] = None,
    image_format: Annotated[
        ImageFormat, typer.Option("--format", help="Manifest format of the image.")
    ] = ImageFormat.OCI,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="Build secret id=ID,src=PATH or id=ID,env=VAR for "
            "RUN --mount=type=secret; repeatable. Never stored in the image.",
        ),
    ] = None,
    push: Annotated[
        bool, typer.Option("--push", help="Push every --tag after a successful build.")
    ] = False,
    tls_verify: TlsVerifyOpt = True,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    password_stdin: PasswordStdinOpt = False,
    retry: RetryOpt = 3,
    retry_delay: RetryDelayOpt = "2s",
    digestfile: DigestfileOpt = None,
    on_failure: Annotated[
        str,
        typer.Option(
            "--on-failure",
            click_type=click.Choice(["none", "shell"]),
            help="shell: when a RUN step fails, open a shell in the last layer "
            "that built (on a terminal), or print the command that does.",
        ),
    ] = "none",
    iidfile: Annotated[
        Path | None,
        typer.Option(
            "--iidfile", help="Write the image id, as sha256:ID, to this file."
        ),
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            help="Copy the whole output, as [stage] lines, to this file. Without "
            "it, the output of a failed build is saved to a temporary file.",
        ),
    ] = None,
    url: UrlOpt = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
    progress: ProgressOpt = "auto",
    verbose: VerboseOpt = False,
    quiet: BuildQuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build an image; the image id is printed on stdout."""
    from bootc_builder.config import (
        BuildOptions,
        parse_key_values,
        parse_secret,
        validate_image_reference,
        validate_platform,
    )
    from bootc_builder.logs import configure_logging
    from bootc_builder.pipeline import build as run_build
    from bootc_builder.progress import ProgressMode, choose_style, open_build_output
    from bootc_builder.push import check_digestfile

    freeze_loaded_objects()
    if quiet and verbose:
        raise InputError("--quiet and --verbose cannot be used together")
    style = choose_style(
        log_format, ProgressMode(progress), stream=sys.stderr, env=os.environ
    )
    output = open_build_output(style, verbose=verbose, quiet=quiet, log_file=log_file)
    configure_logging(output.log_format, output=output)
    try:
        if push and not tag:
            raise InputError("--push needs at least one --tag to push to")
        if digestfile is not None and not push:
            raise InputError("--digestfile needs --push")
        if digestfile is not None:
            check_digestfile(digestfile)
        options = BuildOptions(
            context=context,
            containerfile=_default_containerfile(context, file),
            target=target,
            tags=tuple(validate_image_reference(t) for t in tag or ()),
            build_args=parse_key_values(build_arg or (), option="--build-arg"),
            labels=parse_key_values(label or (), option="--label"),
            pull=pull,
            no_cache=no_cache,
            platform=validate_platform(platform) if platform else None,
            image_format=image_format,
            secrets=tuple(parse_secret(value) for value in secret or ()),
        )
        registry = _registry_options(
            tls_verify=tls_verify,
            authfile=authfile,
            creds=creds,
            password_stdin=password_stdin,
            retry=retry,
            retry_delay=retry_delay,
        )

        on_step_failure = None
        if on_failure == "shell":
            from bootc_builder.debug import shell_after_failure

            def on_step_failure(error: StepFailedError, service_url: str) -> None:
                # The live view must leave the terminal before a shell opens on it.
                output.close(error)
                shell_after_failure(
                    error, url=service_url, build_args=options.build_args
                )

        outcome = run_build(
            options,
            url=url,
            registry=registry,
            push=push,
            on_step_failure=on_step_failure,
        )
    except BootcBuildError as exc:
        _finish_failed_build(output, exc, target=target, as_json=as_json)
        raise typer.Exit(int(exc.exit_code)) from None
    except BaseException as exc:
        # Interrupted, or a bug: the live view leaves the terminal, the log stays.
        output.close(exc)
        _announce_saved_log(output.finish(success=False))
        raise
    output.close()
    output.finish(success=True)
    _finish_built(
        outcome, output, iidfile=iidfile, digestfile=digestfile, as_json=as_json
    )


def _finish_built(
    outcome: BuildOutcome,
    output: BuildOutput,
    *,
    iidfile: Path | None,
    digestfile: Path | None,
    as_json: bool,
) -> None:
    """Write the result files, the summary and the result of a successful build."""
    from bootc_builder.logs import use_colour
    from bootc_builder.progress import OutputStyle
    from bootc_builder.push import write_digestfile
    from bootc_builder.summary import (
        append_step_summary,
        render_text,
        result_document,
        write_iidfile,
    )

    if iidfile is not None:
        write_iidfile(iidfile, outcome.result.image_id)
    if digestfile is not None:
        write_digestfile(digestfile, outcome.pushed)
    summary = outcome.summary
    assert summary is not None
    append_step_summary(summary)
    if not output.quiet and output.style is not OutputStyle.JSON:
        print(render_text(summary, colour=use_colour(sys.stderr)), file=sys.stderr)
    if as_json:
        _print_json(result_document(summary))
        return
    typer.echo(outcome.result.image_id)
    for line in _pushed_lines(outcome.pushed):
        typer.echo(line)


def _finish_failed_build(
    output: BuildOutput, error: BootcBuildError, *, target: str | None, as_json: bool
) -> None:
    """Report a failed build, with its summary, JSON result and saved log."""
    from bootc_builder.summary import (
        append_step_summary,
        result_document,
        summarize_failure,
    )

    output.close(error)
    _report_failure(error)
    # Errors before the build was sent, such as bad input, have no stages.
    if output.board.started_at is not None:
        summary = summarize_failure(
            error,
            stages=output.board.records(),
            unstarted=output.board.unstarted(),
            target=target,
        )
        append_step_summary(summary)
        if as_json:
            _print_json(result_document(summary))
    _announce_saved_log(output.finish(success=False))


def _announce_saved_log(path: Path | None) -> None:
    if path is not None:
        from bootc_builder.buildlog import saved_log_notice

        print(saved_log_notice(path), file=sys.stderr)


@app.command(name="push")
def push_command(
    image: Annotated[str, typer.Argument(help="Local image to push.")],
    destinations: Annotated[
        list[str] | None,
        typer.Argument(help="Where to push [default: the image's own name]."),
    ] = None,
    tls_verify: TlsVerifyOpt = True,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    password_stdin: PasswordStdinOpt = False,
    manifest_format: PushFormatOpt = None,
    digestfile: DigestfileOpt = None,
    retry: RetryOpt = 3,
    retry_delay: RetryDelayOpt = "2s",
    url: UrlOpt = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Push a local image to registries; prints REF@DIGEST for each destination."""
    from bootc_builder.config import validate_image_reference
    from bootc_builder.connection import open_connection
    from bootc_builder.logs import configure_logging
    from bootc_builder.push import check_digestfile, push_image, write_digestfile

    freeze_loaded_objects()
    configure_logging(log_format, level=logging.WARNING if quiet else logging.INFO)
    if digestfile is not None:
        check_digestfile(digestfile)
    targets = [
        validate_image_reference(d, option="DESTINATION") for d in destinations or ()
    ] or [validate_image_reference(image, option="IMAGE")]
    registry = _registry_options(
        tls_verify=tls_verify,
        authfile=authfile,
        creds=creds,
        password_stdin=password_stdin,
        retry=retry,
        retry_delay=retry_delay,
    )

    with open_connection(url) as connection:
        if not connection.image_exists(image):
            raise InputError(
                f"image {image!r} not found in the Podman service's storage"
            )
        pushed = push_image(
            connection, image, targets, registry, manifest_format=manifest_format
        )

    if digestfile is not None:
        write_digestfile(digestfile, pushed)
    if as_json:
        _print_json(
            {"schema": RESULT_SCHEMA, "pushed": [item.as_dict() for item in pushed]}
        )
        return
    for line in _pushed_lines(pushed):
        typer.echo(line)


@app.command()
def debug(
    context: ContextArg = Path("."),
    file: FileOpt = None,
    stage: Annotated[
        str, typer.Option("--stage", help="Stage to open a shell in (name or index).")
    ] = "",
    step: Annotated[
        int | None,
        typer.Option(
            "--step",
            help="Stop before this step of the stage (2 or more; 1 is its FROM) "
            "[default: after the last step].",
        ),
    ] = None,
    build_arg: BuildArgOpt = None,
    url: UrlOpt = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
) -> None:
    """Build up to a step of a stage, using the cache, and open a shell there."""
    from bootc_builder.config import BuildOptions, parse_key_values
    from bootc_builder.containerfile import read_containerfile
    from bootc_builder.debug import (
        open_shell,
        shell_command,
        truncated_containerfile,
        write_temporary_containerfile,
    )
    from bootc_builder.logs import configure_logging
    from bootc_builder.pipeline import build as run_build
    from bootc_builder.push import RegistryOptions
    from bootc_builder.stages import resolve_target

    freeze_loaded_objects()
    configure_logging(log_format, level=logging.INFO)
    if not stage:
        raise InputError("debug needs --stage NAME: the stage to open a shell in")
    build_args = parse_key_values(build_arg or (), option="--build-arg")
    source = _default_containerfile(context, file)
    containerfile = read_containerfile(source, build_args)
    chosen = resolve_target(containerfile, stage)
    text = truncated_containerfile(containerfile, source, chosen, step)
    temporary = write_temporary_containerfile(text)

    def open_here(result: BuildResult, service_url: str) -> None:
        command = shell_command(service_url, result.image_id, build_args=build_args)
        if not sys.stdin.isatty():
            print("stdin is not a terminal; open the shell with:", file=sys.stderr)
            print("  " + " ".join(command), file=sys.stderr)
            return
        open_shell(command)

    try:
        options = BuildOptions(
            context=context,
            containerfile=temporary,
            target=chosen.name or str(chosen.index),
            build_args=build_args,
        )
        run_build(options, url=url, registry=RegistryOptions(), on_success=open_here)
    finally:
        temporary.unlink(missing_ok=True)


@app.command()
def stages(
    context: ContextArg = Path("."),
    file: FileOpt = None,
    target: TargetOpt = None,
    build_arg: BuildArgOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.")
    ] = False,
) -> None:
    """List the stages, what each depends on, and what the target needs."""
    from bootc_builder.config import parse_key_values
    from bootc_builder.containerfile import read_containerfile
    from bootc_builder.stages import needed_stages, resolve_target, stages_report

    build_args = parse_key_values(build_arg or (), option="--build-arg")
    containerfile = read_containerfile(
        _default_containerfile(context, file), build_args
    )
    chosen = resolve_target(containerfile, target)
    if as_json:
        typer.echo(json.dumps(stages_report(containerfile, chosen)))
        return
    typer.echo(
        _format_stages(containerfile, chosen, needed_stages(containerfile, chosen))
    )


def _format_stages(
    containerfile: Containerfile, target: Stage, needed: list[int]
) -> str:
    """Render the stages as a table, marking with * those the target needs."""
    labels = {stage.index: stage.label for stage in containerfile.stages}
    header = ("  #", "NAME", "BASE", "DEPENDS ON")
    rows = [header]
    for stage in containerfile.stages:
        marker = "*" if stage.index in needed else " "
        depends = ", ".join(labels[i] for i in stage.depends_on) or "-"
        rows.append((f"{marker} {stage.index}", stage.name or "-", stage.base, depends))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
    order = " -> ".join(labels[i] for i in needed)
    lines.append(f"target {target.label} needs, in build order: {order}")
    return "\n".join(lines)


def _print_json(document: dict[str, object]) -> None:
    from bootc_builder.logs import redact

    typer.echo(redact(json.dumps(document)))


def _report_failure(exc: BootcBuildError) -> None:
    import structlog

    log = structlog.get_logger("bootc_builder")
    event = "build.failed" if isinstance(exc, StepFailedError) else "command.failed"
    log.error(event, **exc.log_fields())


def _install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into Interrupted; a second signal exits at once."""
    received: list[int] = []

    def handle(signal_number: int, _frame: object) -> None:
        if received:
            os._exit(128 + received[0])
        received.append(signal_number)
        raise Interrupted(signal_number)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def main() -> NoReturn:
    """Run the CLI and turn every outcome into an exit code."""
    _install_signal_handlers()
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:
        print(
            f"error: interrupted by signal {exc.signal_number}; stopped",
            file=sys.stderr,
        )
        sys.exit(exc.exit_code)
    except BootcBuildError as exc:
        _ensure_logging()
        _report_failure(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        print(f"error: {_usage_message(exc)}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    # Typer returns the code of an early exit, such as --version's, in
    # non-standalone mode instead of raising it.
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _usage_message(exc: click.ClickException) -> str:
    """Put a usage error on one line, with where to find the right usage."""
    text = re.sub(r"(\w) (Did you mean)", r"\1. \2", exc.format_message())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = " ".join(
        line
        if line.endswith((".", "?", "!", ":")) or index == len(lines) - 1
        else line + "."
        for index, line in enumerate(lines)
    )
    context = getattr(exc, "ctx", None)
    if context is not None:
        message += f" (see `{context.command_path} --help`)"
    else:
        # click raises some option errors, such as a missing value, without
        # a context; the command then comes from the command line.
        commands = getattr(typer.main.get_command(app), "commands", {})
        word = sys.argv[1] if len(sys.argv) > 1 else ""
        path = f"bootc-build {word}" if word in commands else "bootc-build"
        message += f" (see `{path} --help`)"
    return message


def _ensure_logging() -> None:
    import structlog

    if not structlog.is_configured():
        from bootc_builder.logs import configure_logging

        # Commands that log nothing else, like `stages`, report errors as
        # plain lines whatever stderr is.
        configure_logging(LogFormat.CONSOLE, level=logging.INFO)


from bootc_builder.bake_cli import bake_command  # noqa: E402

app.command(name="bake")(bake_command)
