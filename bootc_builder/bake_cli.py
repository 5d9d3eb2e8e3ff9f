"""`bootc-build bake`: option wiring only; the work is in bakefile and bake.

cli.py imports this module on every start, so only typer and the standard
library load here; the plan and scheduler modules load inside the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from bootc_builder._entry import freeze_loaded_objects
from bootc_builder.config import LogFormat


def bake_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Images or groups to build [default: the default group].",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Plan file [default: ./bootc-build.toml, else the "
            "[tool.bootc-build] table of ./pyproject.toml].",
        ),
    ] = None,
    print_plan: Annotated[
        bool,
        typer.Option(
            "--print", help="Print the resolved plan as JSON and build nothing."
        ),
    ] = False,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Push each image to its push destinations [default: its tags] "
            "after it builds.",
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a plan key, IMAGE.KEY=VALUE or IMAGE.KEY+=VALUE; "
            "IMAGE may be a glob such as '*'; repeatable.",
        ),
    ] = None,
    fail_fast: Annotated[
        bool,
        typer.Option(
            "--fail-fast",
            help="Start no further image after the first failure; running "
            "builds finish.",
        ),
    ] = False,
    tls_verify: TlsVerifyOpt = True,
    authfile: AuthfileOpt = None,
    creds: CredsOpt = None,
    password_stdin: PasswordStdinOpt = False,
    retry: RetryOpt = 3,
    retry_delay: RetryDelayOpt = "2s",
    log_format: LogFormatOpt = LogFormat.AUTO,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the images of a plan file, in parallel, on one or more Podman hosts."""
    import json

    from bootc_builder.bake import (
        Placement,
        format_summary,
        raise_for_failures,
        run_plan,
        summary_document,
    )
    from bootc_builder.bakefile import load_plan
    from bootc_builder.cli import _print_json, _registry_options
    from bootc_builder.logs import configure_logging, redact

    freeze_loaded_objects()
    configure_logging(
        log_format,
        level=logging.WARNING if quiet else logging.DEBUG,
        context_vars=True,
    )
    plan = load_plan(config, names=names or (), overrides=overrides or ())
    if print_plan:
        Placement(plan, push=push)
        typer.echo(redact(json.dumps(plan.as_dict(push=push), indent=2)))
        return
    registry = _registry_options(
        tls_verify=tls_verify,
        authfile=authfile,
        creds=creds,
        password_stdin=password_stdin,
        retry=retry,
        retry_delay=retry_delay,
    )

    reports = run_plan(plan, registry=registry, push=push, fail_fast=fail_fast)

    if as_json:
        _print_json(summary_document(reports))
    else:
        typer.echo(format_summary(reports))
    raise_for_failures(reports)


# The shared option types come from cli.py, which imports this module at its
# end. This import comes after bake_command, so it works whichever of the two
# modules is imported first. Typer reads the annotations only when it parses
# the command line, and by then both modules are complete.
from bootc_builder.cli import (  # noqa: E402
    AuthfileOpt,
    CredsOpt,
    JsonOpt,
    LogFormatOpt,
    PasswordStdinOpt,
    QuietOpt,
    RetryDelayOpt,
    RetryOpt,
    TlsVerifyOpt,
)
