"""Tests for reading Containerfiles, ARG expansion, dependencies and validation.

Where a test states podman behaviour, it was checked with podman 4.3.1.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from bootc_builder.containerfile import (
    PLATFORM_ARGS,
    Containerfile,
    Instruction,
    default_platform_args,
    parse_containerfile,
    read_containerfile,
)
from bootc_builder.errors import ContainerfileError, ExitCode


def parse(text: str, build_args: dict[str, str] | None = None) -> Containerfile:
    return parse_containerfile(textwrap.dedent(text).lstrip("\n"), build_args or {})


def parse_error(text: str, build_args: dict[str, str] | None = None) -> str:
    with pytest.raises(ContainerfileError) as raised:
        parse(text, build_args)
    message = str(raised.value)
    assert "\n" not in message
    return message


def bases(cf: Containerfile) -> list[str]:
    return [stage.base for stage in cf.stages]


def depends(cf: Containerfile) -> list[tuple[int, ...]]:
    return [stage.depends_on for stage in cf.stages]


# --- Reading files ----------------------------------------------------------------


def test_read_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_text("FROM scratch AS a\nCOPY x /x\n", encoding="utf-8")
    cf = read_containerfile(path)
    assert cf.path == str(path)
    assert cf.stages[0].name == "a"
    assert cf.stages[0].base == "scratch"


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(ContainerfileError, match="file not found") as raised:
        read_containerfile(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert raised.value.exit_code == ExitCode.USAGE


def test_read_directory(tmp_path: Path) -> None:
    with pytest.raises(ContainerfileError, match="is a directory"):
        read_containerfile(tmp_path)


def test_read_fifo_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ContainerfileError, match="not a regular file"):
        read_containerfile(fifo)


def test_read_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "Containerfile"
    path.write_text("FROM scratch\n", encoding="utf-8")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod cannot make a file unreadable for root, so the read is replaced.
    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ContainerfileError, match="permission denied"):
        read_containerfile(path)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_read_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "Containerfile"
    path.write_bytes(content)
    with pytest.raises(ContainerfileError, match="empty"):
        read_containerfile(path)


def test_read_comments_only(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_text("# syntax=docker/dockerfile:1\n# nothing here\n")
    with pytest.raises(ContainerfileError, match="no instructions"):
        read_containerfile(path)


def test_read_binary_with_nul(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_bytes(b"FROM scratch\n\x00\x01\x02")
    with pytest.raises(ContainerfileError, match="NUL"):
        read_containerfile(path)


def test_read_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_bytes(b"FROM scratch\nLABEL a=\xff\xfe\n")
    with pytest.raises(ContainerfileError, match="invalid UTF-8 at byte 21"):
        read_containerfile(path)


def test_read_utf8_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "Containerfile"
    path.write_bytes(b"\xef\xbb\xbfFROM scratch AS a\r\nRUN x\r\nFROM a\r\n")
    cf = read_containerfile(path)
    assert [stage.line for stage in cf.stages] == [1, 3]
    assert depends(cf) == [(), (0,)]


def test_parse_rejects_nul_in_text() -> None:
    # The Go parser would silently stop at the NUL.
    with pytest.raises(ContainerfileError, match="NUL"):
        parse_containerfile("FROM a\n\x00RUN x\n")


def test_parse_rejects_lone_surrogate() -> None:
    # Such text crashes the process inside the dockerfile package.
    with pytest.raises(ContainerfileError, match="not valid Unicode"):
        parse_containerfile("FROM a\udc80\n")


def test_parse_uses_source_in_messages() -> None:
    with pytest.raises(ContainerfileError, match=r"^build/Containerfile\.x:2: "):
        parse_containerfile("FROM a\nBOGUS x\n", source="build/Containerfile.x")


# --- Instructions and stages ------------------------------------------------------


def test_instruction_fields() -> None:
    cf = parse(
        """
        from registry.example.com/base:1 As build
        RUN --mount=type=cache,target=/c \\
            make
        COPY --from=other --chown=1:1 a b
        """
    )
    build = cf.stages[0]
    assert build.instructions[0] == Instruction(
        keyword="FROM",
        original="from registry.example.com/base:1 As build",
        line=1,
        end_line=1,
        flags=(),
        value=("registry.example.com/base:1", "As", "build"),
    )
    run = build.instructions[1]
    assert run.keyword == "RUN"
    assert (run.line, run.end_line) == (2, 3)
    assert run.flags == ("--mount=type=cache,target=/c",)


def test_stage_fields_and_label() -> None:
    cf = parse(
        """
        FROM scratch AS ctx
        FROM registry.example.com/base:1
        COPY --from=ctx / /
        """
    )
    first, second = cf.stages
    assert (first.index, first.name, first.label, first.line) == (0, "ctx", "ctx", 1)
    assert (second.index, second.name, second.label, second.line) == (1, None, "1", 2)
    assert [i.keyword for i in second.instructions] == ["FROM", "COPY"]
    assert second.depends_on == (0,)


def test_containerfile_is_hashable_and_frozen() -> None:
    cf = parse("FROM a\n")
    hash(cf)
    with pytest.raises(AttributeError):
        cf.path = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cf.global_args["X"] = "1"  # type: ignore[index]


def test_lowercase_keywords_and_as() -> None:
    cf = parse(
        """
        from a as one
        FROM b AS two
        copy --from=one / /
        """
    )
    assert [stage.name for stage in cf.stages] == ["one", "two"]
    assert cf.stages[1].instructions[1].keyword == "COPY"
    assert depends(cf) == [(), (0,)]


def test_stage_names_keep_case() -> None:
    # podman compares stage names case-sensitively, so the name is kept as written.
    cf = parse(
        """
        FROM a AS Build
        FROM b
        COPY --from=Build / /
        """
    )
    assert cf.stages[0].name == "Build"
    assert depends(cf) == [(), (0,)]


def test_heredoc_body_is_not_instructions() -> None:
    text = (
        "FROM base AS one\n"
        "RUN <<EOF\n"
        "FROM evil AS two\n"
        "BOGUS instruction\n"
        "EOF\n"
        "COPY <<-'CONF' /etc/app.conf\n"
        "FROM=value\n"
        "\tCONF\n"
        "FROM one AS three\n"
    )
    cf = parse_containerfile(text)
    assert [stage.name for stage in cf.stages] == ["one", "three"]
    assert cf.stages[0].instructions[1].end_line == 5
    assert cf.stages[0].instructions[2].end_line == 8
    assert depends(cf) == [(), (0,)]


def test_escape_directive() -> None:
    cf = parse(
        """
        # escape=`
        FROM a AS one
        RUN echo `
            more
        FROM one
        """
    )
    assert cf.stages[0].instructions[1].end_line == 4
    assert cf.stages[1].line == 5
    assert depends(cf) == [(), (0,)]


def test_comment_inside_continuation() -> None:
    cf = parse(
        """
        FROM a
        RUN echo \\
        # a comment in the middle
            done
        FROM b
        """
    )
    assert cf.stages[1].line == 5


def test_onbuild_copy_from_is_not_a_dependency() -> None:
    cf = parse(
        """
        FROM a AS one
        FROM b
        ONBUILD COPY --from=one / /
        """
    )
    assert depends(cf) == [(), ()]


# --- ARG expansion ----------------------------------------------------------------


def test_global_args_in_from() -> None:
    cf = parse(
        """
        ARG FLAVOR="${FLAVOR:-desktop}"
        ARG TAG=stable
        FROM registry.example.com/org/${FLAVOR}:$TAG
        """
    )
    assert bases(cf) == ["registry.example.com/org/desktop:stable"]
    assert dict(cf.global_args) == {"FLAVOR": "desktop", "TAG": "stable"}


def test_build_args_override_defaults() -> None:
    text = """
        ARG FLAVOR="${FLAVOR:-desktop}"
        ARG TAG=stable
        FROM registry.example.com/org/${FLAVOR}:$TAG
        """
    cf = parse(text, {"FLAVOR": "server", "TAG": "10"})
    assert bases(cf) == ["registry.example.com/org/server:10"]
    assert dict(cf.global_args) == {"FLAVOR": "server", "TAG": "10"}


def test_build_arg_for_undeclared_name_is_ignored() -> None:
    # podman applies --build-arg only to declared ARGs, so $X stays empty.
    cf = parse("FROM img${X}\n", {"X": "-extra"})
    assert bases(cf) == ["img"]
    assert dict(cf.global_args) == {}


def test_arg_with_several_names() -> None:
    cf = parse(
        """
        ARG A B=two "C=three four"
        FROM img:${A:-none}-$B-${C}
        """
    )
    assert bases(cf) == ["img:none-two-three four"]
    assert dict(cf.global_args) == {"A": "", "B": "two", "C": "three four"}


def test_arg_sees_only_earlier_instructions() -> None:
    # Words of one ARG instruction expand with the variables set before it.
    cf = parse(
        """
        ARG A=1 B=$A
        ARG C=$A
        FROM img:${B}-${C}
        """
    )
    assert bases(cf) == ["img:-1"]


def test_later_arg_redefines_value() -> None:
    cf = parse(
        """
        ARG V=1
        ARG V=2
        FROM img:$V
        """
    )
    assert bases(cf) == ["img:2"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("$SET", "img:value"),
        ("${SET}", "img:value"),
        ("${SET:-default}", "img:value"),
        ("${EMPTY:-default}", "img:default"),
        ("${UNSET:-default}", "img:default"),
        ("${SET:+alt}", "img:alt"),
        ("${EMPTY:+alt}", "img:"),
        ("${UNSET:+alt}", "img:"),
        ("${UNSET}", "img:"),
        ("\\$SET", "img:$SET"),
        ("'$SET'", "img:$SET"),
        ('"$SET"', "img:value"),
        ('"\\$SET"', "img:$SET"),
        ("$", "img:$"),
        ("${UNSET:-${SET}}", "img:value"),
        ("${UNSET:-'$SET'}", "img:$SET"),
        ("${SET:?required}", "img:value"),
        ("$SET_more", "img:"),
        ("${SET}_more", "img:value_more"),
        ("$1", "img:"),
    ],
)
def test_expansion_forms(reference: str, expected: str) -> None:
    cf = parse(f"ARG SET=value EMPTY=\nFROM img:{reference}\n")
    assert bases(cf) == [expected]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("${PATH_VALUE#*/}", "org/img:1.2"),
        ("${PATH_VALUE##*/}", "org/img:1.2"),  # * does not match "/" in buildah.
        ("${PATH_VALUE%.*}", "reg/org/img:1"),
        ("${PATH_VALUE%%:*}", "reg/org/img"),
        ("${PATH_VALUE/org/team}", "reg/team/img:1.2"),
        ("${PATH_VALUE//[.:]/_}", "reg/org/img_1_2"),
        ("${PATH_VALUE/#reg/quay}", "quay/org/img:1.2"),
        ("${PATH_VALUE/%2/3}", "reg/org/img:1.3"),
        ("${PATH_VALUE/nothing/x}", "reg/org/img:1.2"),
        ("${PATH_VALUE/org}", "reg//img:1.2"),
        ("${PATH_VALUE/[/x}", "reg/org/img:1.2"),  # invalid pattern matches nothing
        # The pattern ends at the first "/", even inside a class, as in buildah.
        ("${PATH_VALUE//[/:]/_}", "reg/org/img:1.2"),
    ],
)
def test_pattern_expansion(reference: str, expected: str) -> None:
    cf = parse(f"ARG PATH_VALUE=reg/org/img:1.2\nFROM {reference}\n")
    assert bases(cf) == [expected]


@pytest.mark.parametrize("form", ["-", "+", "?"])
def test_expansion_without_colon_rejected(form: str) -> None:
    # podman rejects ${VAR-word} and ${VAR+word}, and buildah's source has no
    # ${VAR?word} either. Only the forms with a colon exist.
    message = parse_error(f"FROM img:${{V{form}x}}\n")
    assert message.startswith("Containerfile:1: ")
    assert f"Write ${{V:{form}word}}" in message


def test_required_variable_missing() -> None:
    message = parse_error("ARG V\nFROM img:${V:?needs_a_tag}\n")
    assert "V is required: needs_a_tag" in message
    assert "--build-arg V=" in message


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ("${V", "missing '}'"),
        ("${V:-x", "missing '}'"),
        ("'open", "missing closing single quote"),
        ('"open', "missing closing double quote"),
        ("${V:=x}", "not supported by podman"),
        ("${V[0]}", "invalid reference"),
        ("${V#}", "needs a pattern"),
        ("${V/}", "needs a pattern"),
    ],
)
def test_expansion_errors(reference: str, fragment: str) -> None:
    message = parse_error(f"ARG V=x\nFROM img:{reference}\n")
    assert message.startswith("Containerfile:2: in FROM ")
    assert fragment in message


def test_arg_value_growth_is_bounded() -> None:
    lines = ["ARG A=aaaaaaaaaaaaaaaa"] + ["ARG A=$A$A$A$A"] * 12 + ["FROM img"]
    message = parse_error("\n".join(lines) + "\n")
    assert "more than 65535 characters" in message


def test_deep_nesting_is_rejected() -> None:
    word = "${A:-" * 200 + "x" + "}" * 200
    message = parse_error(f"FROM {word}\n")
    assert "nested more than" in message


def test_platform_args_available_in_from() -> None:
    platform_args = default_platform_args()
    cf = parse("FROM --platform=$BUILDPLATFORM img:$TARGETOS-$TARGETARCH\n")
    expected = f"img:{platform_args['TARGETOS']}-{platform_args['TARGETARCH']}"
    assert bases(cf) == [expected]


def test_platform_args_overridden_by_build_args() -> None:
    cf = parse("FROM img:$TARGETARCH\n", {"TARGETARCH": "arm64"})
    assert bases(cf) == ["img:arm64"]


def test_default_platform_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    values = default_platform_args()
    assert set(values) == set(PLATFORM_ARGS)
    assert values["TARGETARCH"] == "arm64"
    assert values["TARGETPLATFORM"] == "linux/arm64"
    assert values["BUILDOS"] == "linux"
    monkeypatch.setattr("platform.machine", lambda: "armv7l")
    values = default_platform_args()
    assert values["TARGETPLATFORM"] == "linux/arm/v7"
    assert values["TARGETVARIANT"] == "v7"
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert default_platform_args()["BUILDARCH"] == "amd64"


def test_declared_platform_arg_in_global_args() -> None:
    cf = parse("ARG TARGETARCH\nFROM img\n", {"TARGETARCH": "s390x"})
    assert dict(cf.global_args) == {"TARGETARCH": "s390x"}


def test_empty_base_is_rejected_with_hint() -> None:
    message = parse_error("ARG IMAGE\nFROM ${IMAGE}\n")
    assert message.startswith("Containerfile:2: ")
    assert "expands to an empty string" in message
    assert "Declare IMAGE with ARG" in message


# --- Dependencies -----------------------------------------------------------------


def test_from_earlier_stage() -> None:
    cf = parse(
        """
        FROM img AS base
        FROM base AS child
        FROM child
        """
    )
    assert depends(cf) == [(), (0,), (1,)]
    assert bases(cf) == ["img", "base", "child"]


def test_from_selected_by_arg() -> None:
    text = """
        ARG FLAVOR=prod
        FROM scratch AS base-prod
        FROM scratch AS base-dev
        FROM base-${FLAVOR} AS final
        """
    assert depends(parse(text)) == [(), (), (0,)]
    assert depends(parse(text, {"FLAVOR": "dev"})) == [(), (), (1,)]


def test_from_index_of_unnamed_stage() -> None:
    # podman names an unnamed stage by its index, so FROM 0 uses stage 0.
    cf = parse(
        """
        FROM img
        FROM 0
        """
    )
    assert depends(cf) == [(), (0,)]


def test_from_index_of_named_stage_is_image() -> None:
    # For a named stage podman treats FROM 1 as an image called "1".
    cf = parse(
        """
        FROM img
        FROM img AS named
        FROM 1
        """
    )
    assert depends(cf) == [(), (), ()]


def test_from_later_stage_name_is_image() -> None:
    # podman looks up FROM only among earlier stages, so this pulls image "b".
    cf = parse(
        """
        FROM b AS a
        FROM img AS b
        """
    )
    assert depends(cf) == [(), ()]


def test_copy_from_name_and_index() -> None:
    cf = parse(
        """
        FROM img AS one
        FROM img AS two
        FROM img
        COPY --from=one / /
        COPY --from=1 / /
        """
    )
    assert depends(cf) == [(), (), (0, 1)]


def test_copy_from_image_is_not_a_stage() -> None:
    cf = parse(
        """
        FROM img AS one
        FROM img
        COPY --from=registry.example.com/tools:1 /bin/x /bin/x
        COPY --from=docker.io/library/busybox / /
        """
    )
    assert depends(cf) == [(), ()]


def test_copy_from_expands_stage_args() -> None:
    cf = parse(
        """
        ARG SOURCE=two
        FROM img AS one
        FROM img AS two
        FROM img
        ARG SOURCE
        COPY --from=$SOURCE / /
        """
    )
    assert depends(cf) == [(), (), (1,)]


def test_copy_from_global_arg_not_redeclared() -> None:
    # A global ARG is not visible inside a stage until the stage declares it.
    message = parse_error(
        """
        ARG SOURCE=one
        FROM img AS one
        FROM img
        COPY --from=$SOURCE / /
        """
    )
    assert message.startswith("Containerfile:4: COPY --from=$SOURCE names no stage")


def test_copy_from_stage_arg_with_build_arg() -> None:
    cf = parse(
        """
        FROM img AS one
        FROM img AS two
        FROM img
        ARG SOURCE=one
        COPY --from=${SOURCE} / /
        """,
        {"SOURCE": "two"},
    )
    assert depends(cf) == [(), (), (1,)]


def test_env_inherited_from_base_stage() -> None:
    cf = parse(
        """
        FROM img AS one
        FROM img AS parent
        ENV SOURCE=one
        FROM parent
        COPY --from=$SOURCE / /
        """
    )
    assert depends(cf) == [(), (), (0, 1)]


def test_run_mounts() -> None:
    cf = parse(
        """
        FROM scratch AS ctx
        FROM img AS cachey
        RUN --mount=type=cache,target=/var/cache --mount=type=tmpfs,target=/tmp true
        FROM img AS seed
        FROM img
        RUN --mount=type=bind,from=ctx,source=/s,target=/run/s \\
            --mount=from=cachey,dst=/other \\
            --mount=type=cache,from=seed,target=/c \\
            --mount=type=secret,id=key /run/s/build.sh
        """
    )
    assert depends(cf) == [(), (), (), (0, 1, 2)]


def test_run_mount_quoted_fields_and_case() -> None:
    cf = parse(
        """
        FROM img AS ctx
        FROM img AS other
        FROM img
        RUN --mount="type=bind,FROM=ctx,target=/x" --mount=type=bind,"from=other" true
        """
    )
    assert depends(cf) == [(), (), (0, 1)]


def test_run_mount_from_index_and_image() -> None:
    cf = parse(
        """
        FROM img AS ctx
        FROM img
        RUN --mount=from=0,target=/a --mount=from=quay.io/x/y:1,target=/b true
        """
    )
    assert depends(cf) == [(), (0,)]


def test_depends_on_is_sorted_and_unique() -> None:
    cf = parse(
        """
        FROM img AS a
        FROM img AS b
        FROM b
        COPY --from=a / /
        COPY --from=b / /
        COPY --from=0 / /
        """
    )
    assert depends(cf) == [(), (), (0, 1)]


# --- Validation -------------------------------------------------------------------


def test_no_from() -> None:
    message = parse_error("ARG A=1\n")
    assert message == (
        "Containerfile: no FROM instruction. Start the first stage with FROM IMAGE"
    )


@pytest.mark.parametrize("keyword", ["RUN", "ENV", "COPY", "LABEL"])
def test_instruction_before_first_from(keyword: str) -> None:
    message = parse_error(f"ARG A=1\n{keyword} a=b\nFROM img\n")
    assert message.startswith(f"Containerfile:2: {keyword} before the first FROM")


def test_unknown_instruction() -> None:
    message = parse_error("FROM img\nRUN ok\nCOPPY a b\n")
    assert message.startswith("Containerfile:3: unknown instruction 'COPPY'")


def test_unknown_onbuild_trigger() -> None:
    message = parse_error("FROM img\nONBUILD RUNN x\n")
    assert "unknown instruction 'RUNN' after ONBUILD" in message


def test_onbuild_from_rejected() -> None:
    message = parse_error("FROM img\nONBUILD FROM other\n")
    assert message.startswith("Containerfile:2: ONBUILD FROM is not allowed")


def test_unterminated_heredoc() -> None:
    message = parse_error(
        """
        FROM img
        RUN <<A
        echo one
        A
        RUN <<EOF
        echo two
        FROM other
        """
    )
    assert message.startswith("Containerfile:5: unterminated heredoc")


def test_parse_error_located() -> None:
    message = parse_error("FROM img\nRUN ok\nENV ONLY_NAME\nRUN later\n")
    assert message.startswith("Containerfile:3: ENV must have two arguments")


def test_overlong_line() -> None:
    message = parse_error("FROM img\nRUN echo ok\nRUN " + "x" * 70000 + "\n")
    assert message.startswith("Containerfile:3: line longer than 65535 bytes")


@pytest.mark.parametrize(
    "line", ["FROM", "FROM img extra", "FROM img AS", "FROM img AS a b", "FROM a b c"]
)
def test_from_argument_count(line: str) -> None:
    message = parse_error(f"{line}\n")
    assert message.startswith("Containerfile:1: FROM takes an image")


def test_arg_without_name() -> None:
    message = parse_error("FROM img\nARG\n")
    assert message.startswith("Containerfile:2: ARG without a name")


def test_duplicate_stage_names() -> None:
    # podman accepts duplicates: --target x builds the first stage named x, and
    # FROM x or --from=x use the latest stage named x before them.
    message = parse_error(
        """
        FROM img AS x
        FROM img AS y
        FROM img AS x
        """
    )
    assert message.startswith(
        "Containerfile:3: stage name 'x' is already used by stage 0 at line 1."
    )
    assert "build stage 0 for --target x" in message


def test_numeric_stage_name() -> None:
    message = parse_error("FROM img AS 1\n")
    assert "stage name '1' is a number" in message


def test_copy_from_itself_by_name() -> None:
    message = parse_error("FROM img AS a\nCOPY --from=a / /\n")
    assert message.startswith("Containerfile:2: COPY --from=a names the stage it is in")


def test_copy_from_itself_by_index() -> None:
    message = parse_error("FROM img\nFROM img\nCOPY --from=1 / /\n")
    assert message.startswith("Containerfile:3: COPY --from=1 names the stage it is in")


def test_copy_from_later_stage_by_name() -> None:
    message = parse_error(
        """
        FROM img AS a
        COPY --from=b / /
        FROM img AS b
        """
    )
    assert message.startswith("Containerfile:2: COPY --from=b names stage 'b'")
    assert "starts later, at line 3" in message


def test_copy_from_later_stage_by_index() -> None:
    message = parse_error(
        """
        FROM img AS a
        COPY --from=1 / /
        FROM img
        """
    )
    assert message.startswith("Containerfile:2: COPY --from=1 names stage '1'")


@pytest.mark.parametrize("index", ["2", "-1", "9" * 5000])
def test_copy_from_index_out_of_range(index: str) -> None:
    message = parse_error(f"FROM img\nFROM img\nCOPY --from={index} / /\n")
    assert message.startswith(f"Containerfile:3: COPY --from={index[:50]}")
    assert "names stage index" in message
    assert "the only stage indexes are 0 to 1" in message


def test_mount_from_later_stage() -> None:
    message = parse_error(
        """
        FROM img AS a
        RUN --mount=type=bind,from=b,target=/b true
        FROM img AS b
        """
    )
    assert message.startswith("Containerfile:2: RUN --mount=...,from=b names stage")


def test_mount_from_itself() -> None:
    message = parse_error("FROM img AS a\nRUN --mount=from=a,target=/x true\n")
    assert "names the stage it is in" in message


def test_copy_from_wrong_case() -> None:
    message = parse_error(
        """
        FROM img AS Build
        FROM img
        COPY --from=build / /
        """
    )
    assert message.startswith("Containerfile:3: COPY --from=build matches stage")
    assert "Write the name as 'Build'" in message


def test_add_from_rejected() -> None:
    # podman 4.3.1 fails with "ADD only supports the --chmod=<permissions> and the
    # --chown=<uid:gid> flag".
    message = parse_error("FROM img AS a\nFROM img\nADD --from=a / /\n")
    assert message.startswith("Containerfile:3: ADD does not support --from")


@pytest.mark.parametrize("flag", ["--from=", "--from", "--from=$UNSET"])
def test_copy_from_empty(flag: str) -> None:
    message = parse_error(f"FROM img\nCOPY {flag} a b\n")
    assert message.startswith(f"Containerfile:2: COPY {flag} names no stage or image")


def test_invalid_mount_csv() -> None:
    # The parser removes one level of shell quotes, so the single quotes keep the
    # double quotes for the CSV reader.
    message = parse_error("FROM img\nRUN --mount='type=bind,\"from=a\"x' true\n")
    assert message.startswith("Containerfile:2: invalid --mount=")
