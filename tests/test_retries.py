"""The retry policy by table: Retry-After, which statuses and errors are retried, backoff, notes."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse

from unpacked.retries import (
    MAX_WAIT,
    BodyFailed,
    parse_retry_after,
    resume_backoff,
    retries_note,
    retry_policy,
    short_path,
    worth_retrying,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("120", 120.0),
        ("", -1.0),  # no advice: exponential backoff
        ("soon", -1.0),
        ("-3", -1.0),
        ("1.5", -1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: at once
    ],
)
def test_parse_retry_after(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_a_future_date_is_the_seconds_until_then() -> None:
    value = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 95 <= parse_retry_after(value) <= 100


@pytest.mark.parametrize(
    ("method", "status", "retry_after", "retried"),
    [
        ("GET", 429, False, True),
        ("GET", 500, False, True),
        ("GET", 502, False, True),
        ("GET", 503, False, True),
        ("GET", 504, False, True),
        ("HEAD", 503, False, True),
        ("HEAD", 429, True, True),
        ("GET", 501, False, False),
        ("GET", 400, False, False),
        ("GET", 401, False, False),  # answered once with credentials by the transport, not retried
        ("GET", 403, False, False),
        ("GET", 404, False, False),
        ("GET", 413, True, False),  # urllib3 would retry a 413 with Retry-After: never a 4xx but 429
        ("GET", 200, False, False),
        ("POST", 503, False, False),
        ("PUT", 429, True, False),
    ],
)
def test_which_statuses_are_retried(method: str, status: int, retry_after: bool, retried: bool) -> None:
    assert retry_policy(5).is_retry(method, status, retry_after) is retried


@pytest.mark.parametrize(
    ("error", "worth"),
    [
        (NameResolutionError("reg.example", None, socket.gaierror(-2, "Name or service not known")), False),  # type: ignore[arg-type]
        (SSLError("wrong version number"), False),
        (NewConnectionError(None, "connection refused"), True),  # type: ignore[arg-type]
        (ConnectTimeoutError("timed out"), True),
        (ReadTimeoutError(None, "/v2/", "read timed out"), True),  # type: ignore[arg-type]
        (ProtocolError("connection aborted"), True),
        (BodyFailed("connection dropped by the registry or the network"), True),
    ],
)
def test_which_errors_are_worth_retrying(error: Exception, worth: bool) -> None:
    assert worth_retrying(error) is worth


@pytest.mark.parametrize(
    "error",
    [
        NameResolutionError("reg.example", None, socket.gaierror(-2, "Name or service not known")),  # type: ignore[arg-type]
        SSLError("certificate verify failed"),
    ],
)
def test_errors_not_worth_retrying_end_the_retries_at_once(error: Exception) -> None:
    with pytest.raises(MaxRetryError):
        retry_policy(5).increment("GET", "http://reg.example/v2/", error=error)


@pytest.mark.parametrize(
    ("error", "left"),
    [
        (ProtocolError("connection aborted"), 4),
        (ReadTimeoutError(None, "/v2/", "read timed out"), 4),  # type: ignore[arg-type]
        (BodyFailed("cut"), 4),
    ],
)
def test_retried_errors_use_one_retry(error: Exception, left: int) -> None:
    assert retry_policy(5).increment("GET", "http://reg.example/v2/", error=error).total == left


@pytest.mark.parametrize(
    ("retry_after", "gives_up"),
    [
        (str(MAX_WAIT + 1), True),  # longer than any wait: the error says when to come back
        ("3600", True),
        (str(MAX_WAIT), False),
        ("1", False),
    ],
)
def test_a_429_asking_for_too_long_ends_the_retries(retry_after: str, gives_up: bool) -> None:
    response = HTTPResponse(body=b"", headers={"Retry-After": retry_after}, status=429)
    try:
        retry_policy(5).increment("GET", "http://reg.example/v2/", response=response)
        raised = False
    except MaxRetryError as err:
        raised = "rate limited (HTTP 429)" in str(err.reason)
    assert raised is gives_up


def test_retries_exhausted_raise() -> None:
    with pytest.raises(MaxRetryError):
        retry_policy(0).increment("GET", "http://reg.example/v2/", error=ProtocolError("aborted"))


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (-1, 0.0, 0.0),
        (0, 0.0, 0.0),
        (1, 1.0, 1.5),
        (2, 2.0, 2.5),
        (3, 4.0, 4.5),
        (5, 16.0, 16.5),
        (6, MAX_WAIT, MAX_WAIT),  # 32 s and more: capped
        (20, MAX_WAIT, MAX_WAIT),
    ],
)
def test_resume_backoff(attempt: int, low: float, high: float) -> None:
    assert low <= resume_backoff(attempt) <= high


@pytest.mark.parametrize(
    ("retries", "retried", "note"),
    [
        (5, True, "retried up to 5 times"),
        (1, True, "retried up to 1 time"),
        (0, True, "retried up to 0 times"),
        (3, False, "not retried"),
        (0, False, "not retried"),
    ],
)
def test_retries_note(retries: int, retried: bool, note: str) -> None:
    assert retries_note(retries, retried) == note


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://auth.example/token?scope=repository:a:pull&service=x", "https://auth.example/token"),
        ("http://reg.example/v2/a/tags/list", "http://reg.example/v2/a/tags/list"),
        (None, ""),
    ],
)
def test_short_path(url: str | None, path: str) -> None:
    assert short_path(url) == path
