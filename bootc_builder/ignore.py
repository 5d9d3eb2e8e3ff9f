"""Ignore files of the build context and the matching of context paths against them.

The rules follow Podman 4.3.1 (buildah 1.28, containers/storage 1.43, imagebuilder),
read from their sources and checked against `podman build` on a test machine:

* An ignore file is split on ``\\n``. A line that is empty or starts with ``#`` is
  skipped, leading and trailing ``/`` are removed, then surrounding whitespace, and
  the rest is cleaned like Go's ``filepath.Clean`` (``./a`` is ``a``, ``a/../b``
  is ``b``). A ``!`` in front makes the pattern an exception.
* Patterns are anchored at the context root. ``*`` and ``?`` stay inside one path
  component, ``[...]`` is a character class, ``**`` spans any number of
  directories, and ``\\`` escapes the next character.
* A pattern that matches a directory also matches everything under it, so
  ``docs`` covers ``docs/a.md``. The last pattern that matches a path decides.

Podman turns each pattern into a Go regular expression and passes characters such
as ``(``, ``+``, ``{`` or ``|`` through as regular-expression syntax, so that
``file (1).txt`` matches ``file 1.txt`` and not itself. This module does not
evaluate that syntax. Such a pattern is kept as *undecided*: a path whose outcome
depends on it counts as not excluded, so the packer sends it and the Podman service,
which applies the same ignore file again for COPY, makes the final decision.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import ContextError

# Names looked up in the context root, in order of preference.
IGNORE_FILE_NAMES = (".containerignore", ".dockerignore")

# Suffixes of a per-Containerfile ignore file (``Containerfile.containerignore``).
# Buildah 1.28 checks both and uses ``.dockerignore`` when both exist.
CONTAINERFILE_IGNORE_SUFFIXES = (".containerignore", ".dockerignore")

# The characters Go's strings.TrimSpace removes (unicode.IsSpace). Python's
# str.strip() would also remove \x1c-\x1f, which Go keeps.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Characters that Podman copies into its regular expression unescaped and that
# have a meaning there which a glob does not give them.
_REGEX_SYNTAX = frozenset("+(){}|^")

# Maximum number of cached automaton states. Beyond it the cache restarts empty,
# so memory stays bounded whatever the patterns are.
_MAX_CACHED_STATES = 20_000

# Kinds of automaton edges.
_EQUALS = 0  # the character equals the argument
_DIFFERS = 1  # the character differs from the argument
_IN_CLASS = 2  # the character is in the _CharClass argument


def clean_path(path: str) -> str:
    """Return ``path`` cleaned lexically the way Go's ``filepath.Clean`` does."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def pattern_lines(text: str) -> list[str]:
    """Split the text of an ignore file into lines the way Podman reads them."""
    return text.split("\n")


@dataclass(frozen=True)
class _CharClass:
    """A ``[...]`` class: single characters and inclusive code-point ranges."""

    negated: bool
    chars: frozenset[str]
    ranges: tuple[tuple[int, int], ...]

    def contains(self, char: str) -> bool:
        found = char in self.chars or any(
            low <= ord(char) <= high for low, high in self.ranges
        )
        return found != self.negated


class PatternInfo(NamedTuple):
    """A pattern as Podman reads it, for logs and tests."""

    text: str
    exclusion: bool
    # True when the pattern uses regular-expression syntax that is left to the
    # Podman service to evaluate (see the module documentation).
    undecided: bool


class _Undecided(Exception):
    """The pattern uses syntax whose meaning in Podman this module does not model."""


@dataclass
class _Pattern:
    """One pattern of an ignore file after Podman's clean-up."""

    text: str
    exclusion: bool
    # True when the pattern uses syntax that the automaton does not model.
    undecided: bool = False
    # The pattern's automaton: its start node, and bit masks over the shared node
    # list of all its nodes and of its accepting nodes.
    start: int = 0
    nodes: int = 0
    accept: int = 0


