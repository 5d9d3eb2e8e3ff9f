"""Property tests: any text either parses into a consistent stage graph or raises
ContainerfileError, and parsing always finishes quickly.

Inputs are random text, lines assembled from Containerfile fragments, and the
stage cases with random edits. Example counts are kept small so that the module
runs in a few seconds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootc_builder.containerfile import Containerfile, parse_containerfile
from bootc_builder.errors import ContainerfileError
from bootc_builder.stages import needed_stages, resolve_target
from tests.unit.test_stage_cases import find_case_dir

# A deadline well above the usual few milliseconds per parse, to catch hangs.
SETTINGS = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)

FRAGMENTS = [
    "FROM ",
    "from ",
    "ARG ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ONBUILD ",
    "LABEL ",
    "BOGUS ",
    "AS ",
    " as ",
    "img",
    "scratch",
    "a",
    "b",
    "0",
    "1",
    "99",
    "=",
    "--from=",
    "--mount=",
    "type=bind,",
    "type=cache,",
    "from=",
    ",target=/x",
    "--platform=$BUILDPLATFORM ",
    "$",
    "${",
    "}",
    "A",
    "TARGETARCH",
    ":-",
    ":+",
    ":?",
    "-",
    "+",
    "#",
    "##",
    "%",
    "/",
    "//",
    "*",
    "[",
    "]",
    "'",
    '"',
    "\\",
    "<<EOF",
    "<<-'EOF'",
    "EOF",
    "# escape=`",
    "`",
    " ",
    "\t",
    "\n",
    "\\\n",
    "\r\n",
]

line_strategy = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)
assembled_text = st.lists(line_strategy, min_size=1, max_size=12).map("\n".join)
build_args_strategy = st.dictionaries(
    st.sampled_from(["A", "B", "TAG", "TARGETARCH", "FLAVOR"]),
    st.text(alphabet="ab01-_/:${}", max_size=6),
    max_size=3,
)


def load_case_texts() -> list[str]:
    directory = find_case_dir()
    assert directory is not None, "stage cases not found"
    return [
        path.read_text(encoding="utf-8")
        for path in sorted(directory.glob("*.Containerfile"))
    ]


CASE_TEXTS = load_case_texts()


@st.composite
def mutated_case(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(CASE_TEXTS)).split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=max(len(lines) - 1, 0)))
        edit = draw(st.sampled_from(["delete", "duplicate", "insert", "splice"]))
        if edit == "delete" and lines:
            del lines[position]
        elif edit == "duplicate" and lines:
            lines.insert(position, lines[position])
        elif edit == "insert":
            lines.insert(position, draw(line_strategy))
        elif lines:
            line = lines[position]
            cut = draw(st.integers(min_value=0, max_value=len(line)))
            lines[position] = line[:cut] + draw(st.sampled_from(FRAGMENTS)) + line[cut:]
    return "\n".join(lines)


def check_outcome(text: str, build_args: dict[str, str]) -> None:
    """Parse ``text`` and check the result, or accept a ContainerfileError."""
    try:
        cf = parse_containerfile(text, build_args, source="prop.Containerfile")
    except ContainerfileError as error:
        message = str(error)
        assert message.startswith("prop.Containerfile")
        assert "\n" not in message
        return
    check_graph(cf)


def check_graph(cf: Containerfile) -> None:
    assert cf.stages
    for position, stage in enumerate(cf.stages):
        assert stage.index == position
        assert stage.base
        assert stage.instructions[0].keyword == "FROM"
        assert stage.instructions[0].line == stage.line
        assert list(stage.depends_on) == sorted(set(stage.depends_on))
        assert all(0 <= other < stage.index for other in stage.depends_on)
        assert resolve_target(cf, stage.label) is stage
        needed = needed_stages(cf, stage)
        assert needed == sorted(set(needed))
        assert needed[-1] == stage.index
        for index in needed:
            assert set(cf.stages[index].depends_on) <= set(needed)


@SETTINGS
@given(text=st.text(max_size=300), build_args=build_args_strategy)
def test_random_text(text: str, build_args: dict[str, str]) -> None:
    check_outcome(text, build_args)


@SETTINGS
@given(text=assembled_text, build_args=build_args_strategy)
def test_assembled_fragments(text: str, build_args: dict[str, str]) -> None:
    check_outcome(text, build_args)


@SETTINGS
@given(text=mutated_case(), build_args=build_args_strategy)
def test_mutated_cases(text: str, build_args: dict[str, str]) -> None:
    check_outcome(text, build_args)


@settings(max_examples=100, deadline=2000)
@given(word=st.text(alphabet="abcxyz0129._-:/@", min_size=1, max_size=40))
def test_plain_word_expands_to_itself(word: str) -> None:
    # The prefix keeps the parser from reading a word such as "--x" as a flag.
    cf = parse_containerfile(f"ARG A=1\nFROM img{word}\n")
    assert cf.stages[0].base == f"img{word}"


@settings(max_examples=100, deadline=2000)
@given(value=st.text(alphabet="abc/:.", max_size=20), default=st.sampled_from("xyz"))
def test_default_forms(value: str, default: str) -> None:
    text = f"ARG V={value}\nFROM img:${{V:-{default}}}-${{V:+set}}\n"
    cf = parse_containerfile(text)
    expected_alternative = "set" if value else ""
    assert cf.stages[0].base == f"img:{value or default}-{expected_alternative}"
