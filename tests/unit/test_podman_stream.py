"""Reading the chunked JSON stream of the build endpoint in batches."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from bootc_builder import podman_api
from bootc_builder.podman_api import (
    _chunked_payloads,
    _decode_batch,
    _json_messages,
)


def _reader(parts: list[bytes]) -> Callable[[int], bytes]:
    """A read1 that returns the given parts, then end of file."""
    queue = iter(parts)
    return lambda _size: next(queue, b"")


def _chunked(payload: bytes, cuts: list[int], *, extension: bool = False) -> bytes:
    """Encode ``payload`` as HTTP chunks cut at ``cuts``, with the last chunk."""
    bounds = sorted({0, len(payload), *(c for c in cuts if 0 < c < len(payload))})
    body = b""
    for start, end in itertools.pairwise(bounds):
        size = f"{end - start:x}".encode()
        if extension:
            size += b";name=value"
        body += size + b"\r\n" + payload[start:end] + b"\r\n"
    return body + b"0\r\n\r\n"


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _merged(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join neighbouring stream messages, which the reader may deliver as one."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if set(message) == {"stream"} and merged and set(merged[-1]) == {"stream"}:
            merged[-1] = {"stream": merged[-1]["stream"] + message["stream"]}
        else:
            merged.append(dict(message))
    return merged


_TEXT = st.text(
    alphabet=st.sampled_from(
        ["a", "é", '"', "\\", "\n", "\t", "\x00", "\u2028", "😀", "}"]
    ),
    max_size=40,
)
_MESSAGE = st.one_of(
    st.builds(lambda text: {"stream": text}, _TEXT),
    st.builds(lambda text: {"error": text, "errorDetail": {"message": text}}, _TEXT),
    st.builds(lambda text: {"aux": {"ID": "sha256:" + text}}, _TEXT),
    st.builds(lambda text: {"stream": text, "extra": 1}, _TEXT),
    # Starts and ends like a stream message, so it joins a run at first.
    st.builds(lambda text: {"stream": text, "error": text}, _TEXT),
)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(_MESSAGE, max_size=20),
    ascii_only=st.booleans(),
    compact=st.booleans(),
    chunk_cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
    read_cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    extension=st.booleans(),
)
def test_batches_carry_every_message_in_order(
    messages: list[dict[str, Any]],
    ascii_only: bool,
    compact: bool,
    chunk_cuts: list[int],
    read_cuts: list[int],
    extension: bool,
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    payload = b"".join(
        json.dumps(m, ensure_ascii=ascii_only, separators=separators).encode() + b"\n"
        for m in messages
    )
    body = _chunked(payload, chunk_cuts, extension=extension)

    decoded = list(_json_messages(_chunked_payloads(_reader(_split(body, read_cuts)))))

    assert _merged(decoded) == _merged(messages)


def test_chunks_read_together_come_out_as_one_batch() -> None:
    # Compact JSON and one chunk per message, as Podman sends them.
    lines = [
        json.dumps({"stream": f"line {n:02}\n"}, separators=(",", ":")).encode() + b"\n"
        for n in range(50)
    ]
    body = _chunked(b"".join(lines), [len(lines[0]) * n for n in range(1, 50)])

    batches = list(_chunked_payloads(_reader([body])))
    messages = list(_json_messages(batches))

    assert len(batches) == 1
    assert messages == [{"stream": "".join(f"line {n:02}\n" for n in range(50))}]


def test_chunk_split_across_reads_is_joined() -> None:
    body = _chunked(b"abcdef", [3])
    # The second chunk's data arrives one byte at a time.
    parts = [body[:12], *(body[i : i + 1] for i in range(12, len(body)))]

    assert b"".join(_chunked_payloads(_reader(parts))) == b"abcdef"


def test_stream_message_with_more_keys_keeps_them() -> None:
    raw = b'{"stream":"a","error":"b"}'
    plain = b'{"stream":"c\\n"}'

    assert list(_decode_batch([plain, raw, plain])) == [
        {"stream": "c\n"},
        {"stream": "a", "error": "b"},
        {"stream": "c\n"},
    ]


def test_shortest_lookalike_is_decoded_alone() -> None:
    # Starts like a stream message and ends like one, but is a single quote.
    assert list(_decode_batch([b'{"stream":"}'])) == [{"stream": '{"stream":"}\n'}]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([b"5\r\nabc"], "ended before its last chunk"),
        ([b"5\r\nabcde\r\n"], "ended before its last chunk"),
        ([b"zz\r\nabc\r\n0\r\n\r\n"], "invalid chunk size line b'zz'"),
        ([b"0x3\r\nabc\r\n0\r\n\r\n"], "invalid chunk size line b'0x3'"),
        ([b"-3\r\nabc\r\n0\r\n\r\n"], "invalid chunk size line b'-3'"),
        ([b"2\r\nabcd\r\n0\r\n\r\n"], "data is longer than its size line"),
    ],
)
def test_broken_bodies_raise(parts: list[bytes], message: str) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match=message):
        list(_chunked_payloads(_reader(parts)))


def test_socket_error_becomes_chunked_encoding_error() -> None:
    def read1(_size: int) -> bytes:
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset"):
        list(_chunked_payloads(read1))


def test_body_after_the_last_chunk_is_not_read() -> None:
    reads: list[int] = []

    def read1(size: int) -> bytes:
        reads.append(size)
        return b"3\r\nabc\r\n0\r\n" if len(reads) == 1 else b"unexpected"

    batches: Iterator[bytes] = _chunked_payloads(read1)

    assert list(batches) == [b"abc"]
    assert len(reads) == 1


def test_short_read_waits_before_next(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(podman_api.time, "sleep", waits.append)
    large = _chunked(b"x" * podman_api._SHORT_READ, [])[:-5]
    parts = [large, b"3\r\nabc\r\n", b"0\r\n\r\n"]

    assert (
        b"".join(_chunked_payloads(_reader(parts)))
        == b"x" * (podman_api._SHORT_READ) + b"abc"
    )
    # The long read is handled at once, and each short one waits for more.
    assert waits == [podman_api._BATCH_WAIT_S, podman_api._BATCH_WAIT_S]