def _check_glob_syntax(pattern: str) -> None:
    """Raise ValueError where Go's ``filepath.Match`` reports ErrBadPattern.

    Podman calls ``filepath.Match(pattern, ".")`` only to validate the pattern. It
    rejects a trailing ``\\`` and malformed classes: unterminated, empty, or with a
    range item that starts with ``-`` or ``]``.
    """
    index = 0
    length = len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\":
            if index + 1 >= length:
                raise ValueError("the pattern ends with an unescaped '\\'")
            index += 2
            continue
        if char != "[":
            index += 1
            continue
        index += 1
        if index < length and pattern[index] == "^":
            index += 1
        items = 0
        while True:
            if index < length and pattern[index] == "]" and items > 0:
                index += 1
                break
            index = _check_class_item(pattern, index)
            if index < length and pattern[index] == "-":
                index = _check_class_item(pattern, index + 1)
            items += 1


def _check_class_item(pattern: str, index: int) -> int:
    """Validate one character of a class at ``index`` and return the index after it."""
    if index >= len(pattern):
        raise ValueError("a character class is not closed with ']'")
    if pattern[index] in "-]":
        raise ValueError(f"unexpected {pattern[index]!r} in a character class")
    if pattern[index] == "\\":
        index += 1
        if index >= len(pattern):
            raise ValueError("the pattern ends with an unescaped '\\'")
    index += 1
    if index >= len(pattern):
        raise ValueError("a character class is not closed with ']'")
    return index


def _is_regex_escape(char: str) -> bool:
    """Tell whether ``\\char`` means something else in a Go regular expression.

    Go treats ``\\`` before punctuation as a literal, but ``\\d``, ``\\n`` or ``\\1``
    are classes, control characters or errors.
    """
    return not char.isascii() or char.isalnum()


def _parse_class(pattern: str, index: int) -> tuple[_CharClass, int]:
    """Parse the class that starts after ``[`` at ``index``.

    Return the class and the index after its closing ``]``.

    The pattern passed ``_check_glob_syntax``. Podman keeps the class in its regular
    expression, but rewrites ``*`` and ``?`` inside it into other syntax and lets
    ``[:`` start a POSIX class, so those make the pattern undecided.
    """
    negated = False
    if pattern[index] == "^":
        negated = True
        index += 1
    chars: set[str] = set()
    ranges: list[tuple[int, int]] = []
    items = 0
    while not (pattern[index] == "]" and items > 0):
        low, index = _read_class_char(pattern, index)
        if pattern[index] == "-":
            high, index = _read_class_char(pattern, index + 1)
            if ord(low) > ord(high):
                # Go's regexp rejects the range, so the build fails in Podman.
                raise _Undecided
            ranges.append((ord(low), ord(high)))
        else:
            chars.add(low)
        items += 1
    return _CharClass(negated, frozenset(chars), tuple(ranges)), index + 1


def _read_class_char(pattern: str, index: int) -> tuple[str, int]:
    char = pattern[index]
    if char in "*?" or pattern.startswith("[:", index):
        raise _Undecided
    if char == "\\":
        char = pattern[index + 1]
        if _is_regex_escape(char):
            raise _Undecided
        return char, index + 2
    return char, index + 1


