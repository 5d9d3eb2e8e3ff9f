"""Property tests: random ignore files and trees give a result or a ContextError.

The matcher is also compared with an independent translation of Podman's
pattern-to-regular-expression rules (containers/storage 1.43), run with ``re``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_builder.context import ContextArchive
from bootc_builder.errors import ContextError
from bootc_builder.ignore import IgnoreRules

CASES_DIR = Path(__file__).resolve().parents[1] / "cases" / "ignore"
CASE_LINES = sorted(
    {
        line
        for path in CASES_DIR.glob("*.json")
        for lines in json.loads(path.read_text()).get("ignore_files", {}).values()
        for line in lines
    }
    if CASES_DIR.is_dir()
    else {"*.md", "!keep.md", "**/x"}
)

GLOB_ALPHABET = "ab/*?[]!^-\\."
REGEX_ALPHABET = GLOB_ALPHABET + "(){}+| #\n\t"
NAME_ALPHABET = "ab.\n"

patterns = st.text(GLOB_ALPHABET, min_size=1, max_size=7)
components = st.text(NAME_ALPHABET, min_size=1, max_size=3).filter(
    lambda name: name not in (".", "..")
)
paths = st.lists(components, min_size=1, max_size=4).map("/".join)

FAST = settings(max_examples=300, deadline=None)


@st.composite
def mutated_lines(draw: st.DrawFn) -> list[str]:
    """Lines taken from the case files, with characters inserted or removed."""
    lines = draw(st.lists(st.sampled_from(CASE_LINES), max_size=6))
    mutated = []
    for line in lines:
        position = draw(st.integers(0, len(line)))
        removed = draw(st.integers(0, 2))
        inserted = draw(st.text(REGEX_ALPHABET, max_size=3))
        mutated.append(line[:position] + inserted + line[position + removed :])
    return mutated + draw(st.lists(st.text(REGEX_ALPHABET, max_size=8), max_size=3))


def build_rules(lines: list[str]) -> IgnoreRules | None:
    try:
        return IgnoreRules.from_lines(lines)
    except ContextError:
        return None


@FAST
@given(mutated_lines(), st.lists(paths, max_size=5))
def test_mutated_ignore_file_matches_or_fails(
    lines: list[str], candidates: list[str]
) -> None:
    rules = build_rules(lines)
    if rules is None:
        return
    for path in candidates:
        assert isinstance(rules.is_excluded(path), bool)
        assert isinstance(rules.may_reinclude_under(path), bool)


def podman_regex(pattern: str) -> str:
    """Translate a glob to a Python regular expression the way Podman builds its own.

    Only for patterns without the syntax that the matcher leaves undecided.
    """
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*" and pattern[index : index + 1] == "*":
            index += 1
            if pattern[index : index + 1] == "/":
                index += 1
            out.append("[^\n]*" if index == len(pattern) else "(?:[^\n]*/)?")
        elif char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            out.append(re.escape(pattern[index]))
            index += 1
        elif char == "[":
            out.append("[")
            if pattern[index] == "^":
                out.append("^")
                index += 1
            first = True
            while first or pattern[index] != "]":
                first = False
                if pattern[index] == "-":
                    out.append("-")
                    index += 1
                    continue
                if pattern[index] == "\\":
                    index += 1
                out.append(re.escape(pattern[index]))
                index += 1
            out.append("]")
            index += 1
        else:
            out.append(re.escape(char))
    return "".join(out) + "(?:/[^\n]*)?"


def oracle_excluded(rules: IgnoreRules, path: str) -> bool:
    excluded = False
    for info in rules.patterns:
        if re.fullmatch(podman_regex(info.text), path):
            excluded = not info.exclusion
    return excluded


@st.composite
def globs_like(draw: st.DrawFn, path: str) -> str:
    """A pattern made from ``path`` or its start, with parts replaced by wildcards."""
    parts = path.split("/")
    parts = parts[: draw(st.integers(1, len(parts)))]
    pieces = []
    for part in parts:
        choice = draw(st.sampled_from(["keep", "star", "question", "dstar", "class"]))
        if choice == "star":
            cut = draw(st.integers(0, len(part)))
            pieces.append(part[:cut] + "*")
        elif choice == "question":
            pieces.append("?" * len(part))
        elif choice == "dstar":
            pieces.append("**")
        elif choice == "class":
            pieces.append("[" + part[0] + "ab]" + part[1:])
        else:
            pieces.append(part)
    return "/".join(pieces)


@st.composite
def rules_and_paths(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Ignore lines partly derived from the paths, so that many of them match."""
    candidates = draw(st.lists(paths, min_size=1, max_size=5))
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        derived = draw(globs_like(draw(st.sampled_from(candidates))))
        text = draw(st.one_of(patterns, st.just(derived)))
        lines.append(("!" if draw(st.booleans()) else "") + text)
    if draw(st.booleans()):
        # An excluded directory with an exception below it.
        path = draw(st.sampled_from(candidates))
        lines += [path.split("/")[0], "!" + draw(globs_like(path))]
    return lines, candidates


