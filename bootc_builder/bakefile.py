"""Load a build plan file and resolve it into the images that `bake` builds.

The plan is ``bootc-build.toml`` or the ``[tool.bootc-build]`` table of
``pyproject.toml``. Resolution runs in this order, without contacting Podman:

1. ``read_plan_source``: find and parse the file.
2. ``_Resolver``: check every key and type, merge ``inherits``, apply
   ``--set`` overrides, expand templates in the selected images, and check
   tags, paths and platforms.
3. ``_find_plan_bases``: read each Containerfile with the stage model and find
   the stages whose base is the tag of another image of the plan, so that image
   is built first.

Every failure is a PlanError (exit code 2) whose message is one line that
names the file, the key and what was expected.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from bootc_builder.config import PullPolicy, validate_image_reference
from bootc_builder.connection import validate_url
from bootc_builder.containerfile import Containerfile, read_containerfile
from bootc_builder.errors import InputError
from bootc_builder.stages import needed_stages, resolve_target

__all__ = [
    "DEFAULT_JOBS",
    "PLAN_FILE",
    "PLAN_SCHEMA",
    "BakePlan",
    "HostSpec",
    "ImageSpec",
    "PlanBase",
    "PlanError",
    "PlanSource",
    "list_podman_connections",
    "load_plan",
    "read_plan_source",
]

PLAN_FILE = "bootc-build.toml"
PYPROJECT = "pyproject.toml"
PLAN_SCHEMA = 1
"""Version of the JSON that ``bake --print`` writes."""
DEFAULT_JOBS = 4
"""Builds that run at once on one host when its ``jobs`` key is absent."""
LOCAL_HOST = "local"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
_SECRET_KEYS = frozenset({"id", "src", "source", "env", "type"})

_TOP_KEYS = ("version", "variables", "images", "groups", "hosts")
_IMAGE_KEYS = (
    "inherits",
    "containerfile",
    "context",
    "target",
    "tags",
    "build_args",
    "labels",
    "platform",
    "pull",
    "no_cache",
    "push",
    "secrets",
)
_HOST_KEYS = ("url", "name", "platforms", "jobs")
_LIST_KEYS = ("tags", "push", "secrets")
_TABLE_KEYS = ("build_args", "labels")
_PULL_CHOICES = "one of always, missing, never, newer, or a boolean"

_T = TypeVar("_T")


class PlanError(InputError):
    """The plan file, a ``--set`` override or an image name is invalid."""


# --- The resolved plan -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanBase:
    """A base image of one image that another image of the plan builds."""

    image: str
    """Name of the plan image that builds the base."""
    reference: str
    """The base as the Containerfile's FROM names it, after ARG expansion."""
    build_arg: str | None
    """The global ARG whose value is the reference, or None when FROM names the
    image directly. Only with an ARG can the build be pointed at a pushed copy."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """One image of the plan with every template expanded and every default set."""

    name: str
    context: Path
    containerfile: Path
    target: str | None
    tags: tuple[str, ...]
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    platform: str | None
    pull: PullPolicy
    no_cache: bool
    push: tuple[str, ...]
    """Push destinations; the tags when the plan gives none."""
    secrets: tuple[str, ...]
    bases: tuple[PlanBase, ...] = ()

    @property
    def depends_on(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(base.image for base in self.bases))

    def as_dict(self) -> dict[str, object]:
        return {
            "context": str(self.context),
            "containerfile": str(self.containerfile),
            "target": self.target,
            "tags": list(self.tags),
            "build_args": dict(self.build_args),
            "labels": dict(self.labels),
            "platform": self.platform,
            "pull": str(self.pull),
            "no_cache": self.no_cache,
            "push": list(self.push),
            "secrets": list(self.secrets),
            "depends_on": list(self.depends_on),
            "bases": [
                {"image": b.image, "reference": b.reference, "build_arg": b.build_arg}
                for b in self.bases
            ],
        }


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A Podman service that builds images of the plan."""

    name: str
    url: str | None
    """None for the local service, found as ``build`` finds it."""
    platforms: tuple[str, ...] = ()
    """Platforms the host builds natively; empty when the plan lists none."""
    jobs: int = DEFAULT_JOBS
    identity: str | None = None
    """SSH key of a ``podman system connection`` entry, if it has one."""

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.url,
            "platforms": list(self.platforms),
            "jobs": self.jobs,
        }


@dataclass(frozen=True, slots=True)
class BakePlan:
    """The images to build, in an order where every base comes before its users."""

    source: str
    """The plan file, and the table inside it for pyproject.toml."""
    requested: tuple[str, ...]
    images: dict[str, ImageSpec]
    hosts: tuple[HostSpec, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self, *, push: bool) -> dict[str, object]:
        return {
            "schema": PLAN_SCHEMA,
            "source": self.source,
            "requested": list(self.requested),
            "push": push,
            "groups": {name: list(members) for name, members in self.groups.items()},
            "images": {name: spec.as_dict() for name, spec in self.images.items()},
            "hosts": [host.as_dict() for host in self.hosts],
        }