class _Automaton:
    """Shared nodes of the patterns' automata, each with edges and epsilon moves."""

    def __init__(self) -> None:
        self.edges: list[list[tuple[int, object, int]]] = []
        self.epsilon: list[list[int]] = []
        self.closure: list[int] = []

    def add_node(self) -> int:
        self.edges.append([])
        self.epsilon.append([])
        return len(self.edges) - 1

    def compile(self, pattern: str) -> tuple[int, int, int]:
        """Add the nodes for ``pattern`` and return its start, nodes and accept nodes.

        The nodes recognise what Podman's regular expression does: ``*`` is
        ``[^/]*``, ``?`` is ``[^/]``, ``**/`` and an inner ``**`` are ``(.*/)?``, a
        final ``**`` is ``.*``, and the expression ends with ``(/.*)?$``. In Go's
        syntax ``.`` does not match a newline, so neither do these nodes.
        Raise _Undecided for syntax that the nodes cannot express.
        """
        first = len(self.edges)
        current = self.add_node()
        index = 0
        length = len(pattern)
        while index < length:
            char = pattern[index]
            index += 1
            if char == "*":
                if index < length and pattern[index] == "*":
                    index += 1
                    if index < length and pattern[index] == "/":
                        index += 1
                    if index >= length:
                        current = self._add_loop(current, "\n")
                    else:
                        current = self._add_optional_dirs(current)
                else:
                    current = self._add_loop(current, "/")
                continue
            if char == "?":
                current = self._add_step(current, _DIFFERS, "/")
                continue
            if char == "[":
                char_class, index = _parse_class(pattern, index)
                current = self._add_step(current, _IN_CLASS, char_class)
                continue
            if char == "\\":
                char = pattern[index]
                index += 1
                if _is_regex_escape(char):
                    raise _Undecided
            elif char in _REGEX_SYNTAX:
                raise _Undecided
            current = self._add_step(current, _EQUALS, char)
        # The pattern also matches every path under what it matches: (/.*)?$
        below = self.add_node()
        self.edges[current].append((_EQUALS, "/", below))
        self.edges[below].append((_DIFFERS, "\n", below))
        accept = (1 << current) | (1 << below)
        nodes = ((1 << len(self.edges)) - 1) ^ ((1 << first) - 1)
        return first, nodes, accept

    def _add_step(self, node: int, kind: int, argument: object) -> int:
        following = self.add_node()
        self.edges[node].append((kind, argument, following))
        return following

    def _add_loop(self, node: int, stop: str) -> int:
        self.edges[node].append((_DIFFERS, stop, node))
        following = self.add_node()
        self.epsilon[node].append(following)
        return following

    def _add_optional_dirs(self, node: int) -> int:
        inside = self.add_node()
        following = self.add_node()
        self.epsilon[node] += [inside, following]
        self.edges[inside].append((_DIFFERS, "\n", inside))
        self.edges[inside].append((_EQUALS, "/", following))
        return following

    def finish(self) -> None:
        """Compute the epsilon closure of every node."""
        self.closure = [0] * len(self.edges)
        for node in range(len(self.edges)):
            seen = 0
            stack = [node]
            while stack:
                current = stack.pop()
                if seen >> current & 1:
                    continue
                seen |= 1 << current
                stack.extend(self.epsilon[current])
            self.closure[node] = seen

    def close(self, mask: int) -> int:
        result = 0
        while mask:
            low = mask & -mask
            result |= self.closure[low.bit_length() - 1]
            mask ^= low
        return result

    def step(self, mask: int, char: str) -> int:
        reached = 0
        while mask:
            low = mask & -mask
            mask ^= low
            for kind, argument, target in self.edges[low.bit_length() - 1]:
                if kind == _EQUALS:
                    taken = char == argument
                elif kind == _DIFFERS:
                    taken = char != argument
                else:
                    assert isinstance(argument, _CharClass)
                    taken = argument.contains(char)
                if taken:
                    reached |= 1 << target
        return self.close(reached)


def _parse_line(line: str) -> str | None:
    """Apply imagebuilder's and containers/storage's clean-up to one line.

    Return None for a line that contains no pattern.
    """
    if not line or line.startswith("#"):
        return None
    pattern = line.strip("/").strip(_GO_SPACE)
    if not pattern:
        return None
    return clean_path(pattern)


