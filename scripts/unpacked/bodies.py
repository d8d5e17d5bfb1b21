"""Reading an answer's body in chunks, at most `Cap.size` bytes (one more and it is refused).

An answer read whole is read at most `Cap.size` + 1 bytes far, then refused (`TooLargeError`):
manifests and configs with the caller's limit, anything else with `MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import requests
import urllib3.exceptions

from .deadlines import Exchange
from .diagnosis import describe_failure
from .errors import AnswerCutError, TooLargeError

# The most bytes of any other answer read whole (tag list pages, token answers, error bodies); a tag
# list of a few hundred thousand tags is a few MB.
MAX_ANSWER_BYTES = 64 << 20
# Bytes read at once from a body.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Cap:
    """The most body bytes accepted from one answer, and how to say it when it has more."""

    size: int
    reason: str  # e.g. "larger than 4194304 bytes (setting limits.manifest_bytes)"


ANSWER_CAP = Cap(MAX_ANSWER_BYTES, f"larger than {MAX_ANSWER_BYTES} bytes, far more than any real answer")


def read_size(left: int | None) -> int:
    """How much to ask for next: a chunk, but never more than one byte past what the cap allows."""
    return CHUNK if left is None else min(CHUNK, left + 1)


def count_against(cap: Cap | None, left: int | None, received: int, what: str) -> int | None:
    """Bytes still allowed after `received` more (None: no cap); `TooLargeError` past the cap."""
    if cap is None or left is None:
        return None
    if received > left:
        raise TooLargeError(f"{what}: {cap.reason}; refused")
    return left - received


def read_body(
    response: requests.Response, exchange: Exchange, cap: Cap | None, what: str, timeout: float
) -> Iterator[bytes]:
    """A body in chunks, reading at most one byte more than `cap` allows, then refusing it.

    Raises `AnswerCutError` when the body stops early (dropped, stalled, or at its deadline).
    """
    left = cap.size if cap is not None else None
    while True:
        try:
            # read1: what has arrived, at once, so that a blob's progress moves its deadline
            chunk = response.raw.read1(read_size(left), decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            reason = describe_failure(err, timeout, exchange=exchange).reason
            raise AnswerCutError(f"{what}: {reason}", reason, exchange.expired) from err
        if not chunk:
            break
        left = count_against(cap, left, len(chunk), what)
        exchange.received(len(chunk))
        yield chunk
    if exchange.expired:  # a body without a length just ends when its socket is shut down
        raise AnswerCutError(f"{what}: {exchange.describe()}", exchange.describe(), True)
