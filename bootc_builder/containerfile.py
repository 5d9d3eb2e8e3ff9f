"""Read a Containerfile and split it into build stages.

The text is parsed by the ``dockerfile`` package, which wraps the Go parser of
moby/buildkit, so heredocs, ``# escape=`` directives and line continuations follow
the same rules as in podman. This module adds what podman (buildah) does on top of
the parser: it expands ARG variables in FROM lines and finds which stages each
stage needs. It rejects Containerfiles that podman would fail on, and some that
podman accepts but reads in a surprising way, such as duplicate stage names.

Facts about podman below were checked by running podman 4.3.1 (buildah 1.28.2) and
by reading buildah's source (main branch, June 2026):

- Stage names are compared case-sensitively: ``COPY --from=build`` does not find a
  stage declared ``AS Build``.
- An unnamed stage can be referred to by its index, as ``FROM 0``,
  ``COPY --from=0`` or ``--target 0``. A named stage can be referred to by index
  only in ``--from``.
- ``ADD --from`` is rejected, and so are ``${VAR-word}`` and ``${VAR+word}``. Only
  the forms with a colon (``${VAR:-word}``, ``${VAR:+word}``) are accepted.

Every failure is a ContainerfileError whose message is one line of the form
``PATH:LINE: what is wrong. How to fix it``.
"""

from __future__ import annotations

import csv
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import dockerfile

from bootc_builder.errors import ContainerfileError
from bootc_builder.expansion import expand_word, shorten

__all__ = [
    "INSTRUCTIONS",
    "PLATFORM_ARGS",
    "Containerfile",
    "Instruction",
    "Stage",
    "default_platform_args",
    "parse_containerfile",
    "read_containerfile",
]

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
"""Instruction keywords that podman accepts, in upper case."""

PLATFORM_ARGS = (
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
)
"""Predefined ARGs that FROM lines can use without declaring them."""
# NOTE: podman 4.3.1 expands these in FROM only after a global ARG declares them,
# and expands them to "" otherwise. Newer buildah and Docker need no declaration.

# Instructions that ONBUILD cannot wrap (buildah rejects them as triggers).
_ONBUILD_FORBIDDEN = frozenset({"ONBUILD", "FROM", "MAINTAINER"})