class IgnoreRules:
    """The patterns of one ignore file, matched with Podman's semantics.

    Matching runs a set of automata, one per pattern, as a lazily built DFA whose
    states are cached, so a path costs one dictionary lookup per character once
    the cache is warm and never more than linear time.
    """

    def __init__(self, patterns: list[_Pattern], automaton: _Automaton) -> None:
        self._patterns = patterns
        self._automaton = automaton
        self._start = 0
        for pattern in patterns:
            if not pattern.undecided:
                self._start |= automaton.closure[pattern.start]
        self._exception_prefixes = tuple(
            pattern.text.strip("/") + "/" for pattern in patterns if pattern.exclusion
        )
        self._last_undecided_exception = max(
            (
                index
                for index, pattern in enumerate(patterns)
                if pattern.exclusion and pattern.undecided
            ),
            default=-1,
        )
        self._reset_cache()

    @classmethod
    def from_lines(
        cls, lines: Iterable[str], *, source: str | None = None
    ) -> IgnoreRules:
        """Build the rules from the lines of an ignore file.

        ``source`` names the file in error messages. Raise ContextError for a
        pattern that Podman rejects: a lone ``!`` or a malformed glob.
        """
        automaton = _Automaton()
        patterns: list[_Pattern] = []
        where = f" of {source}" if source else ""
        for number, line in enumerate(lines, start=1):
            pattern_text = _parse_line(line)
            if pattern_text is None:
                continue
            exclusion = pattern_text.startswith("!")
            if exclusion:
                if pattern_text == "!":
                    raise ContextError(
                        f"invalid ignore pattern {line!r} on line {number}{where}: "
                        "'!' needs a pattern after it"
                    )
                pattern_text = clean_path(pattern_text[1:]).removeprefix("/")
            try:
                _check_glob_syntax(pattern_text)
            except ValueError as error:
                raise ContextError(
                    f"invalid ignore pattern {line!r} on line {number}{where}: {error}"
                ) from None
            pattern = _Pattern(pattern_text, exclusion)
            mark = len(automaton.edges)
            try:
                pattern.start, pattern.nodes, pattern.accept = automaton.compile(
                    pattern_text
                )
            except _Undecided:
                pattern.undecided = True
                del automaton.edges[mark:]
                del automaton.epsilon[mark:]
            patterns.append(pattern)
        automaton.finish()
        return cls(patterns, automaton)

    @property
    def patterns(self) -> list[PatternInfo]:
        """The cleaned patterns in file order."""
        return [
            PatternInfo(pattern.text, pattern.exclusion, pattern.undecided)
            for pattern in self._patterns
        ]

    def is_excluded(self, relpath: str) -> bool:
        """Tell whether Podman leaves ``relpath`` out of the build context.

        ``relpath`` is relative to the context root, uses ``/`` and has no leading
        ``./``. The result is False when the outcome depends on an undecided
        pattern (see the module documentation), so callers never drop a path that
        Podman would keep. The root (``""`` or ``"."``) is never excluded.
        """
        if relpath in ("", "."):
            return False
        state = self._run(relpath)
        return self._excluded[state]

    def may_reinclude_under(self, reldir: str) -> bool:
        """Tell whether an exception pattern could match a path under ``reldir``.

        A walk must descend into an excluded directory when this is True. Only
        exceptions after the last pattern that matches the directory count,
        because every pattern that matches a directory also matches what is
        under it. The result is also True where Podman 4.3's own walk descends:
        when the text of an exception pattern starts with the directory's path,
        even if that exception could never match under it.
        """
        directory = reldir.strip("/")
        if any(prefix.startswith(directory) for prefix in self._exception_prefixes):
            return True
        # Each list is read after its _run call, which may restart the cache.
        state = self._run(directory)
        last_match = self._last_match[state]
        if self._last_undecided_exception > last_match:
            return True
        state = self._run(directory + "/")
        return self._last_live_exception[state] > last_match

    def _reset_cache(self) -> None:
        self._masks: list[int] = []
        self._ids: dict[int, int] = {}
        self._transitions: list[dict[str, int]] = []
        self._excluded: list[bool] = []
        # Per state: index of the last pattern that accepts, and of the last
        # exception pattern that could still accept a longer path; -1 for none.
        self._last_match: list[int] = []
        self._last_live_exception: list[int] = []
        self._start_id = self._state_id(self._start)

    def _state_id(self, mask: int) -> int:
        known = self._ids.get(mask)
        if known is not None:
            return known
        state = len(self._masks)
        self._ids[mask] = state
        self._masks.append(mask)
        self._transitions.append({})
        self._excluded.append(self._decide(mask))
        self._last_match.append(-1)
        self._last_live_exception.append(-1)
        for index, pattern in enumerate(self._patterns):
            if mask & pattern.accept:
                self._last_match[state] = index
            if pattern.exclusion and mask & pattern.nodes:
                self._last_live_exception[state] = index
        return state

    def _decide(self, mask: int) -> bool:
        """Tell whether the patterns certainly exclude a path ending in this state.

        Return True only when the last pattern that certainly matches is not an
        exception and no undecided exception pattern follows it.
        """
        excluded: bool | None = False
        for pattern in self._patterns:
            if pattern.undecided:
                if excluded != (not pattern.exclusion):
                    excluded = None
            elif mask & pattern.accept:
                excluded = not pattern.exclusion
        return excluded is True

    def _run(self, text: str) -> int:
        """Return the state after ``text``. A cache restart replaces the lists."""
        if len(self._masks) > _MAX_CACHED_STATES:
            self._reset_cache()
        state = self._start_id
        transitions = self._transitions
        for char in text:
            following = transitions[state].get(char)
            if following is None:
                mask = self._automaton.step(self._masks[state], char)
                following = self._state_id(mask)
                transitions[state][char] = following
            state = following
        return state


