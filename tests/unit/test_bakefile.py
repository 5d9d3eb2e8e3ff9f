"""Plan files for `bake`: loading, inheritance, groups, templates, overrides,
dependencies between images, placement on hosts, and the scheduler with a
stand-in build function. Nothing here contacts Podman."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bootc_builder.bake import (
    BakeFailedError,
    ImageReport,
    Placement,
    _Host,
    _Scheduler,
    format_summary,
    raise_for_failures,
)
from bootc_builder.bakefile import (
    BakePlan,
    HostSpec,
    PlanError,
    load_plan,
)
from bootc_builder.buildstream import BuildResult
from bootc_builder.config import BuildOptions, PullPolicy
from bootc_builder.errors import BuildFailedError, ExitCode, PodmanUnreachableError
from bootc_builder.pipeline import BuildOutcome
from bootc_builder.push import PushedImage, RegistryOptions
from tests.conftest import run_cli

TODAY = date(2026, 3, 9)
GIT = ("git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid")


def _plan_dir(tmp_path: Path, toml: str, images: Sequence[str] = ()) -> Path:
    """Write bootc-build.toml and a Containerfile in each named context."""
    (tmp_path / "bootc-build.toml").write_text(toml)
    for name in images:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "Containerfile").write_text(
            "FROM scratch AS app\nFROM app AS debug\nFROM app\n"
        )
    return tmp_path


def _load(
    directory: Path,
    *,
    names: Sequence[str] = (),
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    connections: Mapping[str, tuple[str, str | None]] | None = None,
) -> BakePlan:
    return load_plan(
        None,
        names=names,
        overrides=overrides,
        cwd=directory,
        environ=environ or {},
        today=TODAY,
        connections=lambda: connections or {},
    )


def _error(directory: Path, **kwargs: Any) -> str:
    with pytest.raises(PlanError) as failure:
        _load(directory, **kwargs)
    assert failure.value.exit_code == ExitCode.USAGE
    message = str(failure.value)
    assert "\n" not in message
    return message


# --- Inheritance and groups ------------------------------------------------------

INHERITANCE = """
[images.common]
labels = { vendor = "acme", tier = "common" }
build_args = { A = "1" }
tags = ["localhost/common:latest"]
pull = "always"

[images.extra]
build_args = { B = "2" }
platform = "linux/arm64"

[images.app]
inherits = ["common", "extra"]
context = "app"
labels = { tier = "app" }
tags = ["localhost/app:latest"]

[images.app-debug]
inherits = "app"
target = "debug"
pull = false
"""


def test_inherits_merges_tables_and_replaces_lists(tmp_path: Path) -> None:
    plan = _load(_plan_dir(tmp_path, INHERITANCE, ["app"]), names=["app"])

    app = plan.images["app"]
    assert dict(app.labels) == {"vendor": "acme", "tier": "app"}
    assert dict(app.build_args) == {"A": "1", "B": "2"}
    assert app.tags == ("localhost/app:latest",)
    assert app.platform == "linux/arm64"
    assert app.pull is PullPolicy.ALWAYS
    assert app.push == app.tags
    assert app.context == (tmp_path / "app").resolve()
    assert app.containerfile == (tmp_path / "app" / "Containerfile").resolve()


def test_inherits_chain_overrides_parent(tmp_path: Path) -> None:
    plan = _load(_plan_dir(tmp_path, INHERITANCE, ["app"]), names=["app-debug"])

    debug = plan.images["app-debug"]
    assert debug.target == "debug"
    assert debug.pull is PullPolicy.MISSING
    assert debug.tags == ("localhost/app:latest",)
    assert dict(debug.labels)["tier"] == "app"


def test_inherits_cycle_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[images.a]\ninherits = "b"\n[images.b]\ninherits = "c"\n'
        '[images.c]\ninherits = "a"\n',
    )

    message = _error(directory, names=["a"])

    assert "bootc-build.toml" in message
    assert "inherits" in message
    assert "a -> b -> c -> a" in message


def test_inherits_unknown_image_suggests(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, '[images.base]\n[images.b]\ninherits = "bse"\n')

    message = _error(directory, names=["b"])

    assert "images.b.inherits[0]" in message
    assert "did you mean 'base'" in message


GROUPS = """
[groups.default]
images = ["base", "flavours"]

