"""Stage cases: Containerfiles with the stage graph that each run must produce.

Each ``NAME.Containerfile`` comes with ``NAME.expected.json``, a list of runs. A
run gives ``build_args`` and ``target`` and expects either a result (``stages``,
``needed``) or an error (``error`` and optionally ``suggest``). In ``stages``, the
index, name and depends_on (in any order) of each stage must match, and base only
where it is given. ``needed`` must match exactly.

The cases are read from the copy in ``tests/cases/stages`` and, when that is
missing, from ``shared/cases/stages`` next to the repository. Missing cases fail
the test run instead of skipping it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bootc_builder.containerfile import read_containerfile
from bootc_builder.errors import ExitCode, InputError
from bootc_builder.stages import resolve_target, stages_report

REPO = Path(__file__).resolve().parents[2]
CASE_DIRS = (
    REPO / "tests" / "cases" / "stages",
    REPO.parent / "shared" / "cases" / "stages",
)


def find_case_dir() -> Path | None:
    for directory in CASE_DIRS:
        if any(directory.glob("*.expected.json")):
            return directory
    return None


def load_runs() -> list[Any]:
    directory = find_case_dir()
    if directory is None:
        return [pytest.param(None, None, None, id="no-case-directory")]
    params = []
    for expected_file in sorted(directory.glob("*.expected.json")):
        case = expected_file.name.removesuffix(".expected.json")
        containerfile = directory / f"{case}.Containerfile"
        runs = json.loads(expected_file.read_text(encoding="utf-8"))
        for number, run in enumerate(runs):
            target = run["target"] if run["target"] is not None else "last"
            args = ",".join(f"{k}={v}" for k, v in sorted(run["build_args"].items()))
            run_id = f"{case}-{number}-target={target}"
            if args:
                run_id += f"-{args}"
            params.append(pytest.param(case, containerfile, run, id=run_id))
    return params


@pytest.mark.parametrize(("case", "containerfile", "run"), load_runs())
def test_stage_case(
    case: str | None, containerfile: Path | None, run: dict[str, Any] | None
) -> None:
    if case is None or containerfile is None or run is None:
        searched = ", ".join(str(directory) for directory in CASE_DIRS)
        pytest.fail(f"no stage cases found, searched: {searched}")
    build_args = run["build_args"]

    if "error" in run:
        with pytest.raises(InputError) as raised:
            cf = read_containerfile(containerfile, build_args)
            resolve_target(cf, run["target"])
        message = str(raised.value)
        assert raised.value.exit_code == ExitCode.USAGE
        assert "\n" not in message
        if "suggest" in run:
            assert run["suggest"] in message
        return

    cf = read_containerfile(containerfile, build_args)
    target = resolve_target(cf, run["target"])
    report = stages_report(cf, target)

    if "stages" in run:
        actual_stages = report["stages"]
        assert isinstance(actual_stages, list)
        assert len(actual_stages) == len(run["stages"])
        for expected in run["stages"]:
            actual = actual_stages[expected["index"]]
            assert actual["index"] == expected["index"]
            assert actual["name"] == expected["name"]
            assert sorted(actual["depends_on"]) == sorted(expected["depends_on"])
            if "base" in expected:
                assert actual["base"] == expected["base"]
    assert report["needed"] == run["needed"]


def test_case_copy_matches_shared() -> None:
    """The repository copy of the cases is current when both copies exist."""
    repo_copy, shared = CASE_DIRS
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent, so only the repository copy is used")
    shared_names = sorted(path.name for path in shared.iterdir())
    repo_names = sorted(path.name for path in repo_copy.iterdir())
    assert repo_names == shared_names
    for name in shared_names:
        assert (repo_copy / name).read_bytes() == (shared / name).read_bytes(), name
