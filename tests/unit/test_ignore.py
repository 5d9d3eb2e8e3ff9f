"""Ignore-file parsing and matching, with the semantics of Podman 4.3.

The expected results come from reading buildah 1.28 and containers/storage 1.43
and were checked against `podman build` (see tests/integration/test_ignore_cases.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootc_builder import ignore
from bootc_builder.errors import ContextError
from bootc_builder.ignore import (
    IgnoreRules,
    PatternInfo,
    clean_path,
    find_ignore_file,
    load_ignore_rules,
)


def rules(*lines: str) -> IgnoreRules:
    return IgnoreRules.from_lines(lines)


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        ("", "."),
        (".", "."),
        ("./a", "a"),
        ("a/./b", "a/b"),
        ("a//b", "a/b"),
        ("a/b/", "a/b"),
        ("a/../b", "b"),
        ("a/..", "."),
        ("../a", "../a"),
        ("../../a", "../../a"),
        ("a/../../b", "../b"),
        ("/a", "/a"),
        ("//a", "/a"),
        ("/..", "/"),
        ("/../a", "/a"),
        ("!a/../b", "b"),
    ],
)
def test_clean_path_matches_go(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


def test_parse_skips_comments_and_blank_lines() -> None:
    parsed = rules("# comment", "", "   ", "#", "/", "//", "a").patterns
    assert parsed == [PatternInfo("a", exclusion=False, undecided=False)]


def test_parse_hash_after_space_is_pattern() -> None:
    assert [p.text for p in rules("  #x").patterns] == ["#x"]


def test_parse_strips_slashes_then_spaces() -> None:
    parsed = rules("/build/", "dist/", "\ttabbed \r", " /spaced").patterns
    # A space before the slash keeps it, so " /spaced" can never match.
    assert [p.text for p in parsed] == ["build", "dist", "tabbed", "/spaced"]


def test_parse_keeps_characters_go_does_not_trim() -> None:
    # Python's str.strip() would remove \x1c; Go's TrimSpace keeps it.
    assert [p.text for p in rules("a\x1c").patterns] == ["a\x1c"]


def test_parse_cleans_paths() -> None:
    parsed = rules("./a", "b/../c", "d/./e", "!./f", "!/g", "!h/./i")
    assert [(p.text, p.exclusion) for p in parsed.patterns] == [
        ("a", False),
        ("c", False),
        ("d/e", False),
        ("f", True),
        ("g", True),
        ("h/i", True),
    ]


def test_parse_bang_lost_by_cleaning() -> None:
    # Go cleans "!a/../b" as a whole, which removes the "!".
    assert rules("!a/../b").patterns == [PatternInfo("b", False, False)]


@pytest.mark.parametrize("line", ["!", "!/", "/!", "  !  "])
def test_parse_lone_bang_is_error(line: str) -> None:
    with pytest.raises(ContextError, match=r"line 2 of \.containerignore"):
        IgnoreRules.from_lines(["a", line], source=".containerignore")


@pytest.mark.parametrize(
    "pattern",
    ["[", "a[", "[]", "[]a]", "[-a]", "[a-]", "[^]", "[a", "a\\", "[a\\", "x*[b"],
)
def test_parse_malformed_glob_is_error(pattern: str) -> None:
    with pytest.raises(ContextError, match="invalid ignore pattern"):
        rules(pattern)


@pytest.mark.parametrize(
    "pattern", ["[a]]", "]", "-", "[\\]]", "[\\-a]", "[!a]", "[ab-c]", "a-b"]
)
def test_parse_accepts_valid_glob(pattern: str) -> None:
    assert len(rules(pattern).patterns) == 1


MATCHES = [
    # (patterns, path, excluded)
    (["*.md"], "top.md", True),
    (["*.md"], "docs/x.md", False),
    (["*.md"], "a.md/inner", True),
    (["docs"], "docs", True),
    (["docs"], "docs/a/b", True),
    (["docs"], "docsx", False),
    (["/build"], "build/out", True),
    (["/build"], "sub/build", False),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["a*c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[a-c]x"], "dx", False),
    (["[^a-c]x"], "dx", True),
    (["[^a-c]x"], "ax", False),
    (["[!a]x"], "!x", True),
    (["[!a]x"], "bx", False),
    (["a[+-0]x"], "a/x", True),
    (["\\*x"], "*x", True),
    (["\\*x"], "ax", False),
    (["\\[x\\]"], "[x]", True),
    (["a.b"], "axb", False),
    (["a$"], "a$", True),
    (["**"], "anything/at/all", True),
    (["**/x"], "x", True),
    (["**/x"], "a/b/x", True),
    (["**/x"], "a/bx", False),
    (["x/**"], "x", False),
    (["x/**"], "x/y", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/1/2/b", True),
    (["a/**/b"], "a/1b", False),
    (["a**b"], "ab", True),
    (["a**b"], "ax/b", True),
    (["a**b"], "axb", False),
    (["***c"], "zc", True),
    (["***c"], "d/zc", True),
    (["**/*.pyc"], "a/b/c.pyc", True),
    (["**/*.pyc"], "c.pyc", True),
    (["src/**/test/*.py"], "src/test/a.py", True),
    (["src/**/test/*.py"], "src/x/y/test/a.py", True),
    (["src/**/test/*.py"], "src/x/test/data/a.py", False),
    (["src/**/test/*.py"], "src/x/y/test/a.txt", False),
    (["*.md", "!keep.md"], "keep.md", False),
    (["!keep.md", "*.md"], "keep.md", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/a.md", True),
    (["*", "!src"], "src/deep/file", False),
    (["*", "!src"], "other", True),
    (["."], "a", False),
    (["données/*.txt"], "données/a.txt", True),
    (["é?"], "éa", True),
    (["é?"], "éaa", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), MATCHES)
def test_is_excluded(patterns: list[str], path: str, excluded: bool) -> None:
    assert rules(*patterns).is_excluded(path) is excluded


def test_is_excluded_never_root() -> None:
    everything = rules("**", "*", ".")
    assert not everything.is_excluded("")
    assert not everything.is_excluded(".")


def test_newline_stops_directory_match() -> None:
    # Go's "." does not match a newline, so "(/.*)?$" stops at one and Podman
    # keeps "dir/a\nb" even though "dir" is excluded.
    matcher = rules("dir", "**/x")
    assert not matcher.is_excluded("dir/a\nb")
    assert matcher.is_excluded("dir/ab")
    assert not matcher.is_excluded("a\nb/x")
    assert not matcher.is_excluded("a\nb")
    assert rules("?").is_excluded("\n")
    assert rules("*").is_excluded("a\nb")


@pytest.mark.parametrize(
    ("pattern", "path_podman_excludes", "path_podman_keeps"),
    [
        ("file (1).txt", "file 1.txt", "file (1).txt"),
        ("a+b", "aab", "a+b"),
        ("x{2}", "xx", "x{2}"),
        ("p|q", "q", "p|q"),
        ("\\d", "7", "d"),
        ("[[:digit:]]", "7", ":"),
        ("[a*]", "a", "*"),
        ("[z-a]", "z", "a"),
    ],
)
def test_regex_syntax_leaves_decision_to_service(
    pattern: str, path_podman_excludes: str, path_podman_keeps: str
) -> None:
    matcher = rules(pattern)
    assert matcher.patterns[0].undecided
    assert not matcher.is_excluded(path_podman_excludes)
    assert not matcher.is_excluded(path_podman_keeps)


def test_undecided_pattern_keeps_earlier_decision() -> None:
    # An undecided exclusion cannot undo an exclusion, and an undecided
    # exception cannot undo an inclusion.
    assert rules("a", "a(b)").is_excluded("a")
    assert not rules("a", "!a(b)").is_excluded("a")
    assert not rules("!a(b)").is_excluded("x")
    assert rules("a(b)", "a").is_excluded("a")


@pytest.mark.parametrize(
    ("patterns", "directory", "expected"),
    [
        (["docs", "!docs/README.md"], "docs", True),
        (["docs"], "docs", False),
        (["docs", "!other/x"], "docs", False),
        (["docs", "!*/keep"], "docs", True),
        (["docs", "!**/keep"], "docs", True),
        (["docs", "!d?cs/keep"], "docs", True),
        (["a", "!a/b/c/d.txt"], "a", True),
        (["a", "!a/b/c/d.txt"], "a/b", True),
        (["a", "!a/b/c/d.txt"], "a/x", False),
        # Podman 4.3 descends when the exception's text starts with the path.
        (["doc", "!docs/README.md"], "doc", True),
        # An exception before the pattern that excludes the directory is
        # overridden under it.
        (["!vendor", "vendor/drop"], "vendor/drop", False),
        (["vendor/drop", "!vendor/drop/keep"], "vendor/drop", True),
        (["!*/keep", "*"], "docs", False),
        (["docs", "!x(y)"], "docs", True),
        (["!x(y)", "docs"], "docs", False),
    ],
)
def test_may_reinclude_under(
    patterns: list[str], directory: str, expected: bool
) -> None:
    assert rules(*patterns).may_reinclude_under(directory) is expected


def test_cache_restart_keeps_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ignore, "_MAX_CACHED_STATES", 2)
    matcher = rules("**/a*b*c", "!**/keep")
    paths = [f"dir{i}/a{'x' * i}b{'y' * i}c" for i in range(30)]
    assert all(matcher.is_excluded(path) for path in paths)
    assert not matcher.is_excluded("dir/keep")
    assert len(matcher._masks) <= len("dir/keep") + 2


def test_pathological_pattern_is_linear() -> None:
    matcher = rules("**/" * 30 + "*a*a*a*a*a*a*a*a*b")
    path = "/".join(["a" * 200] * 40)
    assert not matcher.is_excluded(path)
    assert matcher.is_excluded(path + "b")


# Finding and loading the ignore file


def test_find_prefers_containerignore(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    (tmp_path / ".containerignore").write_text("b\n")
    assert find_ignore_file(tmp_path) == tmp_path / ".containerignore"


def test_find_falls_back_to_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    assert find_ignore_file(tmp_path) == tmp_path / ".dockerignore"


def test_find_skips_dangling_link(tmp_path: Path) -> None:
    (tmp_path / ".containerignore").symlink_to("missing")
    (tmp_path / ".dockerignore").write_text("a\n")
    assert find_ignore_file(tmp_path) == tmp_path / ".dockerignore"


def test_find_none(tmp_path: Path) -> None:
    assert find_ignore_file(tmp_path) is None
    assert find_ignore_file(tmp_path, tmp_path / "Containerfile") is None


def test_find_per_containerfile_first(tmp_path: Path) -> None:
    (tmp_path / ".containerignore").write_text("a\n")
    containerfile = tmp_path / "sub" / "Containerfile"
    containerfile.parent.mkdir()
    (tmp_path / "sub" / "Containerfile.containerignore").write_text("b\n")
    found = find_ignore_file(tmp_path, containerfile)
    assert found == tmp_path / "sub" / "Containerfile.containerignore"


def test_find_per_containerfile_dockerignore_wins(tmp_path: Path) -> None:
    (tmp_path / "Containerfile.containerignore").write_text("a\n")
    (tmp_path / "Containerfile.dockerignore").write_text("b\n")
    found = find_ignore_file(tmp_path, tmp_path / "Containerfile")
    assert found == tmp_path / "Containerfile.dockerignore"


def test_load_returns_name_and_rules(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_bytes(b"# c\r\n*.md\r\n!keep.md\n")
    name, loaded = load_ignore_rules(tmp_path)
    assert name == ".dockerignore"
    assert loaded.is_excluded("a.md")
    assert not loaded.is_excluded("keep.md")


def test_load_splits_only_on_newline(tmp_path: Path) -> None:
    # Go splits on "\n" alone, so "\v" inside a line stays in the pattern.
    (tmp_path / ".containerignore").write_bytes(b"a\vb\n")
    _name, loaded = load_ignore_rules(tmp_path)
    assert [p.text for p in loaded.patterns] == ["a\vb"]


def test_load_without_file(tmp_path: Path) -> None:
    name, loaded = load_ignore_rules(tmp_path)
    assert name is None
    assert loaded.patterns == []
    assert not loaded.is_excluded("anything")


def test_load_outside_file_has_absolute_name(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    outside = tmp_path / "Containerfile"
    (tmp_path / "Containerfile.containerignore").write_text("x\n")
    name, loaded = load_ignore_rules(context, outside)
    assert name == str(tmp_path / "Containerfile.containerignore")
    assert loaded.is_excluded("x")


def test_load_directory_is_error(tmp_path: Path) -> None:
    (tmp_path / ".containerignore").mkdir()
    with pytest.raises(ContextError, match="cannot read ignore file"):
        load_ignore_rules(tmp_path)


def test_load_unreadable_is_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".containerignore").write_text("a\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ContextError, match="Permission denied"):
        load_ignore_rules(tmp_path)


def test_load_invalid_pattern_names_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n[bad\n")
    with pytest.raises(ContextError, match=r"line 2 of \.dockerignore"):
        load_ignore_rules(tmp_path)


def test_load_non_utf8_bytes(tmp_path: Path) -> None:
    (tmp_path / ".containerignore").write_bytes(b"\xff*\n")
    _name, loaded = load_ignore_rules(tmp_path)
    assert loaded.is_excluded("\udcffabc")
    assert not loaded.is_excluded("abc")