[groups]
flavours = ["desktop", "server", "base"]

[images.base]
context = "base"
[images.desktop]
context = "desktop"
[images.server]
context = "server"
[images.unused]
context = "base"
"""


def test_default_group_expands_nested_groups(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, GROUPS, ["base", "desktop", "server"])

    plan = _load(directory)

    assert list(plan.images) == ["base", "desktop", "server"]
    assert plan.requested == ("default",)
    assert plan.groups["flavours"] == ("desktop", "server", "base")


def test_named_group_and_image_selected(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, GROUPS, ["base", "desktop", "server"])

    plan = _load(directory, names=["unused", "flavours"])

    assert sorted(plan.images) == ["base", "desktop", "server", "unused"]


def test_group_cycle_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[images.a]\n[groups]\none = ["a", "two"]\ntwo = ["one"]\n',
    )

    message = _error(directory, names=["a"])

    assert "groups form a cycle: one -> two -> one" in message


def test_unknown_name_lists_choices(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, GROUPS, ["base", "desktop", "server"])

    message = _error(directory, names=["desktp"])

    assert "unknown image or group 'desktp'" in message
    assert "did you mean 'desktop'" in message


def test_no_default_group_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, "[images.a]\n[images.b]\n")

    message = _error(directory)

    assert "no default group" in message
    assert "a, b" in message


# --- Types and keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("colour = 1\n", "plan", "unknown key 'colour'"),
        ("[images.a]\ntag = ['x']\n", "images.a", "did you mean 'tags'"),
        ("[images.a]\ntags = 'localhost/a'\n", "images.a.tags", "array of strings"),
        ("[images.a]\ntags = ['ok', 3]\n", "images.a.tags[1]", "got integer 3"),
        ("[images.a]\nbuild_args = { V = 2 }\n", "images.a.build_args.V", "string"),
        ("[images.a]\npull = 'sometimes'\n", "images.a.pull", "one of always"),
        ("[images.a]\nno_cache = 'yes'\n", "images.a.no_cache", "a boolean"),
        ("[images.a]\ninherits = 5\n", "images.a.inherits", "an image name"),
        ("images = []\n", "images", "expected a table"),
        ("[images.'a.b']\n", "images.a.b", "invalid image name"),
        ("[[hosts]]\nurl = 'unix:///s'\njobs = 0\n", "hosts[0].jobs", "positive"),
        ("[[hosts]]\nurl = 'unix:///s'\nport = 1\n", "hosts[0]", "unknown key"),
        ("[[hosts]]\nname = 'x'\n", "hosts[0]", "missing key 'url'"),
        ("[[hosts]]\nurl = 'ftp://h/s'\n", "hosts[0].url", "scheme"),
        (
            "[[hosts]]\nurl = 'unix:///s'\nplatforms = ['amd64']\n",
            "platforms[0]",
            "invalid platform",
        ),
        ("[images.a]\nsecrets = ['src=/x']\n", "images.a.secrets[0]", "id=NAME"),
        ("[images.a]\ntags = ['Upper/Case']\n", "images.a.tags[0]", "lower-case"),
    ],
)
def test_invalid_plan_names_key(
    tmp_path: Path, toml: str, key: str, expected: str
) -> None:
    directory = _plan_dir(tmp_path, toml + "[groups]\ndefault = ['a']\n")
    if "[images.a]" not in toml:
        (tmp_path / "bootc-build.toml").write_text(toml)

    message = _error(directory, names=["a"] if "[images.a]" in toml else ())

    assert message.startswith(f"{tmp_path / 'bootc-build.toml'}: ")
    assert key in message
    assert expected in message


def test_invalid_toml_reported(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, "[images.a\n")

    message = _error(directory)

    assert "invalid TOML" in message
    assert "line 1" in message


def test_missing_plan_file_reported(tmp_path: Path) -> None:
    message = _error(tmp_path)

    assert "bootc-build.toml" in message
    assert "--config" in message


def test_pyproject_table_used(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "3.1"\n'
        "[tool.bootc-build.images.app]\n"
        'tags = ["localhost/app:{version}"]\n'
    )
    (tmp_path / "Containerfile").write_text("FROM scratch\n")

    plan = _load(tmp_path, names=["app"])

    assert plan.images["app"].tags == ("localhost/app:3.1",)
    assert plan.source.endswith("pyproject.toml [tool.bootc-build]")


def test_pyproject_errors_name_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.bootc-build.images.app]\nx = 1\n")

    message = _error(tmp_path, names=["app"])

    assert "tool.bootc-build.images.app" in message


# --- Templates ---------------------------------------------------------------------


def _git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        [*GIT, "-C", str(directory), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A repository with one commit on branch main, tagged v1.2."""
    _git(tmp_path, "init", "--quiet", "--initial-branch=main")
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    _git(tmp_path, "add", "Containerfile")
    _git(tmp_path, "commit", "--quiet", "-m", "first")
    _git(tmp_path, "tag", "v1.2")
    return tmp_path


