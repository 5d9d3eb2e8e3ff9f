"""Variable expansion in Containerfile words, with the rules of buildah.

``expand_word`` expands ``$NAME`` and ``${...}`` references and removes quotes
in one word; the limits below keep hostile input from growing without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from bootc_builder.errors import ContainerfileError

# Maximum length of an expanded word. It matches the longest line that the Go
# parser accepts (65535 bytes), and stops ARG chains such as ARG A=$A$A from
# growing without bound.
_MAX_EXPANDED_LENGTH = 65535
# Maximum nesting of ${...} inside ${...}, so deep nesting fails cleanly instead of
# exhausting the Python stack.
_MAX_NESTING = 64
# NOTE: bootc-build limit, not a podman one. Pattern operations (${VAR#pattern},
# ${VAR%pattern}, ${VAR/pattern/replacement}) try every substring the way buildah
# does, up to n² regex matches for a value of n characters, so longer values are
# rejected.
_MAX_PATTERN_VALUE = 1024


def expand_word(
    word: str,
    env: Mapping[str, str],
    where: str,
    written: str,
    unset: list[str] | None = None,
) -> str:
    """Expand variables and remove quotes in one word, as buildah does.

    ``written`` shows the word in its instruction for messages. Names that are
    referred to but not set are appended to ``unset`` when it is given.
    """
    expander = _WordExpander(word, env)
    try:
        result = expander.expand()
    except _ExpansionError as error:
        raise ContainerfileError(f"{where}: in {shorten(written)}: {error}") from None
    if unset is not None:
        unset.extend(expander.unset_names)
    return result


class _ExpansionError(Exception):
    """A word cannot be expanded. The message explains why and how to fix it."""


class _WordExpander:
    """Expand one word with the rules of buildah's shell-word processor.

    Outside quotes a backslash escapes the next character. Single quotes keep
    their text as is. Inside double quotes a backslash escapes only ``"``, ``$``
    and ``\\``, and variables are expanded. Supported references are ``$NAME``,
    ``${NAME}``, ``${NAME:-word}``, ``${NAME:+word}``, ``${NAME:?message}``,
    ``${NAME#pattern}``, ``${NAME##pattern}``, ``${NAME%pattern}``,
    ``${NAME%%pattern}`` and ``${NAME/pattern/replacement}`` with its ``//``,
    ``/#`` and ``/%`` forms. A variable that is not set expands to "".
    """

    def __init__(self, word: str, env: Mapping[str, str]) -> None:
        self._word = word
        self._position = 0
        self._env = env
        self._depth = 0
        self.unset_names: list[str] = []

    def expand(self) -> str:
        _, text = self._read_until("")
        return text

    def _peek(self) -> str:
        if self._position < len(self._word):
            return self._word[self._position]
        return ""

    def _read_until(self, stops: str) -> tuple[str, str]:
        """Read and expand up to one of ``stops``, or to the end when it is "".

        Returns the stop character that was consumed ("" at the end) and the text.
        """
        word = self._word
        parts: list[str] = []
        length = 0
        while self._position < len(word):
            character = word[self._position]
            if character in stops:
                self._position += 1
                return character, "".join(parts)
            if character == "'":
                piece = self._read_single_quoted()
            elif character == '"':
                piece = self._read_double_quoted()
            elif character == "$":
                piece = self._read_variable()
            else:
                self._position += 1
                if character == "\\":
                    if self._position >= len(word):
                        break
                    character = word[self._position]
                    self._position += 1
                piece = character
            parts.append(piece)
            length += len(piece)
            _check_length(length)
        if stops:
            raise _ExpansionError(f"missing {stops[-1]!r}")
        return "", "".join(parts)

    def _read_single_quoted(self) -> str:
        start = self._position + 1
        end = self._word.find("'", start)
        if end < 0:
            raise _ExpansionError("missing closing single quote")
        self._position = end + 1
        return self._word[start:end]

    def _read_double_quoted(self) -> str:
        word = self._word
        self._position += 1
        parts: list[str] = []
        length = 0
        while True:
            if self._position >= len(word):
                raise _ExpansionError("missing closing double quote")
            character = word[self._position]
            if character == '"':
                self._position += 1
                return "".join(parts)
            if character == "$":
                piece = self._read_variable()
            else:
                self._position += 1
                if character == "\\" and self._peek() in ('"', "$", "\\"):
                    character = self._peek()
                    self._position += 1
                piece = character
            parts.append(piece)
            length += len(piece)
            _check_length(length)

    def _read_name(self) -> str:
        word = self._word
        start = self._position
        if start < len(word) and word[start].isdecimal():
            # $1 and the like: a name that starts with a digit is one character.
            self._position += 1
            return word[start : self._position]
        while self._position < len(word) and (
            word[self._position].isalpha()
            or word[self._position].isdecimal()
            or word[self._position] == "_"
        ):
            self._position += 1
        return word[start : self._position]

    def _lookup(self, name: str) -> str:
        if name in self._env:
            return self._env[name]
        self.unset_names.append(name)
        return ""

    def _read_variable(self) -> str:
        self._position += 1  # the $
        if self._peek() != "{":
            name = self._read_name()
            return self._lookup(name) if name else "$"
        self._position += 1
        self._depth += 1
        if self._depth > _MAX_NESTING:
            raise _ExpansionError(
                f"${{...}} nested more than {_MAX_NESTING} levels deep"
            )
        try:
            return self._read_braced()
        finally:
            self._depth -= 1

    def _read_braced(self) -> str:
        name = self._read_name()
        operator = self._peek()
        if operator == "}":
            self._position += 1
            return self._lookup(name)
        if operator == ":":
            self._position += 1
            return self._read_colon_form(name)
        if operator in ("#", "%"):
            self._position += 1
            return self._read_strip_form(name, operator)
        if operator == "/":
            self._position += 1
            return self._read_replace_form(name)
        if operator in ("-", "+", "?"):
            raise _ExpansionError(
                f"${{{name}{operator}word}} is not supported by podman. "
                f"Write ${{{name}:{operator}word}}"
            )
        if not operator:
            raise _ExpansionError("missing '}'")
        raise _ExpansionError(
            f"invalid reference ${{{name}{operator}...}}. Use $NAME, ${{NAME}} "
            "or ${NAME:-default}"
        )

    def _read_colon_form(self, name: str) -> str:
        modifier = self._peek()
        if modifier not in ("-", "+", "?"):
            raise _ExpansionError(
                f"${{{name}:{modifier}...}} is not supported by podman. "
                "Use :- for a default or :+ for an alternative value"
            )
        self._position += 1
        _, word = self._read_until("}")
        value = self._lookup(name)
        if modifier == "-":
            return value or word
        if modifier == "+":
            return word if value else ""
        if not value:
            detail = f": {word}" if word else ""
            raise _ExpansionError(
                f"{name} is required{detail}. Set it with --build-arg {name}=VALUE"
            )
        return value

    def _read_strip_form(self, name: str, operator: str) -> str:
        longest = self._peek() == operator
        if longest:
            self._position += 1
        _, pattern = self._read_until("}")
        if not pattern:
            raise _ExpansionError(
                f"${{{name}{operator}}} needs a pattern, as in ${{{name}{operator}*.}}"
            )
        value = self._lookup(name)
        matches = _pattern_matcher(pattern, value)
        size = len(value)
        # These loops repeat buildah's, which never strip the whole value.
        if operator == "#":
            prefix_ends = range(size - 1, -1, -1) if longest else range(size - 1)
            for end in prefix_ends:
                if matches(value[:end]):
                    return value[end:]
        else:
            suffix_starts = range(size - 1) if longest else range(size - 1, -1, -1)
            for start in suffix_starts:
                if matches(value[start:]):
                    return value[:start]
        return value

    def _read_replace_form(self, name: str) -> str:
        mode = self._peek()
        if mode in ("/", "#", "%"):
            self._position += 1
        else:
            mode = ""
        stop, pattern = self._read_until("/}")
        if not pattern:
            raise _ExpansionError(
                f"${{{name}/}} needs a pattern, as in ${{{name}/old/new}}"
            )
        replacement = ""
        if stop == "/":
            _, replacement = self._read_until("}")
        value = self._lookup(name)
        return _replace_pattern(
            value, _pattern_matcher(pattern, value), replacement, mode
        )


def _check_length(length: int) -> None:
    if length > _MAX_EXPANDED_LENGTH:
        raise _ExpansionError(
            f"expands to more than {_MAX_EXPANDED_LENGTH} characters. "
            "Shorten the ARG values"
        )


def _replace_pattern(
    value: str, matches: Callable[[str], bool], replacement: str, mode: str
) -> str:
    """Replace the longest match at the first (mode "") or every (mode "/") start.

    Mode "#" replaces only a match at the start and mode "%" only one at the end.
    """
    start = 0
    while start < len(value):
        if mode == "#" and start > 0:
            break
        ends = [len(value)] if mode == "%" else range(len(value), start, -1)
        for end in ends:
            if end <= start or not matches(value[start:end]):
                continue
            value = value[:start] + replacement + value[end:]
            _check_length(len(value))
            if mode != "/":
                return value
            start += len(replacement) - 1
            break
        start += 1
    return value


def _pattern_matcher(pattern: str, value: str) -> Callable[[str], bool]:
    """Return a test for whole-string matches of a Go ``path.Match`` pattern.

    An invalid pattern matches nothing, as in buildah.
    """
    if len(value) > _MAX_PATTERN_VALUE:
        raise _ExpansionError(
            f"pattern operations work on values of at most {_MAX_PATTERN_VALUE} "
            "characters in bootc-build. Shorten the value"
        )
    regex = _glob_to_regex(pattern)
    if regex is None:
        return lambda _text: False
    compiled = re.compile(regex, re.DOTALL)
    return lambda text: compiled.fullmatch(text) is not None


def _glob_to_regex(pattern: str) -> str | None:
    """Translate a Go ``path.Match`` pattern to a regex, or None if it is invalid.

    ``*`` matches any run of characters other than ``/``, ``?`` one such character,
    ``[...]`` a class (``[^...]`` negated), and a backslash escapes.
    """
    parts: list[str] = []
    position = 0
    while position < len(pattern):
        character = pattern[position]
        position += 1
        if character == "*":
            parts.append("[^/]*")
        elif character == "?":
            parts.append("[^/]")
        elif character == "\\":
            if position >= len(pattern):
                return None
            parts.append(re.escape(pattern[position]))
            position += 1
        elif character == "[":
            translated = _class_to_regex(pattern, position)
            if translated is None:
                return None
            class_regex, position = translated
            parts.append(class_regex)
        else:
            parts.append(re.escape(character))
    return "".join(parts)


def _class_to_regex(pattern: str, position: int) -> tuple[str, int] | None:
    """Translate the class that starts after ``[`` at ``position``.

    Returns the regex and the position after ``]``, or None for an invalid class.
    """
    negated = position < len(pattern) and pattern[position] == "^"
    if negated:
        position += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if position >= len(pattern):
            return None
        if pattern[position] == "]" and ranges:
            position += 1
            break
        low = _class_character(pattern, position)
        if low is None:
            return None
        low_character, position = low
        high_character = low_character
        if position < len(pattern) and pattern[position] == "-":
            high = _class_character(pattern, position + 1)
            if high is None:
                return None
            high_character, position = high
        ranges.append((low_character, high_character))
    members = "".join(
        f"{re.escape(low)}-{re.escape(high)}"
        for low, high in ranges
        if low <= high  # Go accepts a reversed range that matches nothing.
    )
    if not members:
        return (r"[\s\S]", position) if negated else ("(?!)", position)
    return (f"[^{members}]" if negated else f"[{members}]"), position


def _class_character(pattern: str, position: int) -> tuple[str, int] | None:
    if position >= len(pattern) or pattern[position] in ("-", "]"):
        return None
    if pattern[position] == "\\":
        position += 1
        if position >= len(pattern):
            return None
    return pattern[position], position + 1


def shorten(text: str, limit: int = 100) -> str:
    """Cut ``text`` for a message, so that a huge value keeps the message short."""
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."