# Go architecture names (GOARCH) and variants for the values of platform.machine().
_GO_ARCHITECTURES: Mapping[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "x86": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "ppc64": ("ppc64", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64el": ("mips64le", ""),
    "loongarch64": ("loong64", ""),
}

_NO_BUILD_ARGS: Mapping[str, str] = MappingProxyType({})
_INDEX_PATTERN = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction of a Containerfile as the parser returned it."""

    keyword: str
    """Upper-case keyword, such as ``RUN``."""
    original: str
    """Text as written, with continuation lines joined by the parser."""
    line: int
    """1-based number of the first line in the file."""
    end_line: int
    flags: tuple[str, ...]
    """Flags before the arguments, such as ``("--from=builder",)``."""
    value: tuple[str, ...]
    """Arguments after the flags, as split by the parser, not expanded."""


@dataclass(frozen=True, slots=True)
class Stage:
    """A build stage: one FROM instruction and the instructions up to the next."""

    index: int
    """0-based position in the file."""
    name: str | None
    """Name given with ``AS``, exactly as written, or None for an unnamed stage."""
    base: str
    """Image or stage that the FROM names, after ARG expansion."""
    line: int
    """Line of the FROM instruction."""
    instructions: tuple[Instruction, ...]
    """Instructions of the stage, FROM first."""
    depends_on: tuple[int, ...]
    """Sorted indexes of the stages that this stage needs directly."""

    @property
    def label(self) -> str:
        """Name of the stage, or its index for an unnamed stage.

        Podman uses the same label: ``--target`` and ``--from`` accept the index of
        an unnamed stage.
        """
        return self.name if self.name is not None else str(self.index)


@dataclass(frozen=True, slots=True)
class Containerfile:
    """A parsed Containerfile, split into stages."""

    path: str
    """Path as given by the caller, for messages."""
    stages: tuple[Stage, ...]
    global_args: Mapping[str, str] = field(hash=False)
    """ARGs declared before the first FROM, after expansion and ``--build-arg``.

    An ARG declared without a value and without a build argument maps to "".
    """


def default_platform_args() -> dict[str, str]:
    """Return the predefined platform ARGs for a build on this machine.

    The OS is always ``linux`` because podman builds Linux images, also on macOS
    and Windows, where the service runs in a Linux virtual machine.
    """
    # NOTE: the architecture is this machine's. A remote Podman service may run
    # on another architecture, and then these defaults differ from what it uses.
    machine = platform.machine()
    arch, variant = _GO_ARCHITECTURES.get(machine.lower(), (machine.lower(), ""))
    platform_name = f"linux/{arch}/{variant}" if variant else f"linux/{arch}"
    return {
        "BUILDPLATFORM": platform_name,
        "BUILDOS": "linux",
        "BUILDARCH": arch,
        "BUILDVARIANT": variant,
        "TARGETPLATFORM": platform_name,
        "TARGETOS": "linux",
        "TARGETARCH": arch,
        "TARGETVARIANT": variant,
    }


def read_containerfile(
    path: Path, build_args: Mapping[str, str] = _NO_BUILD_ARGS
) -> Containerfile:
    """Read and parse the Containerfile at ``path``.

    ``build_args`` are the ``--build-arg`` values, which override the defaults of
    the ARGs that the file declares. Raises ContainerfileError when the file cannot
    be read, is not UTF-8 text, or is not a valid Containerfile.
    """
    source = str(path)
    data = _read_bytes(path, source)
    if b"\x00" in data:
        raise ContainerfileError(
            f"{source}: contains NUL bytes, so it is a binary file and not a "
            "Containerfile. Pass the path of the Containerfile with -f"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ContainerfileError(
            f"{source}: invalid UTF-8 at byte {error.start}. "
            "Save the Containerfile as UTF-8 text"
        ) from None
    return parse_containerfile(text, build_args, source=source)


def parse_containerfile(
    text: str,
    build_args: Mapping[str, str] = _NO_BUILD_ARGS,
    *,
    source: str = "Containerfile",
) -> Containerfile:
    """Parse the text of a Containerfile into stages.

    ``source`` names the file in error messages. See read_containerfile for
    ``build_args``. Raises ContainerfileError for every invalid input.
    """
    commands = _parse_commands(text, source)
    heading, stage_groups = _split_stages(commands, source)
    platform_args = default_platform_args()
    for name in PLATFORM_ARGS:
        if name in build_args:
            platform_args[name] = build_args[name]
    global_args, from_env = _evaluate_heading_args(
        heading, build_args, platform_args, source
    )
    headers = [
        _read_stage_header(index, group[0], from_env, source)
        for index, group in enumerate(stage_groups)
    ]
    _check_stage_names(headers, source)
    scope = _Scope(build_args, global_args, platform_args)
    return Containerfile(
        path=source,
        stages=tuple(_build_stages(headers, stage_groups, scope, source)),
        global_args=MappingProxyType(global_args),
    )


def _build_stages(
    headers: Sequence[_StageHeader],
    stage_groups: Sequence[Sequence[dockerfile.Command]],
    scope: _Scope,
    source: str,
) -> list[Stage]:
    """Build the stages and find the earlier stages that each one needs.

    A stage starts with the variables of the stage it is based on, if any, and
    ARG and ENV update them for the ``--from`` values that follow.
    """
    resolver = _StageResolver(headers, source)
    stages: list[Stage] = []
    final_envs: list[dict[str, str]] = []
    for header, group in zip(headers, stage_groups, strict=True):
        base_stage = resolver.resolve_base(header)
        env = dict(final_envs[base_stage]) if base_stage is not None else {}
        depends_on = {base_stage} if base_stage is not None else set()
        instructions = [_to_instruction(command) for command in group]

        for instruction in instructions[1:]:
            scope.apply(instruction, env, source)
            for reference, line in _stage_references(instruction, env, source):
                needed = resolver.resolve_reference(header, reference, line)
                if needed is not None:
                    depends_on.add(needed)

        final_envs.append(env)
        stages.append(
            Stage(
                index=header.index,
                name=header.name,
                base=header.base,
                line=header.line,
                instructions=tuple(instructions),
                depends_on=tuple(sorted(depends_on)),
            )
        )
    return stages


# --- Reading and parsing ---------------------------------------------------------


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        if path.is_dir():
            raise ContainerfileError(
                f"{source}: is a directory, not a file. "
                "Pass the path of the Containerfile itself with -f"
            )
        if path.exists() and not path.is_file():
            # A FIFO or device could block the read forever.
            raise ContainerfileError(
                f"{source}: is not a regular file. Pass the path of the "
                "Containerfile with -f"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ContainerfileError(
            f"{source}: file not found. Check the path, or pass the Containerfile "
            "with -f"
        ) from None
    except PermissionError:
        raise ContainerfileError(
            f"{source}: permission denied while reading the file. "
            "Make it readable for the current user"
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ContainerfileError(
            f"{source}: failed to read the file: {reason}"
        ) from None
    if not data.strip():
        raise ContainerfileError(
            f"{source}: the file is empty. Add a FROM instruction to start a stage"
        )
    return data


def _parse_commands(text: str, source: str) -> tuple[dockerfile.Command, ...]:
    if "\x00" in text:
        # The parser reads the text as a C string and would stop at the NUL.
        raise ContainerfileError(
            f"{source}: contains NUL characters, so it is not a text file. "
            "Pass the path of the Containerfile with -f"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Text that cannot be encoded crashes the process inside the parser
        # (dockerfile 3.4.0), so it must never reach it.
        raise ContainerfileError(
            f"{source}: contains characters that are not valid Unicode. "
            "Save the Containerfile as UTF-8 text"
        ) from None
    try:
        commands = tuple(dockerfile.parse_string(text))
    except dockerfile.GoParseError as error:
        raise _translate_parse_error(text, str(error), source) from None
    except dockerfile.GoIOError as error:
        raise ContainerfileError(f"{source}: failed to parse: {error}") from None
    for command in commands:
        if not command.cmd:
            # The parser returns an instruction without keyword for a line that
            # holds only the escape character.
            raise ContainerfileError(
                f"{source}:{command.start_line}: line continuation without an "
                "instruction. Remove the stray escape character"
            )
    return commands


def _translate_parse_error(text: str, message: str, source: str) -> ContainerfileError:
    if message == "file with no instructions":
        return ContainerfileError(
            f"{source}: contains no instructions, only comments or blank lines. "
            "Add a FROM instruction to start a stage"
        )
    line = _locate_parse_error(text, message)
    where = f"{source}:{line}" if line is not None else source
    if message == "unterminated heredoc":
        return ContainerfileError(
            f"{where}: unterminated heredoc. Close it with a line that contains "
            "only its delimiter word"
        )
    if message.startswith("dockerfile line greater than max allowed size"):
        return ContainerfileError(
            f"{where}: line longer than 65535 bytes, the maximum that podman's "
            "parser accepts. Split it with backslash continuations"
        )
    return ContainerfileError(f"{where}: {message}. Fix the instruction syntax")


def _parse_error_of(text: str) -> str | None:
    try:
        dockerfile.parse_string(text)
    except dockerfile.GoParseError as error:
        return str(error)
    return None


def _locate_parse_error(text: str, message: str) -> int | None:
    """Find the line that makes the Go parser fail, which it does not report.

    The parser stops at the first error, so for most errors the shortest prefix
    of the file that fails with the same message ends at the bad line, and a
    binary search finds it. Prefixes that end inside any heredoc fail too, so an
    unterminated heredoc is located by closing it instead.
    """
    lines = text.split("\n")
    if message == "unterminated heredoc":
        return _locate_unterminated_heredoc(text, len(lines))
    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        if _parse_error_of("\n".join(lines[:middle])) == message:
            high = middle
        else:
            low = middle + 1
    if _parse_error_of("\n".join(lines[:low])) != message:
        return None
    return low


_HEREDOC_WORD = re.compile(r"<<-?\s*[\"']?([A-Za-z_][A-Za-z0-9_]*)")
# Closing more distinct delimiter words than this takes too many lines to try.
_MAX_HEREDOC_WORDS = 16


def _locate_unterminated_heredoc(text: str, line_count: int) -> int | None:
    """Return the first line of the instruction whose heredoc is not closed.

    Appends the delimiter words of the file until the parser accepts the text,
    then finds the instruction that extends past the original last line. Each
    word is repeated once per distinct word, so that any order in which an
    instruction with several heredocs needs them is covered.
    """
    words = list(dict.fromkeys(_HEREDOC_WORD.findall(text)))
    if not words or len(words) > _MAX_HEREDOC_WORDS:
        return None
    closing = "\n".join(words * len(words))
    try:
        commands = dockerfile.parse_string(f"{text}\n{closing}\n")
    except dockerfile.GoParseError:
        return None
    for command in commands:
        if command.start_line <= line_count < command.end_line:
            return int(command.start_line)
    return None


def _to_instruction(command: dockerfile.Command) -> Instruction:
    return Instruction(
        keyword=command.cmd.upper(),
        original=command.original,
        line=command.start_line,
        end_line=command.end_line,
        flags=tuple(command.flags),
        value=tuple(command.value),
    )


def _split_stages(
    commands: Sequence[dockerfile.Command], source: str
) -> tuple[list[dockerfile.Command], list[list[dockerfile.Command]]]:
    """Split the commands into the ARGs before the first FROM and the stages."""
    heading: list[dockerfile.Command] = []
    stages: list[list[dockerfile.Command]] = []
    for command in commands:
        keyword = command.cmd.upper()
        _check_keyword(command, source)
        if keyword == "FROM":
            stages.append([command])
        elif stages:
            stages[-1].append(command)
        elif keyword == "ARG":
            heading.append(command)
        else:
            raise ContainerfileError(
                f"{source}:{command.start_line}: {keyword} before the first FROM. "
                "Only ARG can come before the first FROM, so move it into a stage"
            )
    if not stages:
        raise ContainerfileError(
            f"{source}: no FROM instruction. Start the first stage with FROM IMAGE"
        )
    return heading, stages


def _check_keyword(command: dockerfile.Command, source: str) -> None:
    keyword = command.cmd.upper()
    where = f"{source}:{command.start_line}"
    if keyword not in INSTRUCTIONS:
        raise ContainerfileError(
            f"{where}: unknown instruction {command.cmd!r}. "
            "Check the spelling, or remove the line"
        )
    if keyword == "ONBUILD":
        trigger = (command.sub_cmd or "").upper()
        if not trigger:
            raise ContainerfileError(
                f"{where}: ONBUILD without an instruction. "
                "Write ONBUILD INSTRUCTION, such as ONBUILD RUN COMMAND"
            )
        if trigger not in INSTRUCTIONS:
            raise ContainerfileError(
                f"{where}: unknown instruction {command.sub_cmd!r} after ONBUILD. "
                "Check the spelling"
            )
        if trigger in _ONBUILD_FORBIDDEN:
            raise ContainerfileError(
                f"{where}: ONBUILD {trigger} is not allowed. "
                "Use another instruction as the ONBUILD trigger"
            )


# --- ARG scopes -------------------------------------------------------------------


def _evaluate_heading_args(
    heading: Sequence[dockerfile.Command],
    build_args: Mapping[str, str],
    platform_args: Mapping[str, str],
    source: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """Evaluate the ARGs before the first FROM.

    Returns the declared ARGs (for Containerfile.global_args) and the variables
    that FROM lines can use: the platform ARGs and every declared ARG with a value.
    Each ARG instruction expands its words with the variables set before it.
    """
    declared: dict[str, str] = {}
    env: dict[str, str] = dict(platform_args)
    for command in heading:
        where = f"{source}:{command.start_line}"
        if not command.value:
            raise ContainerfileError(
                f"{where}: ARG without a name. Write ARG NAME or ARG NAME=DEFAULT"
            )
        snapshot = dict(env)
        for word in command.value:
            expanded = expand_word(word, snapshot, where, f"ARG {word}")
            name, has_default, default = expanded.partition("=")
            if name in build_args:
                value: str | None = build_args[name]
            elif has_default:
                value = default
            else:
                value = platform_args.get(name)
            declared[name] = value if value is not None else ""
            if value is not None:
                env[name] = value
    return declared, env


@dataclass(slots=True)
class _Scope:
    """Rules for the variables that ARG and ENV set inside a stage.

    Inside a stage only the ARGs declared in that stage (or in the stage it is
    based on) are set, as in podman. They are used to expand ``--from`` values.
    """

    build_args: Mapping[str, str]
    global_args: Mapping[str, str]
    platform_args: Mapping[str, str]

    def apply(self, instruction: Instruction, env: dict[str, str], source: str) -> None:
        """Update ``env`` with the variables that an ARG or ENV sets."""
        where = f"{source}:{instruction.line}"
        if instruction.keyword == "ARG":
            if not instruction.value:
                raise ContainerfileError(
                    f"{where}: ARG without a name. Write ARG NAME or ARG NAME=DEFAULT"
                )
            snapshot = dict(env)
            for word in instruction.value:
                expanded = expand_word(word, snapshot, where, f"ARG {word}")
                name, has_default, default = expanded.partition("=")
                if name in self.build_args:
                    env[name] = self.build_args[name]
                elif has_default:
                    env[name] = default
                elif name in self.global_args:
                    env[name] = self.global_args[name]
                elif name in self.platform_args:
                    env[name] = self.platform_args[name]
        elif instruction.keyword == "ENV":
            snapshot = dict(env)
            pairs = zip(instruction.value[0::2], instruction.value[1::2], strict=False)
            for key, value in pairs:
                env[key] = expand_word(value, snapshot, where, f"ENV {key}")


# --- Stages and references --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StageHeader:
    """Index, name, base and line of a stage, read from its FROM instruction."""

    index: int
    name: str | None
    base: str
    line: int

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.index)


def _read_stage_header(
    index: int, command: dockerfile.Command, env: Mapping[str, str], source: str
) -> _StageHeader:
    where = f"{source}:{command.start_line}"
    words = command.value
    if not (len(words) == 1 or (len(words) == 3 and words[1].lower() == "as")):
        raise ContainerfileError(
            f"{where}: FROM takes an image and an optional stage name, as in "
            f"FROM IMAGE or FROM IMAGE AS NAME, but got {shorten(command.original)!r}"
        )

    raw_base = words[0]
    unset: list[str] = []
    base = expand_word(raw_base, env, where, f"FROM {raw_base}", unset)
    if not base:
        if unset:
            names = ", ".join(dict.fromkeys(unset))
            hint = (
                f"Declare {names} with ARG before the first FROM, or set "
                "it with --build-arg"
            )
        else:
            hint = "Name an image, such as FROM quay.io/fedora/fedora-bootc:41"
        raise ContainerfileError(
            f"{where}: the image in FROM {shorten(raw_base)!r} expands to an "
            f"empty string. {hint}"
        )

    # NOTE: the name is kept as written, as podman 4.3.1 does. Newer buildah
    # expands ARGs in stage names, so a name that contains $ can differ there.
    name = words[2] if len(words) == 3 else None
    if name is not None and _INDEX_PATTERN.fullmatch(name):
        raise ContainerfileError(
            f"{where}: stage name {name!r} is a number, which podman reads as a "
            "stage index in --from. Use a name that starts with a letter"
        )
    return _StageHeader(index, name, base, command.start_line)


def _check_stage_names(headers: Sequence[_StageHeader], source: str) -> None:
    first_by_name: dict[str, _StageHeader] = {}
    for header in headers:
        if header.name is None:
            continue
        first = first_by_name.setdefault(header.name, header)
        if first is not header:
            raise ContainerfileError(
                f"{source}:{header.line}: stage name {header.name!r} is already "
                f"used by stage {first.index} at line {first.line}. Podman would "
                f"build stage {first.index} for --target {header.name}, but use "
                f"the latest stage before each FROM {header.name} or "
                f"--from={header.name}. Give each stage a unique name"
            )


@dataclass(frozen=True, slots=True)
class _Reference:
    """A ``--from`` value, or a ``from=`` of a RUN mount, after expansion."""

    instruction: str
    """Instruction text for messages, such as ``COPY --from=build``."""
    value: str


def _stage_references(
    instruction: Instruction, env: Mapping[str, str], source: str
) -> Iterator[tuple[_Reference, int]]:
    """Yield the stage or image names that an instruction copies or mounts from."""
    where = f"{source}:{instruction.line}"
    keyword = instruction.keyword
    if keyword in ("COPY", "ADD"):
        for flag in instruction.flags:
            if flag != "--from" and not flag.startswith("--from="):
                continue
            if keyword == "ADD":
                raise ContainerfileError(
                    f"{where}: ADD does not support --from in podman. "
                    "Use COPY --from=STAGE instead"
                )
            raw = flag.removeprefix("--from").removeprefix("=")
            written = shorten(f"COPY {flag}")
            value = expand_word(raw, env, where, written)
            if not value:
                raise ContainerfileError(
                    f"{where}: {written} names no stage or image. "
                    "Write --from=STAGE or --from=IMAGE"
                )
            yield _Reference(written, value), instruction.line
    elif keyword == "RUN":
        for flag in instruction.flags:
            if not flag.startswith("--mount="):
                continue
            for raw in _mount_sources(flag.removeprefix("--mount="), where):
                written = shorten(f"RUN --mount=...,from={raw}")
                value = expand_word(raw, env, where, written)
                if value:
                    yield _Reference(written, value), instruction.line


def _mount_sources(spec: str, where: str) -> list[str]:
    """Return the ``from=`` values of a ``--mount`` option.

    The option is a comma-separated list of key=value fields, quoted as CSV. Every
    mount type can name a stage with ``from=``: a bind mount reads files from it,
    and a cache mount is seeded from it. A mount without ``from=`` needs no stage.
    """
    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error as error:
        raise ContainerfileError(
            f"{where}: invalid --mount={shorten(spec)}: {error}. "
            "Write --mount=type=TYPE,key=value,..."
        ) from None
    sources: list[str] = []
    for row in rows:
        for item in row:
            key, _, value = item.partition("=")
            if key.strip().lower() == "from":
                sources.append(value)
    return sources


class _StageResolver:
    """Resolve FROM bases and ``--from`` values to stage indexes, as podman does."""

    def __init__(self, headers: Sequence[_StageHeader], source: str) -> None:
        self._headers = headers
        self._source = source

    def resolve_base(self, header: _StageHeader) -> int | None:
        """Return the index of the earlier stage that FROM names, or None.

        A FROM matches an earlier stage by its name, or by the index of an
        unnamed stage. Anything else, including the name of a later stage, is an
        image for podman.
        """
        for earlier in reversed(self._headers[: header.index]):
            if earlier.label == header.base:
                return earlier.index
        return None

    def resolve_reference(
        self, header: _StageHeader, reference: _Reference, line: int
    ) -> int | None:
        """Return the index of the stage that a reference names, or None for an image.

        Raises ContainerfileError when the reference names the stage it is in, a
        later stage, a stage index that does not exist, or a stage name with
        different case.
        """
        value = reference.value
        if _INDEX_PATTERN.fullmatch(value):
            return self._resolve_index(header, reference, line)
        matches = [other for other in self._headers if other.name == value]
        earlier = [other for other in matches if other.index < header.index]
        if earlier:
            return earlier[-1].index
        if header.name == value:
            raise self._error(
                line,
                f"{reference.instruction} names the stage it is in "
                f"({header.label}). A stage can only use earlier stages, "
                "so name an earlier stage or an image",
            )
        if matches:
            later = matches[0]
            raise self._error(
                line,
                f"{reference.instruction} names stage {later.label!r}, which "
                f"starts later, at line {later.line}. Move that stage above this "
                f"one, which starts at line {header.line}",
            )
        folded = [
            other
            for other in self._headers
            if other.name is not None and other.name.lower() == value.lower()
        ]
        if folded:
            raise self._error(
                line,
                f"{reference.instruction} matches stage {folded[0].name!r} only "
                "when case is ignored, and podman compares stage names exactly. "
                f"Write the name as {folded[0].name!r}",
            )
        return None

    def _resolve_index(
        self, header: _StageHeader, reference: _Reference, line: int
    ) -> int:
        count = len(self._headers)
        try:
            index = int(reference.value)
        except ValueError:
            # int() rejects strings of more than 4300 digits.
            index = count
        if index < 0 or index >= count:
            numbers = "0" if count == 1 else f"0 to {count - 1}"
            raise self._error(
                line,
                f"{reference.instruction} names stage index "
                f"{shorten(reference.value)}, "
                f"but the only stage indexes are {numbers}. "
                "Use the index or the name of an earlier stage",
            )
        if index == header.index:
            raise self._error(
                line,
                f"{reference.instruction} names the stage it is in "
                f"(index {index}). A stage can only use earlier stages, "
                "so name an earlier stage or an image",
            )
        if index > header.index:
            later = self._headers[index]
            raise self._error(
                line,
                f"{reference.instruction} names stage {later.label!r}, which "
                f"starts later, at line {later.line}. Move that stage above this "
                f"one, which starts at line {header.line}",
            )
        return index

    def _error(self, line: int, message: str) -> ContainerfileError:
        return ContainerfileError(f"{self._source}:{line}: {message}")