TEMPLATES = """
version = "0.9"

[variables]
REGISTRY = "registry.invalid/{env.TEAM}"
FLAVOUR = "plain"

[images.app]
tags = [
    "localhost/app:{git.short_sha}",
    "localhost/app:{git.branch}-{date}",
    "localhost/app:{git.tag}",
    "localhost/app:{version}",
]
push = ["{var.REGISTRY}/app:{var.FLAVOUR}"]
labels = { revision = "{git.sha}", literal = "{{not a template}}" }
"""


def test_templates_expanded_from_git(git_repo: Path) -> None:
    _plan_dir(git_repo, TEMPLATES)
    sha = _git(git_repo, "rev-parse", "HEAD")
    short = _git(git_repo, "rev-parse", "--short", "HEAD")

    plan = _load(git_repo, names=["app"], environ={"TEAM": "core"})

    app = plan.images["app"]
    assert app.tags == (
        f"localhost/app:{short}",
        "localhost/app:main-20260309",
        "localhost/app:v1.2",
        "localhost/app:0.9",
    )
    assert app.push == ("registry.invalid/core/app:plain",)
    assert dict(app.labels) == {"revision": sha, "literal": "{not a template}"}


def test_variable_replaced_by_environment(git_repo: Path) -> None:
    _plan_dir(git_repo, TEMPLATES)

    plan = _load(git_repo, names=["app"], environ={"TEAM": "x", "FLAVOUR": "gpu"})

    assert plan.images["app"].push == ("registry.invalid/x/app:gpu",)


def test_version_from_pyproject(tmp_path: Path) -> None:
    _plan_dir(tmp_path, '[images.a]\ntags = ["localhost/a:{version}"]\n', ["."])
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "4.0.1"\n')

    plan = _load(tmp_path, names=["a"])

    assert plan.images["a"].tags == ("localhost/a:4.0.1",)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{git.sah}", "unknown template name {git.sah} (did you mean 'git.sha'?)"),
        ("{env.UNSET}", "environment variable UNSET is not set"),
        ("{env.EMPTY}", "template {env.EMPTY} has an empty value"),
        ("{var.NOPE}", "unknown variable {var.NOPE}"),
        ("{version}", "cannot expand {version}"),
        ("x{", "unmatched '{'"),
    ],
)
def test_template_errors_name_key(tmp_path: Path, template: str, expected: str) -> None:
    directory = _plan_dir(
        tmp_path, f'[images.a]\nlabels = {{ info = "{template}" }}\n', ["."]
    )

    message = _error(directory, names=["a"], environ={"EMPTY": ""})

    assert "images.a.labels.info" in message
    assert expected in message


def test_untagged_commit_has_no_git_tag(git_repo: Path) -> None:
    (git_repo / "more").write_text("x")
    _git(git_repo, "add", "more")
    _git(git_repo, "commit", "--quiet", "-m", "second")
    _plan_dir(git_repo, '[images.a]\ntags = ["localhost/a:{git.tag}"]\n')

    message = _error(git_repo, names=["a"])

    assert "images.a.tags[0]" in message
    assert "no tag points at HEAD" in message


