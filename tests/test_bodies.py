"""Size caps on answers' bodies, by table: what is read, what is refused, what counts as cut."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from urllib3.exceptions import ProtocolError

from unpacked.bodies import CHUNK, Cap, count_against, read_body, read_size
from unpacked.deadlines import Exchange
from unpacked.errors import AnswerCutError, TooLargeError

CAP = Cap(10, "larger than 10 bytes (setting limits.test)")


@pytest.mark.parametrize(
    ("left", "size"),
    [
        (None, CHUNK),  # no cap: a whole chunk
        (0, 1),  # nothing more allowed: one byte, to see whether there is more
        (10, 11),
        (CHUNK - 1, CHUNK),
        (CHUNK, CHUNK),
        (5 * CHUNK, CHUNK),
    ],
)
def test_read_size_asks_for_one_byte_past_the_cap_at_most(left: int | None, size: int) -> None:
    assert read_size(left) == size


@pytest.mark.parametrize(
    ("cap", "left", "received", "after"),
    [
        (CAP, 10, 0, 10),
        (CAP, 10, 4, 6),
        (CAP, 10, 10, 0),  # exactly the cap: accepted
        (CAP, 0, 0, 0),
        (None, None, 1 << 30, None),  # no cap: anything
    ],
)
def test_count_against_keeps_what_is_left(cap: Cap | None, left: int | None, received: int, after: int | None) -> None:
    assert count_against(cap, left, received, "blob") == after


@pytest.mark.parametrize(("left", "received"), [(10, 11), (0, 1), (3, 4), (0, CHUNK)])
def test_count_against_refuses_one_byte_more(left: int, received: int) -> None:
    with pytest.raises(TooLargeError, match=r"^blob: larger than 10 bytes \(setting limits.test\); refused$"):
        count_against(CAP, left, received, "blob")


class _Raw:
    """A body that arrives in the given pieces (an exception: the connection fails there)."""

    def __init__(self, pieces: list[bytes | Exception]) -> None:
        self.pieces = list(pieces)

    def read1(self, amount: int, decode_content: bool = True) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if isinstance(piece, Exception):
            raise piece
        return piece[:amount]


def _response(pieces: list[bytes | Exception]) -> requests.Response:
    response = requests.Response()
    response.raw = _Raw(pieces)
    return response


def _read(pieces: list[bytes | Exception], cap: Cap | None) -> bytes:
    chunks: Iterator[bytes] = read_body(_response(pieces), Exchange(60), cap, "blob", 5)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("pieces", "cap", "body"),
    [
        ([b"0123456789"], CAP, b"0123456789"),  # exactly the cap
        ([b"01234", b"56789"], CAP, b"0123456789"),
        ([b"abc"], CAP, b"abc"),
        ([], CAP, b""),
        ([b"x" * 100], None, b"x" * 100),  # no cap
    ],
)
def test_read_body_within_the_cap(pieces: list[bytes | Exception], cap: Cap | None, body: bytes) -> None:
    assert _read(pieces, cap) == body


@pytest.mark.parametrize(
    "pieces",
    [
        [b"0123456789", b"a"],  # one byte more, in its own read
        [b"0123456789abc"],  # more in one read (only 11 bytes are asked for)
        [b"01234", b"5678", b"9a"],
    ],
)
def test_read_body_refuses_a_body_past_the_cap(pieces: list[bytes | Exception]) -> None:
    with pytest.raises(TooLargeError):
        _read(pieces, CAP)


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([b"0123", ProtocolError("Connection broken")], "connection dropped by the registry or the network"),
        ([ConnectionResetError(104, "reset")], "connection dropped by the registry or the network"),
        ([b"01", TimeoutError("timed out")], "no answer within 5 s (setting timeout)"),
    ],
)
def test_read_body_says_why_a_body_was_cut(pieces: list[bytes | Exception], reason: str) -> None:
    assert _cut_reason(pieces) == reason


def _cut_reason(pieces: list[bytes | Exception]) -> str | None:
    try:
        _read(pieces, CAP)
    except AnswerCutError as cut:
        return cut.reason
    return None