@FAST
@given(rules_and_paths())
def test_matcher_agrees_with_regex_translation(
    generated: tuple[list[str], list[str]],
) -> None:
    lines, candidates = generated
    rules = build_rules(lines)
    if rules is None or any(info.undecided for info in rules.patterns):
        return
    for path in candidates:
        assert rules.is_excluded(path) == oracle_excluded(rules, path), path


@FAST
@given(rules_and_paths())
def test_may_reinclude_is_sound(generated: tuple[list[str], list[str]]) -> None:
    lines, candidates = generated
    rules = build_rules(lines)
    if rules is None:
        return
    for path in candidates:
        parts = path.split("/")
        for cut in range(1, len(parts)):
            directory = "/".join(parts[:cut])
            if "\n" in "/".join(parts[cut:]):
                break
            if rules.is_excluded(directory) and not rules.is_excluded(path):
                assert rules.may_reinclude_under(directory), (directory, path)


@st.composite
def trees(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str]]:
    """Files (path to content) and symbolic links (path to target)."""
    files = draw(
        st.dictionaries(
            st.lists(st.text("abc.", min_size=1, max_size=2), min_size=1, max_size=3)
            .filter(lambda parts: all(part not in (".", "..") for part in parts))
            .map("/".join),
            st.text("xy", max_size=20),
            max_size=8,
        )
    )
    links = draw(
        st.dictionaries(
            st.text("lm", min_size=1, max_size=2),
            st.sampled_from(["a", "b/c", "../x", "/etc", "..", "l", "missing"]),
            max_size=3,
        )
    )
    return files, links


def create_tree(root: Path, files: dict[str, str], links: dict[str, str]) -> bool:
    """Create the tree; return False when paths collide (a file used as a dir)."""
    for name, content in files.items():
        path = root / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            return False
    for name, target in links.items():
        if os.path.lexists(root / name):
            return False
        (root / name).symlink_to(target)
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), st.lists(st.text(GLOB_ALPHABET + "c", max_size=6), max_size=5))
def test_random_tree_packs_or_fails(
    tree: tuple[dict[str, str], dict[str, str]], ignore_lines: list[str]
) -> None:
    files, links = tree
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "ctx"
        root.mkdir()
        if not create_tree(root, files, links):
            return
        (root / ".containerignore").write_text("\n".join(ignore_lines))
        containerfile = Path(scratch) / "Containerfile"
        containerfile.write_text("FROM scratch\n")
        try:
            archive = ContextArchive(root, containerfile, chunk_size=700)
            data = b"".join(archive.chunks())
        except ContextError:
            return
        check_archive(root, archive, data)


def check_archive(root: Path, archive: ContextArchive, data: bytes) -> None:
    """Check the archive against the tree and the archive's own ignore rules."""
    rules = archive.rules
    added = {
        archive.containerfile_name,
        archive.containerfile_name + ".containerignore",
    }
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        sent = {}
        for member in tar:
            if member.isfile() and member.name not in added:
                extracted = tar.extractfile(member)
                assert extracted is not None
                sent[member.name] = extracted.read()
            else:
                sent[member.name] = b""
    assert archive.bytes == len(data)
    for name in sent:
        if name in added or name == ".containerignore":
            continue
        path = root / name
        assert os.path.lexists(path), name
        if path.is_file() and not path.is_symlink():
            assert sent[name] == path.read_bytes()
            assert not rules.is_excluded(name), name
    for directory, subdirs, names in os.walk(root):
        for entry in subdirs + names:
            check_included(root, rules, sent, Path(directory, entry))


def check_included(
    root: Path, rules: IgnoreRules, sent: dict[str, bytes], path: Path
) -> None:
    """Check that a path neither excluded nor under an excluded dir was sent."""
    name = path.relative_to(root).as_posix()
    parts = name.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    if not any(rules.is_excluded(prefix) for prefix in prefixes):
        assert name in sent, name
