"""Select the target stage of a Containerfile and the stages it needs.

Target lookup follows podman, as checked by running podman 4.3.1 and by reading
buildah's source: ``--target`` matches a stage name exactly, with case, and the
first stage with that name wins. The index of an unnamed stage is also accepted,
because buildah names unnamed stages by their index, but the index of a named
stage is not.
"""

from __future__ import annotations

import difflib

from bootc_builder.containerfile import Containerfile, Stage
from bootc_builder.errors import TargetNotFoundError

__all__ = ["REPORT_SCHEMA", "needed_stages", "resolve_target", "stages_report"]

REPORT_SCHEMA = 1
"""Version of the stages_report dict, increased when a change breaks its readers."""


def resolve_target(cf: Containerfile, target: str | None) -> Stage:
    """Return the stage that ``--target`` selects, or the last stage for None.

    An empty target also selects the last stage, as in podman. Raises
    TargetNotFoundError, with the closest stage label as a suggestion, when no
    stage matches.
    """
    if not target:
        return cf.stages[-1]
    for stage in cf.stages:
        if stage.label == target:
            return stage
    labels = [stage.label for stage in cf.stages]
    raise TargetNotFoundError(target, labels, _suggest_target(cf, target))


def _suggest_target(cf: Containerfile, target: str) -> str | None:
    for stage in cf.stages:
        if stage.name is not None and stage.name.lower() == target.lower():
            return stage.name
    if target.isascii() and target.isdecimal():
        # Podman accepts only the name of a named stage, not its index.
        index = int(target) if len(target) < 10 else -1
        if 0 <= index < len(cf.stages):
            return cf.stages[index].label
    labels = [stage.label for stage in cf.stages]
    close = difflib.get_close_matches(target, labels, n=1, cutoff=0.6)
    return close[0] if close else None


def needed_stages(cf: Containerfile, target: Stage) -> list[int]:
    """Return the indexes of ``target`` and every stage it needs, in build order.

    A stage is needed when the target depends on it directly or through other
    stages. Build order is ascending index, because a stage depends only on
    earlier stages.
    """
    needed = {target.index}
    pending = [target.index]
    while pending:
        stage = cf.stages[pending.pop()]
        for dependency in stage.depends_on:
            if dependency not in needed:
                needed.add(dependency)
                pending.append(dependency)
    return sorted(needed)


def stages_report(cf: Containerfile, target: Stage) -> dict[str, object]:
    """Build the report that ``bootc-build stages --json`` prints.

    The dict contains ``schema`` (REPORT_SCHEMA), ``stages`` (index, name, base
    and depends_on of each stage), ``target`` (index of the target stage) and
    ``needed`` (the result of needed_stages).
    """
    return {
        "schema": REPORT_SCHEMA,
        "stages": [
            {
                "index": stage.index,
                "name": stage.name,
                "base": stage.base,
                "depends_on": list(stage.depends_on),
            }
            for stage in cf.stages
        ],
        "target": target.index,
        "needed": needed_stages(cf, target),
    }