def test_detached_head_has_no_branch(git_repo: Path) -> None:
    _git(git_repo, "checkout", "--quiet", "--detach")
    _plan_dir(git_repo, '[images.a]\nlabels = { b = "{git.branch}" }\n')

    message = _error(git_repo, names=["a"])

    assert "HEAD is detached" in message


def test_git_template_outside_repository(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, '[images.a]\nlabels = { s = "{git.sha}" }\n')

    message = _error(directory, names=["a"])

    assert "not in a git repository" in message


def test_variable_cycle_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[variables]\nA = "{var.B}"\nB = "{var.A}"\n'
        '[images.a]\nlabels = { x = "{var.A}" }\n',
    )

    message = _error(directory, names=["a"])

    assert "A -> B -> A" in message


def test_unselected_image_templates_not_expanded(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[images.a]\n[images.release]\ntags = ["localhost/r:{env.RELEASE}"]\n',
        ["."],
    )

    plan = _load(directory, names=["a"])

    assert list(plan.images) == ["a"]


# --- --set ---------------------------------------------------------------------------


def test_set_overrides_keys(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, INHERITANCE, ["app"])

    plan = _load(
        directory,
        names=["app", "app-debug"],
        overrides=[
            "app.tags=localhost/app:one",
            "app.tags=localhost/app:two",
            "app-debug.tags+=localhost/app:debug",
            "*.build_args.A=over",
            "app.labels.org.opencontainers.image.title=App",
            "app.pull=never",
            "app.platform=",
            "*.no_cache=true",
        ],
    )

    app, debug = plan.images["app"], plan.images["app-debug"]
    assert app.tags == ("localhost/app:one", "localhost/app:two")
    assert debug.tags == ("localhost/app:latest", "localhost/app:debug")
    assert app.build_args["A"] == "over"
    assert debug.build_args["A"] == "over"
    assert app.labels["org.opencontainers.image.title"] == "App"
    assert app.pull is PullPolicy.NEVER
    assert app.platform is None
    assert debug.platform == "linux/arm64"
    assert app.no_cache


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("app.colour=red", "unknown key 'colour'"),
        ("nothing.tags=x", "no image matches 'nothing'"),
        ("app.build_args=x", "needs a name"),
        ("app.target+=x", "appends to tags, push and secrets only"),
        ("app.pull=sometimes", "one of always"),
        ("apptags=x", "expected IMAGE.KEY=VALUE"),
        ("app.inherits=common", "unknown key 'inherits'"),
    ],
)
def test_set_rejects_invalid(tmp_path: Path, override: str, expected: str) -> None:
    directory = _plan_dir(tmp_path, INHERITANCE, ["app"])

    message = _error(directory, names=["app"], overrides=[override])

    assert expected in message


# --- Dependencies between images ---------------------------------------------------

FLAVOURS = """
[images.base]
context = "base"
tags = ["localhost/plan/base:latest"]
push = ["registry.invalid/plan/base:1"]

[images.desktop]
context = "desktop"
tags = ["localhost/plan/desktop:latest"]

[images.literal]
context = "literal"

[images.arg]
context = "arg"
build_args = { ROOT = "localhost/plan/base" }
"""


def _flavours(tmp_path: Path) -> Path:
    _plan_dir(tmp_path, FLAVOURS, ["base"])
    for name, text in {
        "desktop": "ARG BASE_IMAGE=localhost/plan/base:latest\nFROM ${BASE_IMAGE}\n",
        "literal": "FROM localhost/plan/base\nRUN true\n",
        "arg": "ARG ROOT=quay.io/x/y\nFROM ${ROOT} AS one\nFROM one\n",
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "Containerfile").write_text(text)
    return tmp_path


