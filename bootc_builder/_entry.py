"""The program's entry point: handle --version before heavy imports.

``--version`` needs nothing but the version string. For every other command,
``rich`` cannot be imported until a terminal view calls ``allow_rich()``.
Typer, structlog and podman-py import rich when it is installed, for help,
tracebacks and pull progress bars that bootc-build does not use. Without it
they take their plain code paths. That saves about 80 ms of imports (rich,
markdown-it, pygments) on every run without a live view, measured on
``bootc-build build`` with bad input. Help also keeps literal brackets such
as ``[default: ...]`` intact.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

from bootc_builder import __version__


def main() -> NoReturn:
    """Run bootc-build with the process's command line."""
    arguments = sys.argv[1:]
    if arguments == ["--version"]:
        print(f"bootc-build {__version__}")
        sys.exit(0)
    # A None entry in sys.modules makes `import rich` raise ImportError.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from bootc_builder.cli import main as run

    run()


def allow_rich() -> None:
    """Make rich importable again, for the live view and the summary table."""
    if "rich" in sys.modules and sys.modules["rich"] is None:
        del sys.modules["rich"]


def freeze_loaded_objects() -> None:
    """Exclude the objects made so far, modules included, from garbage collection.

    Commands call this once their imports are done. Those objects live until
    the process exits, and every full collection walks them again, during the
    build and at exit. On a build printing 200,000 lines, freezing them cut
    the wall time by about 0.1 s (1.12 s to 1.03 s, mean of 10 runs).
    """
    gc.freeze()