def find_ignore_file(
    context_dir: Path, containerfile: Path | None = None
) -> Path | None:
    """Return the ignore file that Podman 4.3 applies to a build, or None.

    A ``<Containerfile>.containerignore`` or ``<Containerfile>.dockerignore`` next
    to the Containerfile comes first (``.dockerignore`` wins when both exist), then
    ``.containerignore`` and ``.dockerignore`` in the context root. A file counts
    when it exists after following symbolic links, as Podman's ``os.Stat`` does.
    """
    if containerfile is not None:
        absolute = Path(os.path.abspath(containerfile))
        found: Path | None = None
        for suffix in CONTAINERFILE_IGNORE_SUFFIXES:
            candidate = absolute.with_name(absolute.name + suffix)
            if candidate.exists():
                found = candidate
        if found is not None:
            return found
    for name in IGNORE_FILE_NAMES:
        candidate = context_dir / name
        if candidate.exists():
            return candidate
    return None


def read_ignore_file(path: Path) -> bytes:
    """Read an ignore file, or raise ContextError naming it when that fails."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise ContextError(
            f"cannot read ignore file {str(path)!r}: {error.strerror or error}"
        ) from None


def rules_from_bytes(content: bytes, *, source: str | None = None) -> IgnoreRules:
    """Build the rules from the raw content of an ignore file."""
    return IgnoreRules.from_lines(pattern_lines(os.fsdecode(content)), source=source)


def load_ignore_rules(
    context_dir: Path, containerfile: Path | None = None
) -> tuple[str | None, IgnoreRules]:
    """Load the ignore file that applies to a build in ``context_dir``.

    Return its name with the rules: the path relative to the context when the file
    is inside it, else its absolute path, or None with empty rules when there is
    none. Raise ContextError when the file cannot be read or contains an
    invalid pattern.
    """
    path = find_ignore_file(context_dir, containerfile)
    if path is None:
        return None, IgnoreRules.from_lines([])
    name = display_name(context_dir, path)
    return name, rules_from_bytes(read_ignore_file(path), source=name)


def display_name(context_dir: Path, path: Path) -> str:
    """Return ``path`` relative to ``context_dir`` when inside it, else absolute."""
    absolute = os.path.abspath(path)
    root = os.path.abspath(context_dir)
    relative = os.path.relpath(absolute, root)
    if relative == ".." or relative.startswith("../"):
        return absolute
    return relative