# --- Finding and reading the file --------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanSource:
    """The parsed plan table and where it came from."""

    path: Path
    table: Mapping[str, Any]
    key_prefix: str
    """``tool.bootc-build.`` for pyproject.toml, else empty; used in messages."""
    project_version: str | None
    """``[project].version`` of the pyproject.toml beside the plan, if any."""

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def label(self) -> str:
        table = f" [{self.key_prefix.rstrip('.')}]" if self.key_prefix else ""
        return f"{self.path}{table}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise PlanError(
            f"{path}: plan file not found; pass an existing file to --config"
        ) from None
    except IsADirectoryError:
        raise PlanError(f"{path}: is a directory; pass the plan file itself") from None
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: invalid UTF-8; save the file as UTF-8") from None


def _project_version(pyproject: Mapping[str, Any]) -> str | None:
    project = pyproject.get("project")
    if isinstance(project, dict):
        version = project.get("version")
        if isinstance(version, str):
            return version
    return None


def _pyproject_source(path: Path, document: Mapping[str, Any]) -> PlanSource | None:
    tool = document.get("tool")
    table = tool.get("bootc-build") if isinstance(tool, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise PlanError(
            f"{path}: tool.bootc-build: expected a table, got {_describe(table)}"
        )
    return PlanSource(path, table, "tool.bootc-build.", _project_version(document))


def read_plan_source(config: Path | None, cwd: Path) -> PlanSource:
    """Find and parse the plan: ``config``, else bootc-build.toml, else pyproject.toml.

    Raises:
        PlanError: the file is missing or is not valid TOML.
    """
    if config is not None:
        document = _read_toml(config)
        if config.name == PYPROJECT:
            source = _pyproject_source(config, document)
            if source is None:
                raise PlanError(
                    f"{config}: has no [tool.bootc-build] table; add one or pass "
                    f"a {PLAN_FILE} to --config"
                )
            return source
        return PlanSource(config, document, "", _sibling_version(config))
    plan_file = cwd / PLAN_FILE
    if plan_file.is_file():
        return PlanSource(
            plan_file, _read_toml(plan_file), "", _sibling_version(plan_file)
        )
    pyproject = cwd / PYPROJECT
    if pyproject.is_file():
        source = _pyproject_source(pyproject, _read_toml(pyproject))
        if source is not None:
            return source
    raise PlanError(
        f"no build plan in {cwd}: expected {PLAN_FILE} or a [tool.bootc-build] "
        f"table in {PYPROJECT}; pass --config PATH"
    )


def _sibling_version(plan_file: Path) -> str | None:
    pyproject = plan_file.parent / PYPROJECT
    if not pyproject.is_file():
        return None
    try:
        return _project_version(_read_toml(pyproject))
    except PlanError:
        # A broken pyproject.toml matters only if {version} is used, and then
        # the missing version is reported.
        return None


# --- Type checks ----------------------------------------------------------------


def _describe(value: object) -> str:
    """Name a TOML value's type, with the value when it is short."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Type checks whose errors name the plan file and the key."""

    def __init__(self, source: PlanSource) -> None:
        self.source = source

    def error(self, key: str, message: str) -> PlanError:
        return PlanError(f"{self.source.label}: {key}: {message}")

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_describe(value)}")
        return value

    def known_keys(
        self, table: Mapping[str, Any], key: str, allowed: Sequence[str]
    ) -> None:
        for name in table:
            if name not in allowed:
                raise self.error(
                    key,
                    f"unknown key {name!r}{_suggest(name, allowed)}; expected one "
                    f"of: {', '.join(allowed)}",
                )

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected a boolean, got {_describe(value)}")
        return value

    def strings(self, value: object, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(
                key, f"expected an array of strings, got {_describe(value)}"
            )
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(
                    f"{key}[{index}]", f"expected a string, got {_describe(item)}"
                )
        return list(value)

    def string_table(self, value: object, key: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.error(
                key, f"expected a table of strings, got {_describe(value)}"
            )
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.error(
                    f"{key}.{name}", f"expected a string, got {_describe(item)}"
                )
        return dict(value)

    def name(self, value: str, key: str, kind: str) -> str:
        if not _NAME.match(value):
            raise self.error(
                key,
                f"invalid {kind} name {value!r}: expected letters, digits, '-' "
                "and '_', starting with a letter or digit",
            )
        return value


def _pull_policy(value: object) -> PullPolicy | None:
    if isinstance(value, bool):
        return PullPolicy.ALWAYS if value else PullPolicy.MISSING
    if isinstance(value, str):
        try:
            return PullPolicy(value)
        except ValueError:
            return None
    return None


# --- Image settings before templates -------------------------------------------


@dataclass(slots=True)
class _Settings:
    """The keys of one ``[images.NAME]`` table; None means not set."""

    inherits: tuple[str, ...] = ()
    containerfile: str | None = None
    context: str | None = None
    target: str | None = None
    tags: list[str] | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    pull: PullPolicy | None = None
    no_cache: bool | None = None
    push: list[str] | None = None
    secrets: list[str] | None = None

    def merged_over(self, parent: _Settings) -> _Settings:
        """Return these settings on top of ``parent``'s: tables merge key by key,
        and every other key set here replaces the parent's value."""
        return _Settings(
            inherits=self.inherits,
            containerfile=_first(self.containerfile, parent.containerfile),
            context=_first(self.context, parent.context),
            target=_first(self.target, parent.target),
            tags=_first(self.tags, parent.tags),
            build_args={**parent.build_args, **self.build_args},
            labels={**parent.labels, **self.labels},
            platform=_first(self.platform, parent.platform),
            pull=_first(self.pull, parent.pull),
            no_cache=_first(self.no_cache, parent.no_cache),
            push=_first(self.push, parent.push),
            secrets=_first(self.secrets, parent.secrets),
        )


def _first(value: _T | None, fallback: _T | None) -> _T | None:
    return value if value is not None else fallback


def _read_settings(checker: _Checker, raw: object, key: str) -> _Settings:
    table = checker.table(raw, key)
    checker.known_keys(table, key, _IMAGE_KEYS)
    settings = _Settings()
    for name, value in table.items():
        where = f"{key}.{name}"
        if name == "inherits":
            parents = [value] if isinstance(value, str) else value
            if not isinstance(parents, list):
                raise checker.error(
                    where,
                    f"expected an image name or an array of image names, "
                    f"got {_describe(value)}",
                )
            settings.inherits = tuple(checker.strings(parents, where))
        elif name in ("containerfile", "context", "target", "platform"):
            setattr(settings, name, checker.string(value, where))
        elif name in _LIST_KEYS:
            setattr(settings, name, checker.strings(value, where))
        elif name in _TABLE_KEYS:
            setattr(settings, name, checker.string_table(value, where))
        elif name == "no_cache":
            settings.no_cache = checker.boolean(value, where)
        elif name == "pull":
            policy = _pull_policy(value)
            if policy is None:
                raise checker.error(
                    where, f"expected {_PULL_CHOICES}, got {_describe(value)}"
                )
            settings.pull = policy
    return settings


# --- --set overrides ---------------------------------------------------------------

_OVERRIDE = re.compile(
    r"^(?P<image>[^.=]+)\.(?P<key>[A-Za-z_]+)(?:\.(?P<sub>[^=]*?))?(?P<op>\+?=)"
    r"(?P<value>.*)$",
    re.DOTALL,
)
_SETTABLE = tuple(key for key in _IMAGE_KEYS if key != "inherits")


@dataclass(frozen=True, slots=True)
class _Override:
    text: str
    pattern: str
    key: str
    sub: str | None
    append: bool
    value: str


def _parse_override(text: str) -> _Override:
    match = _OVERRIDE.match(text)
    usage = (
        "expected IMAGE.KEY=VALUE, for example --set 'base.tags=localhost/base:dev' "
        "or --set '*.build_args.VERSION=2'"
    )
    if match is None:
        raise PlanError(f"invalid --set {text!r}: {usage}")
    key, sub = match["key"], match["sub"]
    override = _Override(
        text, match["image"], key, sub, match["op"] == "+=", match["value"]
    )
    if key not in _SETTABLE:
        raise PlanError(
            f"invalid --set {text!r}: unknown key {key!r}{_suggest(key, _SETTABLE)}; "
            f"expected one of: {', '.join(_SETTABLE)}"
        )
    if key in _TABLE_KEYS and not sub:
        raise PlanError(
            f"invalid --set {text!r}: {key} needs a name, as in "
            f"--set 'IMAGE.{key}.NAME=VALUE'"
        )
    if key not in _TABLE_KEYS and sub is not None:
        raise PlanError(f"invalid --set {text!r}: {key} takes no '.NAME' part")
    if override.append and key not in _LIST_KEYS:
        raise PlanError(
            f"invalid --set {text!r}: += appends to tags, push and secrets only"
        )
    return override


def _apply_override(
    settings: _Settings, override: _Override, replaced: set[str]
) -> None:
    """Apply one override; ``replaced`` lists the list keys already replaced, so
    that repeating ``--set IMAGE.tags=...`` collects every value, as bake does."""
    key, value = override.key, override.value
    if key in _LIST_KEYS:
        current: list[str] = list(getattr(settings, key) or [])
        if override.append or key in replaced:
            current.append(value)
        else:
            current = [value] if value else []
            replaced.add(key)
        setattr(settings, key, current)
    elif key in _TABLE_KEYS:
        assert override.sub is not None
        getattr(settings, key)[override.sub] = value
    elif key == "pull":
        lowered = value.lower()
        choices = {"true": True, "false": False}
        policy = _pull_policy(choices.get(lowered, lowered))
        if policy is None:
            raise PlanError(
                f"invalid --set {override.text!r}: expected {_PULL_CHOICES}"
            )
        settings.pull = policy
    elif key == "no_cache":
        if value.lower() not in ("true", "false"):
            raise PlanError(f"invalid --set {override.text!r}: expected true or false")
        settings.no_cache = value.lower() == "true"
    else:
        # An empty value returns the key to its default.
        setattr(settings, key, value or None)


# --- Templates ---------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIXED_TEMPLATES = (
    "git.sha",
    "git.short_sha",
    "git.branch",
    "git.tag",
    "date",
    "version",
)
_TEMPLATE_NAMES = (*_FIXED_TEMPLATES, "env.NAME", "var.NAME")
_GIT_COMMANDS = {
    "git.sha": ("rev-parse", "--verify", "HEAD"),
    "git.short_sha": ("rev-parse", "--verify", "--short", "HEAD"),
    "git.branch": ("symbolic-ref", "--quiet", "--short", "HEAD"),
    "git.tag": ("describe", "--tags", "--exact-match", "HEAD"),
}
# Why each value can be empty, and the git message that means the value is
# empty rather than that git failed. A non-zero exit with no message also means
# an empty value.
_GIT_EMPTY = {
    "git.sha": ("the repository has no commit yet", "Needed a single revision"),
    "git.short_sha": ("the repository has no commit yet", "Needed a single revision"),
    "git.branch": ("HEAD is detached, so there is no branch name", None),
    "git.tag": ("no tag points at HEAD", "no tag exactly matches"),
}
_GIT_NO_TAGS = "No names found"


class _TemplateError(Exception):
    """A template name is unknown or its value is empty; the message names which."""


@dataclass(frozen=True, slots=True)
class GitResult:
    """The exit code and output of one git command; -1 when git is missing."""

    returncode: int
    output: str
    error: str


def run_git(directory: Path, arguments: Sequence[str]) -> GitResult:
    """Run git in ``directory`` and return its exit code and output."""
    if shutil.which("git") is None:
        return GitResult(-1, "", "git is not installed")
    done = subprocess.run(
        ["git", "-C", str(directory), *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return GitResult(done.returncode, done.stdout.strip(), done.stderr.strip())


class _Templates:
    """Values of the ``{name}`` templates, each looked up once, when first used."""

    def __init__(
        self,
        *,
        directory: Path,
        environ: Mapping[str, str],
        variables: Mapping[str, str],
        version: str | None,
        today: date,
        git: Callable[[Path, Sequence[str]], GitResult],
    ) -> None:
        self._directory = directory
        self._environ = environ
        self._variables = variables
        self._version = version
        self._today = today
        self._git = git
        self._cache: dict[str, str] = {}
        self._expanding: list[str] = []

    def expand(self, text: str) -> str:
        """Replace every ``{name}``; ``{{`` and ``}}`` stand for single braces.

        Raises:
            _TemplateError: a name is unknown, a value is empty, or a brace is
                unmatched.
        """

        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            name = match.group(1)
            if name is None:
                raise _TemplateError(
                    f"unmatched {token!r} in {text!r}; write {token * 2} for a "
                    "literal brace"
                )
            return self.value(name.strip())

        return _TEMPLATE.sub(substitute, text)

    def value(self, name: str) -> str:
        if name not in self._cache:
            self._cache[name] = self._lookup(name)
        value = self._cache[name]
        if not value:
            raise _TemplateError(f"template {{{name}}} has an empty value")
        return value

    def _lookup(self, name: str) -> str:
        if name in _GIT_COMMANDS:
            return self._git_value(name)
        if name == "date":
            return self._today.strftime("%Y%m%d")
        if name == "version":
            if self._version is None:
                raise _TemplateError(
                    "cannot expand {version}: add a top-level version key to the "
                    "plan, or a version to [project] in pyproject.toml"
                )
            return self._version
        prefix, dot, rest = name.partition(".")
        if dot and rest and prefix == "env":
            if rest not in self._environ:
                raise _TemplateError(
                    f"cannot expand {{{name}}}: environment variable {rest} is not set"
                )
            return self._environ[rest]
        if dot and rest and prefix == "var":
            return self._variable(rest)
        raise _TemplateError(
            f"unknown template name {{{name}}}{_suggest(name, _FIXED_TEMPLATES)}; "
            f"known names: {', '.join(_TEMPLATE_NAMES)}"
        )

    def _git_value(self, name: str) -> str:
        result = self._git(self._directory, _GIT_COMMANDS[name])
        if result.returncode == 0:
            return result.output
        first_line = (result.error.splitlines() or [""])[0]
        if "not a git repository" in first_line:
            raise _TemplateError(
                f"cannot expand {{{name}}}: {self._directory} is not in a git "
                "repository"
            )
        reason, marker = _GIT_EMPTY[name]
        markers = [m for m in (marker, _GIT_NO_TAGS) if m]
        if result.returncode > 0 and (
            not first_line or any(m in first_line for m in markers)
        ):
            raise _TemplateError(f"cannot expand {{{name}}}: {reason}")
        raise _TemplateError(f"cannot expand {{{name}}}: {first_line}")

    def _variable(self, name: str) -> str:
        if name not in self._variables:
            defined = ", ".join(self._variables) or "none"
            raise _TemplateError(
                f"unknown variable {{var.{name}}}"
                f"{_suggest(name, self._variables)}; [variables] defines: {defined}"
            )
        if name in self._expanding:
            chain = " -> ".join([*self._expanding, name])
            raise _TemplateError(f"variables refer to each other in a cycle: {chain}")
        # A variable's default may use templates; an environment variable of
        # the same name replaces the default, as in docker buildx bake.
        raw = self._environ.get(name, self._variables[name])
        self._expanding.append(name)
        try:
            return self.expand(raw)
        finally:
            self._expanding.pop()


# --- Hosts -------------------------------------------------------------------------


def list_podman_connections() -> dict[str, tuple[str, str | None]]:
    """Return ``podman system connection list`` as name -> (URL, identity file).

    Raises:
        PlanError: podman is not installed or the list cannot be read.
    """
    if shutil.which("podman") is None:
        raise PlanError(
            "podman is not installed, so connection names in [[hosts]] cannot be "
            "looked up; give each host a url such as ssh://user@host/run/podman/"
            "podman.sock"
        )
    done = subprocess.run(
        ["podman", "system", "connection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PlanError(f"`podman system connection list` failed: {last}")
    try:
        entries = json.loads(done.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"`podman system connection list` printed invalid JSON: {exc}"
        ) from None
    connections: dict[str, tuple[str, str | None]] = {}
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("Name") and entry.get("URI"):
            identity = entry.get("Identity") or None
            connections[str(entry["Name"])] = (str(entry["URI"]), identity)
    return connections


def _default_host_name(url: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return parsed.hostname or LOCAL_HOST


def _read_hosts(
    checker: _Checker,
    raw: object,
    connections: Callable[[], Mapping[str, tuple[str, str | None]]],
) -> tuple[HostSpec, ...]:
    if not isinstance(raw, list):
        raise checker.error(
            "hosts",
            f"expected an array of tables ([[hosts]]), got {_describe(raw)}",
        )
    hosts: list[HostSpec] = []
    names: set[str] = set()
    known: Mapping[str, tuple[str, str | None]] | None = None
    for index, entry in enumerate(raw):
        key = f"hosts[{index}]"
        table = checker.table(entry, key)
        checker.known_keys(table, key, _HOST_KEYS)
        if "url" not in table:
            raise checker.error(
                key, "missing key 'url': a URL or a podman system connection name"
            )
        url = checker.string(table["url"], f"{key}.url")
        identity: str | None = None
        default_name: str
        if "://" in url:
            try:
                validate_url(url)
            except InputError as exc:
                raise checker.error(f"{key}.url", str(exc)) from None
            default_name = _default_host_name(url)
        else:
            if known is None:
                known = connections()
            if url not in known:
                listed = ", ".join(known) or "none"
                raise checker.error(
                    f"{key}.url",
                    f"{url!r} is neither a URL (unix://, tcp://, ssh://) nor a "
                    f"podman system connection{_suggest(url, known)}; the "
                    f"connections are: {listed}",
                )
            default_name = url
            url, identity = known[url]
        name = checker.name(
            checker.string(table.get("name", default_name), f"{key}.name"),
            f"{key}.name",
            "host",
        )
        if "name" not in table:
            suffix = 2
            while name in names:
                name = f"{default_name}-{suffix}"
                suffix += 1
        elif name in names:
            raise checker.error(f"{key}.name", f"duplicate host name {name!r}")
        names.add(name)
        platforms = tuple(
            _check_platform(checker, value, f"{key}.platforms[{position}]")
            for position, value in enumerate(
                checker.strings(table.get("platforms", []), f"{key}.platforms")
            )
        )
        jobs = table.get("jobs", DEFAULT_JOBS)
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise checker.error(
                f"{key}.jobs", f"expected a positive integer, got {_describe(jobs)}"
            )
        hosts.append(HostSpec(name, url, platforms, jobs, identity))
    return tuple(hosts)


def _check_platform(checker: _Checker, value: str, key: str) -> str:
    if not _PLATFORM.match(value):
        raise checker.error(
            key,
            f"invalid platform {value!r}: expected OS/ARCH[/VARIANT], such as "
            "linux/amd64 or linux/arm64/v8",
        )
    return value


# --- Resolution ----------------------------------------------------------------


def _normalize_reference(reference: str) -> str:
    """Add the implicit ``:latest`` so that ``name`` and ``name:latest`` match."""
    if "@" in reference:
        return reference
    last = reference.rsplit("/", 1)[-1]
    return reference if ":" in last else f"{reference}:latest"


def _image_bases(containerfile: Containerfile, needed: Sequence[int]) -> list[str]:
    """List the images that the needed stages build FROM, except stages and scratch."""
    stages = containerfile.stages
    bases: list[str] = []
    for index in needed:
        earlier = {s.name for s in stages[:index] if s.name}
        earlier |= {str(s.index) for s in stages[:index]}
        base = stages[index].base
        if base in earlier or base == "scratch" or base in bases:
            continue
        bases.append(base)
    return bases


class _Resolver:
    """Checks the plan table and resolves images on demand, caching the results."""

    def __init__(
        self,
        source: PlanSource,
        *,
        overrides: Sequence[str],
        environ: Mapping[str, str],
        today: date,
        git: Callable[[Path, Sequence[str]], GitResult],
    ) -> None:
        self.source = source
        self.checker = _Checker(source)
        table = source.table
        self.checker.known_keys(
            table, source.key_prefix.rstrip(".") or "plan", _TOP_KEYS
        )
        self.settings = self._read_images(table.get("images", {}))
        self.groups = self._read_groups(table.get("groups", {}))
        variables = self.checker.string_table(
            table.get("variables", {}), self.key("variables")
        )
        version = source.project_version
        if "version" in table:
            version = self.checker.string(table["version"], self.key("version"))
        self.templates = _Templates(
            directory=source.directory,
            environ=environ,
            variables=variables,
            version=version,
            today=today,
            git=git,
        )
        self.overrides = [_parse_override(text) for text in overrides]
        self._check_override_targets()
        self._merged: dict[str, _Settings] = {}
        self._resolved: dict[str, ImageSpec | PlanError] = {}

    def key(self, key: str) -> str:
        """Return ``key`` as written in the file, under tool.bootc-build. if needed."""
        return f"{self.source.key_prefix}{key}"

    def _read_images(self, raw: object) -> dict[str, _Settings]:
        images = self.checker.table(raw, self.key("images"))
        settings: dict[str, _Settings] = {}
        for name, value in images.items():
            key = self.key(f"images.{name}")
            self.checker.name(name, key, "image")
            settings[name] = _read_settings(self.checker, value, key)
        for name, image in settings.items():
            for position, parent in enumerate(image.inherits):
                if parent not in settings:
                    raise self.checker.error(
                        self.key(f"images.{name}.inherits[{position}]"),
                        f"unknown image {parent!r}{_suggest(parent, settings)}",
                    )
        return settings

    def _read_groups(self, raw: object) -> dict[str, tuple[str, ...]]:
        groups_table = self.checker.table(raw, self.key("groups"))
        groups: dict[str, tuple[str, ...]] = {}
        for name, value in groups_table.items():
            key = self.key(f"groups.{name}")
            self.checker.name(name, key, "group")
            if name in self.settings:
                raise self.checker.error(
                    key, f"{name!r} names both a group and an image; rename one"
                )
            if isinstance(value, dict):
                self.checker.known_keys(value, key, ("images",))
                value = value.get("images", [])
                key = f"{key}.images"
            elif not isinstance(value, list):
                raise self.checker.error(
                    key,
                    "expected an array of image or group names, or a table with "
                    f"an images key, got {_describe(value)}",
                )
            groups[name] = tuple(self.checker.strings(value, key))
        for name, members in groups.items():
            for position, member in enumerate(members):
                if member not in self.settings and member not in groups:
                    choices = [*self.settings, *groups]
                    raise self.checker.error(
                        self.key(f"groups.{name}[{position}]"),
                        f"unknown image or group {member!r}{_suggest(member, choices)}",
                    )
        for name in groups:
            self._expand_group(groups, name, ())
        return groups

    def _expand_group(
        self,
        groups: Mapping[str, tuple[str, ...]],
        name: str,
        chain: tuple[str, ...],
    ) -> list[str]:
        """List the images of a group and of the groups it contains, once each."""
        if name in chain:
            cycle = " -> ".join([*chain[chain.index(name) :], name])
            raise self.checker.error(
                self.key(f"groups.{chain[-1]}"), f"groups form a cycle: {cycle}"
            )
        images: list[str] = []
        for member in groups[name]:
            found = (
                [member]
                if member in self.settings
                else self._expand_group(groups, member, (*chain, name))
            )
            images.extend(image for image in found if image not in images)
        return images

    def select(self, names: Sequence[str]) -> list[str]:
        """Expand image and group names into images; no names selects ``default``."""
        if not names:
            if "default" not in self.groups and "default" not in self.settings:
                raise PlanError(
                    f"{self.source.label}: no image or group named, and the plan "
                    "has no default group; name images or groups, or add "
                    f"[{self.key('groups.default')}]; the images are: "
                    f"{', '.join(self.settings) or 'none'}"
                )
            names = ["default"]
        selected: list[str] = []
        for name in names:
            if name in self.groups:
                found = self._expand_group(self.groups, name, ())
            elif name in self.settings:
                found = [name]
            else:
                choices = [*self.settings, *self.groups]
                raise PlanError(
                    f"unknown image or group {name!r}{_suggest(name, choices)}; "
                    f"{self.source.label} has images: "
                    f"{', '.join(self.settings) or 'none'}; groups: "
                    f"{', '.join(self.groups) or 'none'}"
                )
            selected.extend(image for image in found if image not in selected)
        return selected

    def _check_override_targets(self) -> None:
        for override in self.overrides:
            if not any(fnmatch.fnmatchcase(n, override.pattern) for n in self.settings):
                raise PlanError(
                    f"invalid --set {override.text!r}: no image matches "
                    f"{override.pattern!r}{_suggest(override.pattern, self.settings)}; "
                    f"the images are: {', '.join(self.settings) or 'none'}"
                )

    # Inheritance

    def merged(self, name: str, chain: tuple[str, ...] = ()) -> _Settings:
        """Return the image's own settings on top of those it inherits."""
        if name in chain:
            cycle = " -> ".join([*chain[chain.index(name) :], name])
            raise self.checker.error(
                self.key(f"images.{chain[-1]}.inherits"),
                f"images inherit from each other in a cycle: {cycle}",
            )
        if name in self._merged:
            return self._merged[name]
        own = self.settings[name]
        base = _Settings()
        for parent in own.inherits:
            base = self.merged(parent, (*chain, name)).merged_over(base)
        merged = own.merged_over(base)
        self._merged[name] = merged
        return merged

    def check_inheritance(self) -> None:
        for name in self.settings:
            self.merged(name)

    # Templates and final checks

    def resolve(self, name: str) -> ImageSpec:
        cached = self._resolved.get(name)
        if cached is None:
            try:
                cached = self._resolve(name)
            except PlanError as exc:
                cached = exc
            self._resolved[name] = cached
        if isinstance(cached, PlanError):
            raise cached
        return cached

    def _overridden(self, name: str) -> _Settings:
        """Return the merged settings of ``name`` with the ``--set`` overrides."""
        merged = self.merged(name)
        settings = replace(
            merged,
            build_args=dict(merged.build_args),
            labels=dict(merged.labels),
        )
        replaced: set[str] = set()
        for override in self.overrides:
            if fnmatch.fnmatchcase(name, override.pattern):
                _apply_override(settings, override, replaced)
        return settings

    def _resolve(self, name: str) -> ImageSpec:
        settings = self._overridden(name)
        key = self.key(f"images.{name}")
        expand = self._expander(key)

        context = self.source.directory / expand(settings.context or ".", "context")
        if not context.is_dir():
            raise self.checker.error(f"{key}.context", f"{context} is not a directory")
        containerfile = _containerfile_path(
            context, expand(settings.containerfile, "containerfile")
        )

        tags = tuple(
            self._reference(expand(tag, f"tags[{i}]"), f"{key}.tags[{i}]")
            for i, tag in enumerate(settings.tags or [])
        )
        push = tags
        if settings.push is not None:
            push = tuple(
                self._reference(expand(ref, f"push[{i}]"), f"{key}.push[{i}]")
                for i, ref in enumerate(settings.push)
            )

        platform = expand(settings.platform, "platform") or None
        if platform is not None:
            _check_platform(self.checker, platform, f"{key}.platform")
        secrets = tuple(
            self._secret(expand(item, f"secrets[{i}]"), f"{key}.secrets[{i}]")
            for i, item in enumerate(settings.secrets or [])
        )
        build_args = {
            arg: expand(value, f"build_args.{arg}")
            for arg, value in settings.build_args.items()
        }
        labels = {
            label: expand(value, f"labels.{label}")
            for label, value in settings.labels.items()
        }

        return ImageSpec(
            name=name,
            context=context.resolve(),
            containerfile=containerfile.resolve(),
            target=expand(settings.target, "target") or None,
            tags=tags,
            build_args=build_args,
            labels=labels,
            platform=platform,
            pull=settings.pull or PullPolicy.MISSING,
            no_cache=bool(settings.no_cache),
            push=push,
            secrets=secrets,
        )

    def _expander(self, key: str) -> Callable[[str | None, str], str]:
        def expand(value: str | None, subkey: str) -> str:
            if value is None:
                return ""
            try:
                return self.templates.expand(value)
            except _TemplateError as exc:
                raise self.checker.error(f"{key}.{subkey}", str(exc)) from None

        return expand

    def _reference(self, value: str, key: str) -> str:
        try:
            return validate_image_reference(value, option="image reference")
        except InputError as exc:
            raise self.checker.error(key, str(exc)) from None

    def _secret(self, value: str, key: str) -> str:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        unknown = [name for name in fields if name not in _SECRET_KEYS]
        if "id" not in fields or not fields["id"] or unknown:
            raise self.checker.error(
                key,
                f"invalid secret {value!r}: expected id=NAME,src=PATH or "
                "id=NAME,env=VARIABLE",
            )
        return value


def _containerfile_path(context: Path, name: str) -> Path:
    """Find the Containerfile as ``build`` does, relative to the context."""
    if name:
        return context / name
    for name in ("Containerfile", "Dockerfile"):
        if (context / name).exists():
            return context / name
    return context / "Containerfile"


# --- Dependencies between images ----------------------------------------------

# A reference no plan names, used to find which ARG sets an image's base.
_PROBE_REFERENCE = "bootc-build-probe.invalid/base:probe"


class _Dependencies:
    """Finds the bases of each image that other images of the plan build."""

    def __init__(self, resolver: _Resolver) -> None:
        self.resolver = resolver
        self.owners = self._tag_owners()

    def _tag_owners(self) -> dict[str, list[str]]:
        """Map each tag and push destination of the plan to the images naming it."""
        owners: dict[str, list[str]] = {}
        for name in self.resolver.settings:
            try:
                spec = self.resolver.resolve(name)
            except PlanError:
                # NOTE: an image that cannot be resolved now, such as one using
                # {git.tag} on an untagged commit, is not built, and its tags are
                # not matched against the bases of the others.
                continue
            for reference in dict.fromkeys((*spec.tags, *spec.push)):
                owners.setdefault(_normalize_reference(reference), []).append(name)
        return owners

    def bases(self, spec: ImageSpec) -> tuple[PlanBase, ...]:
        key = self.resolver.key(f"images.{spec.name}")
        containerfile, needed = self._read(spec, spec.build_args, key)
        bases: list[PlanBase] = []
        for reference in _image_bases(containerfile, needed):
            owners = self.owners.get(_normalize_reference(reference), [])
            owners = [owner for owner in owners if owner != spec.name]
            if len(owners) > 1:
                raise self.resolver.checker.error(
                    key,
                    f"its base {reference} is a tag of several images "
                    f"({', '.join(owners)}); give each image its own tags",
                )
            if not owners or any(base.image == owners[0] for base in bases):
                continue
            arg = self._base_arg(spec, containerfile, reference, key)
            bases.append(PlanBase(owners[0], reference, arg))
        return tuple(bases)

    def check_shared_references(self, names: Iterable[str]) -> None:
        """Reject two built images with a common tag or push destination, because
        the one that finishes last would silently take it."""
        built = set(names)
        for reference, owners in self.owners.items():
            sharing = [owner for owner in owners if owner in built]
            if len(sharing) > 1:
                raise self.resolver.checker.error(
                    self.resolver.key(f"images.{sharing[1]}"),
                    f"{reference} is also a tag or push destination of images."
                    f"{sharing[0]}, which is built too; give each image its own "
                    "references",
                )

    def _read(
        self, spec: ImageSpec, build_args: Mapping[str, str], key: str
    ) -> tuple[Containerfile, list[int]]:
        try:
            containerfile = read_containerfile(spec.containerfile, build_args)
            target = resolve_target(containerfile, spec.target)
        except InputError as exc:
            raise self.resolver.checker.error(key, str(exc)) from None
        return containerfile, needed_stages(containerfile, target)

    def _base_arg(
        self,
        spec: ImageSpec,
        containerfile: Containerfile,
        reference: str,
        key: str,
    ) -> str | None:
        """Return the global ARG that sets ``reference`` as a base, if one does.

        Each ARG whose value is the reference is replaced by a probe value, and
        the one whose probe then shows up as a base is the one FROM uses.
        """
        wanted = _normalize_reference(reference)
        for arg, value in containerfile.global_args.items():
            if not value or _normalize_reference(value) != wanted:
                continue
            probed, needed = self._read(
                spec, {**spec.build_args, arg: _PROBE_REFERENCE}, key
            )
            bases = _image_bases(probed, needed)
            if _PROBE_REFERENCE in bases and reference not in bases:
                return arg
        return None


def _build_order(resolver: _Resolver, specs: Mapping[str, ImageSpec]) -> list[str]:
    """Order the images so that bases come first, otherwise in file order.

    Raises:
        PlanError: images build FROM each other in a cycle.
    """
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise resolver.checker.error(
                resolver.key(f"images.{name}"),
                f"images build FROM each other's tags in a cycle: {cycle}",
            )
        visiting.append(name)
        for base in specs[name].depends_on:
            visit(base)
        visiting.pop()
        order.append(name)

    for name in resolver.settings:
        if name in specs:
            visit(name)
    return order


def load_plan(
    config: Path | None,
    *,
    names: Sequence[str] = (),
    overrides: Sequence[str] = (),
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    today: date | None = None,
    git: Callable[[Path, Sequence[str]], GitResult] = run_git,
    connections: Callable[
        [], Mapping[str, tuple[str, str | None]]
    ] = list_podman_connections,
) -> BakePlan:
    """Load the plan and resolve the named images and the plan images they build on.

    ``names`` are images or groups (default: the ``default`` group);
    ``overrides`` are ``--set IMAGE.KEY=VALUE`` texts. The other arguments
    replace the process environment, today's UTC date, git and the list of
    Podman connections, for tests.

    Raises:
        PlanError: the file, an override or a name is invalid.
    """
    import os

    source = read_plan_source(config, cwd or Path.cwd())
    resolver = _Resolver(
        source,
        overrides=overrides,
        environ=os.environ if environ is None else environ,
        today=today or datetime.now(UTC).date(),
        git=git,
    )
    resolver.check_inheritance()
    hosts: tuple[HostSpec, ...] = ()
    if "hosts" in source.table:
        hosts = _read_hosts(resolver.checker, source.table["hosts"], connections)
    if not hosts:
        hosts = (HostSpec(LOCAL_HOST, None),)
    selected = resolver.select(names)
    for name in selected:
        resolver.resolve(name)
    dependencies = _Dependencies(resolver)
    specs: dict[str, ImageSpec] = {}
    queue = list(selected)
    while queue:
        name = queue.pop(0)
        if name in specs:
            continue
        spec = resolver.resolve(name)
        spec = replace(spec, bases=dependencies.bases(spec))
        specs[name] = spec
        queue.extend(spec.depends_on)
    dependencies.check_shared_references(specs)
    order = _build_order(resolver, specs)
    return BakePlan(
        source=source.label,
        requested=tuple(names) or ("default",),
        images={name: specs[name] for name in order},
        hosts=hosts,
        groups=dict(resolver.groups),
    )
