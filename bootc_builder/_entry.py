"""The program's entry point: handle --version and --help before heavy imports.

``--version`` needs nothing but the version string. For help, ``rich`` is made
unimportable before Typer loads: Typer then prints plain click help, which
skips importing rich and keeps literal brackets such as ``[default: ...]``
intact.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from bootc_builder import __version__


def main() -> NoReturn:
    """Run bootc-build with the process's command line."""
    arguments = sys.argv[1:]
    if arguments == ["--version"]:
        print(f"bootc-build {__version__}")
        sys.exit(0)
    if not arguments or "--help" in arguments:
        # A None entry in sys.modules makes `import rich` raise ImportError.
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from bootc_builder.cli import main as run

    run()
