"""The command-line interface: option wiring only; the work is in pipeline and stages.

Exceptions become exit codes in ``main`` and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer

from bootc_builder import __version__
from bootc_builder.config import ImageFormat, LogFormat, PullPolicy
from bootc_builder.errors import BootcBuildError, ExitCode, StepFailedError

if TYPE_CHECKING:
    from bootc_builder.containerfile import Containerfile, Stage

app = typer.Typer(
    name="bootc-build",
    help="Build bootc images from multi-stage Containerfiles through the Podman API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Podman service URL (unix://, tcp://, ssh://) [default: "
            "CONTAINER_HOST, else the default sockets, else a private service].",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="auto: console on a terminal, JSON lines otherwise.",
        ),
    ] = LogFormat.AUTO,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Log only warnings and errors.")
    ] = False,
) -> None:
    """Build an image; the image id is printed on stdout."""
    from bootc_builder.config import (
        BuildOptions,
        parse_key_values,
        validate_image_reference,
    )
    from bootc_builder.logs import configure_logging

    configure_logging(log_format, level=logging.WARNING if quiet else logging.DEBUG)
    options = BuildOptions(
        context=context,
        containerfile=_default_containerfile(context, file),
        target=target,
        tags=tuple(validate_image_reference(t) for t in tag or ()),
        build_args=parse_key_values(build_arg or (), option="--build-arg"),
        labels=parse_key_values(label or (), option="--label"),
        pull=pull,
        no_cache=no_cache,
        platform=platform,
        image_format=image_format,
    )
    from bootc_builder.pipeline import build as run

    result = run(options, url=url)
    typer.echo(result.image_id)


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


def _report_failure(exc: BootcBuildError) -> None:
    import structlog

    log = structlog.get_logger("bootc_builder")
    if isinstance(exc, StepFailedError):
        log.error(
            "build.failed",
            message=str(exc),
            stage=exc.stage,
            step=exc.step,
            instruction=exc.instruction,
            containerfile_line=exc.line,
            exit_status=exc.exit_status,
            last_layer=exc.last_layer,
            exit_code=int(exc.exit_code),
        )
        return
    log.error(
        "command.failed",
        message=str(exc),
        error=type(exc).__name__,
        exit_code=int(exc.exit_code),
    )


def main() -> NoReturn:
    """Run the CLI and turn every outcome into an exit code."""
    try:
        app(standalone_mode=False)
    except BootcBuildError as exc:
        _ensure_logging()
        _report_failure(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        print(f"error: {_usage_message(exc)}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)
    sys.exit(ExitCode.OK)


def _usage_message(exc: click.ClickException) -> str:
    """Put a usage error on one line, with where to find the right usage."""
    message = " ".join(exc.format_message().split())
    context = getattr(exc, "ctx", None)
    if context is not None:
        message += f" (see `{context.command_path} --help`)"
    return message


def _ensure_logging() -> None:
    import structlog

    if not structlog.is_configured():
        from bootc_builder.logs import configure_logging

        # Commands that log nothing else, like `stages`, report errors as
        # plain lines whatever stderr is.
        configure_logging(LogFormat.CONSOLE, level=logging.INFO)