def test_bases_found_through_stage_model(tmp_path: Path) -> None:
    plan = _load(_flavours(tmp_path), names=["literal", "desktop", "arg"])

    assert list(plan.images) == ["base", "desktop", "literal", "arg"]
    desktop = plan.images["desktop"]
    assert [(b.image, b.build_arg) for b in desktop.bases] == [("base", "BASE_IMAGE")]
    literal = plan.images["literal"]
    assert [(b.image, b.build_arg) for b in literal.bases] == [("base", None)]
    arg = plan.images["arg"]
    assert [(b.image, b.reference, b.build_arg) for b in arg.bases] == [
        ("base", "localhost/plan/base", "ROOT")
    ]
    assert plan.images["base"].depends_on == ()


def test_dependency_cycle_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[images.a]\ncontext = "a"\ntags = ["localhost/a"]\n'
        '[images.b]\ncontext = "b"\ntags = ["localhost/b"]\n',
    )
    for name, base in (("a", "localhost/b"), ("b", "localhost/a:latest")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Containerfile").write_text(f"FROM {base}\n")

    message = _error(directory, names=["a"])

    assert "cycle: a -> b -> a" in message


def test_shared_tag_rejected(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        '[images.a]\ntags = ["localhost/x"]\n'
        '[images.b]\ntags = ["localhost/x:latest"]\n',
        ["."],
    )

    message = _error(directory, names=["a", "b"])

    assert "images.b: localhost/x:latest is also a tag" in message
    assert "of images.a" in message
    _load(directory, names=["a"])


def test_missing_containerfile_names_image(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, '[images.a]\ncontainerfile = "Nope"\n')

    message = _error(directory, names=["a"])

    assert "images.a" in message
    assert "Nope" in message


# --- Hosts ---------------------------------------------------------------------------


def test_hosts_by_url_and_connection_name(tmp_path: Path) -> None:
    directory = _plan_dir(
        tmp_path,
        "[[hosts]]\nurl = 'unix:///run/a.sock'\n"
        "[[hosts]]\nurl = 'unix:///run/b.sock'\n"
        "[[hosts]]\nurl = 'builder'\njobs = 2\nplatforms = ['linux/arm64']\n"
        "[images.a]\n",
        ["."],
    )
    connections = {"builder": ("ssh://u@h.invalid/run/p.sock", "/keys/id")}

    plan = _load(directory, names=["a"], connections=connections)

    assert [host.as_dict() for host in plan.hosts] == [
        {"name": "local", "url": "unix:///run/a.sock", "platforms": [], "jobs": 4},
        {"name": "local-2", "url": "unix:///run/b.sock", "platforms": [], "jobs": 4},
        {
            "name": "builder",
            "url": "ssh://u@h.invalid/run/p.sock",
            "platforms": ["linux/arm64"],
            "jobs": 2,
        },
    ]
    assert plan.hosts[2].identity == "/keys/id"


def test_unknown_connection_lists_known(tmp_path: Path) -> None:
    directory = _plan_dir(tmp_path, "[[hosts]]\nurl = 'buildr'\n[images.a]\n", ["."])

    message = _error(
        directory, names=["a"], connections={"builder": ("ssh://h.invalid/s", None)}
    )

    assert "hosts[0].url" in message
    assert "did you mean 'builder'" in message


def test_no_hosts_means_local_service(tmp_path: Path) -> None:
    plan = _load(_plan_dir(tmp_path, "[images.a]\n", ["."]), names=["a"])

    assert plan.hosts == (HostSpec("local", None),)


# --- Placement -----------------------------------------------------------------------

NATIVE_SPLIT = """
[[hosts]]
name = "x86"
url = "unix:///run/x86.sock"
platforms = ["linux/amd64"]

[[hosts]]
name = "arm"
url = "unix:///run/arm.sock"
platforms = ["linux/arm64"]

[images.base]
context = "base"
platform = "linux/amd64"
tags = ["localhost/plan/base:latest"]
push = ["registry.invalid/plan/base:1"]

[images.desktop]
context = "desktop"
platform = "linux/arm64/v8"
tags = ["localhost/plan/desktop:latest"]
"""


def test_cross_host_base_needs_push(tmp_path: Path) -> None:
    plan = _load(_flavours_on(tmp_path, NATIVE_SPLIT), names=["desktop"])

    with pytest.raises(PlanError) as failure:
        Placement(plan, push=False)

    assert "without --push" in str(failure.value)
    Placement(plan, push=True)


def test_cross_host_base_needs_destination(tmp_path: Path) -> None:
    toml = NATIVE_SPLIT.replace('push = ["registry.invalid/plan/base:1"]', "push = []")
    plan = _load(_flavours_on(tmp_path, toml), names=["desktop"])

    with pytest.raises(PlanError) as failure:
        Placement(plan, push=True)

    assert "images.base has no push destination" in str(failure.value)


def test_platform_without_host_rejected(tmp_path: Path) -> None:
    toml = NATIVE_SPLIT.replace('"linux/arm64/v8"', '"linux/s390x"')
    plan = _load(_flavours_on(tmp_path, toml), names=["desktop"])

    with pytest.raises(PlanError) as failure:
        Placement(plan, push=True)

    assert "no host builds linux/s390x natively" in str(failure.value)


def _flavours_on(tmp_path: Path, toml: str) -> Path:
    _plan_dir(tmp_path, toml, ["base"])
    (tmp_path / "desktop").mkdir()
    (tmp_path / "desktop" / "Containerfile").write_text(
        "ARG BASE_IMAGE=localhost/plan/base:latest\nFROM ${BASE_IMAGE}\n"
    )
    return tmp_path


# --- Scheduler with a stand-in build -------------------------------------------------


class _FakeBuilds:
    """Records each build and fails the images named in ``failing``."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.failing = set(failing)
        self.calls: list[tuple[str, str, BuildOptions]] = []
        self._lock = threading.Lock()

    def build(
        self,
        options: BuildOptions,
        *,
        url: str | None,
        registry: RegistryOptions,
        push: bool,
    ) -> BuildOutcome:
        name = options.context.name
        assert url is not None
        with self._lock:
            self.calls.append((name, url, options))
        if name in self.failing:
            raise BuildFailedError(f"{name} failed on purpose")
        result = BuildResult(
            image_id=f"id-{name}", tags=options.tags, duration_s=0.0, stages=()
        )
        return BuildOutcome(result, [])

    def push(
        self,
        url: str,
        image_id: str,
        destinations: Sequence[str],
        registry: RegistryOptions,
    ) -> list[PushedImage]:
        return [PushedImage(ref, "sha256:" + "ab" * 32) for ref in destinations]


def _schedule(
    plan: BakePlan,
    builds: _FakeBuilds,
    *,
    push: bool = True,
    fail_fast: bool = False,
) -> list[Any]:
    hosts = [_Host(spec, spec.url or "", i) for i, spec in enumerate(plan.hosts)]
    scheduler = _Scheduler(
        plan,
        hosts,
        Placement(plan, push=push),
        registry=RegistryOptions(),
        push=push,
        fail_fast=fail_fast,
        build_image=builds.build,
        push_images=builds.push,
    )
    return scheduler.run()


def test_base_moved_through_registry(tmp_path: Path) -> None:
    plan = _load(_flavours_on(tmp_path, NATIVE_SPLIT), names=["desktop"])
    builds = _FakeBuilds()

    reports = _schedule(plan, builds)

    assert [(r.name, r.host, r.result) for r in reports] == [
        ("base", "x86", "built"),
        ("desktop", "arm", "built"),
    ]
    desktop_options = builds.calls[1][2]
    assert desktop_options.build_args["BASE_IMAGE"] == (
        "registry.invalid/plan/base@sha256:" + "ab" * 32
    )
    assert desktop_options.pull is PullPolicy.MISSING


def test_dependent_stays_on_base_host_without_push(tmp_path: Path) -> None:
    toml = NATIVE_SPLIT.replace('platform = "linux/amd64"\n', "").replace(
        'platform = "linux/arm64/v8"\n', ""
    )
    plan = _load(_flavours_on(tmp_path, toml), names=["desktop"])
    builds = _FakeBuilds()

    reports = _schedule(plan, builds, push=False)

    assert reports[0].host == reports[1].host
    assert "BASE_IMAGE" not in builds.calls[1][2].build_args


def test_failure_skips_dependents_not_others(tmp_path: Path) -> None:
    plan = _load(_flavours(tmp_path), names=["desktop", "arg"])
    builds = _FakeBuilds(failing=["base"])

    reports = {r.name: r for r in _schedule(plan, builds)}

    assert reports["base"].result == "failed"
    assert reports["desktop"].result == "skipped"
    assert reports["arg"].result == "skipped"
    with pytest.raises(BakeFailedError) as failure:
        raise_for_failures(list(reports.values()))
    assert "3 of 3 images were not built" in str(failure.value)


def test_fail_fast_cancels_waiting_images(tmp_path: Path) -> None:
    toml = "[[hosts]]\nurl = 'unix:///run/one.sock'\njobs = 1\n" + "".join(
        f'[images.{n}]\ncontext = "{n}"\n' for n in ("a", "b", "c")
    )
    plan = _load(_plan_dir(tmp_path, toml, ["a", "b", "c"]), names=["a", "b", "c"])
    builds = _FakeBuilds(failing=["a"])

    reports = _schedule(plan, builds, fail_fast=True)

    assert [(r.name, r.result) for r in reports] == [
        ("a", "failed"),
        ("b", "cancelled"),
        ("c", "cancelled"),
    ]
    assert [call[0] for call in builds.calls] == ["a"]


def test_independent_images_spread_over_hosts(tmp_path: Path) -> None:
    toml = (
        "[[hosts]]\nname = 'one'\nurl = 'unix:///run/one.sock'\njobs = 1\n"
        "[[hosts]]\nname = 'two'\nurl = 'unix:///run/two.sock'\njobs = 1\n"
        + "".join(f'[images.{n}]\ncontext = "{n}"\n' for n in ("a", "b"))
    )
    plan = _load(_plan_dir(tmp_path, toml, ["a", "b"]), names=["a", "b"])
    builds = _FakeBuilds()

    reports = _schedule(plan, builds)

    assert [(r.name, r.host) for r in reports] == [("a", "one"), ("b", "two")]
    assert "a" in format_summary(reports)


def test_unreachable_error_keeps_exit_code() -> None:
    reports = [
        ImageReport(
            "a", result="failed", exit_code=int(PodmanUnreachableError.exit_code)
        )
    ]

    with pytest.raises(BakeFailedError) as failure:
        raise_for_failures(reports)

    assert failure.value.exit_code == ExitCode.UNREACHABLE


# --- The command line, without Podman ----------------------------------------------


def test_print_shows_resolved_example() -> None:
    repo = Path(__file__).resolve().parents[2]
    result = run_cli(
        "bake",
        "--config",
        str(repo / "Containerfiles" / "plan" / "bootc-build.toml"),
        "--print",
        "--set",
        "base.build_args.BOOTC_BASE=localhost/bootc-build-standins/bootc-base:latest",
    )

    assert result.exit_code == 0, result.describe()
    document = json.loads(result.stdout)
    assert list(document["images"]) == ["base", "desktop", "server", "debug"]
    base = document["images"]["base"]
    assert base["build_args"] == {
        "BOOTC_BASE": "localhost/bootc-build-standins/bootc-base:latest"
    }
    assert "{" not in json.dumps(base["tags"] + base["push"])
    assert document["images"]["debug"]["target"] == "debug"
    assert document["images"]["desktop"]["depends_on"] == ["base"]
    assert document["hosts"] == [
        {"name": "local", "url": None, "platforms": [], "jobs": 4}
    ]


def test_plan_error_is_one_line_exit_2(tmp_path: Path) -> None:
    _plan_dir(tmp_path, "[images.a]\ntags = 'x'\n")

    result = run_cli("bake", "a", "--print", cwd=tmp_path)

    assert result.exit_code == 2, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.describe()
    assert "bootc-build.toml: images.a.tags: expected an array of strings" in lines[0]
    assert "Traceback" not in result.stderr
