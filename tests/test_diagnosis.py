"""Why a request failed, by table: each cause's message, whether the registry is unreachable, retried."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)

from unpacked.deadlines import Exchange
from unpacked.diagnosis import Failure, describe_failure, tls_failure

REGISTRY = "reg.example:5000"


def _ssl_error(reason: str) -> ssl.SSLError:
    err = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    err.reason = reason
    return err


def _untrusted() -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "self-signed certificate"
    err.reason = "CERTIFICATE_VERIFY_FAILED"
    return err


def _retried(reason: BaseException) -> MaxRetryError:
    """What requests' adapter wraps: urllib3's MaxRetryError with the last failure as its reason."""
    return MaxRetryError(None, "/v2/", reason)  # type: ignore[arg-type]


PLAIN_HTTP = (
    "the TLS handshake failed: the registry answers plain HTTP; write the entry as "
    f"http://{REGISTRY}/..., or set registries: {{{REGISTRY}: {{insecure: true}}}} in the config"
)
UNTRUSTED = (
    "its TLS certificate is not trusted (self-signed certificate); if a private CA signed it, point "
    "REQUESTS_CA_BUNDLE to that CA's certificate"
)
DROPPED = Failure("connection dropped by the registry or the network", False)


@pytest.mark.parametrize(
    ("err", "failure"),
    [
        (
            requests.ConnectionError(_retried(NewConnectionError(None, "refused"))),  # type: ignore[arg-type]
            Failure("cannot connect (connection refused or host unreachable)", True),
        ),
        (_retried(ConnectTimeoutError("timed out")), Failure("cannot connect within 5 s (setting timeout)", True)),
        (requests.ConnectTimeout("timed out"), Failure("cannot connect within 5 s (setting timeout)", True)),
        (
            _retried(ReadTimeoutError(None, "/v2/", "read timed out")),  # type: ignore[arg-type]
            Failure("no answer within 5 s (setting timeout)", False),
        ),
        (requests.ReadTimeout("read timed out"), Failure("no answer within 5 s (setting timeout)", False)),
        (TimeoutError("timed out"), Failure("no answer within 5 s (setting timeout)", False)),
        (_retried(ProtocolError("Connection aborted.")), DROPPED),
        (ConnectionResetError(104, "Connection reset by peer"), DROPPED),
        (requests.ConnectionError(ProtocolError("aborted", ConnectionResetError(104, "reset"))), DROPPED),
        (
            _retried(ResponseError("rate limited (HTTP 429); it asks to retry after 60 s, try again then")),
            Failure("rate limited (HTTP 429); it asks to retry after 60 s, try again then", False),
        ),
        (_retried(ResponseError("too many 503 error responses")), Failure("MaxRetryError", False)),
        (
            _retried(NameResolutionError("other.example", None, socket.gaierror(-2, "not known"))),  # type: ignore[arg-type]
            Failure(f"cannot resolve host {REGISTRY!r}; check the registry name in the entry", True, False),
        ),
        (_retried(SSLError(_ssl_error("WRONG_VERSION_NUMBER"))), Failure(PLAIN_HTTP, True, False)),
        (_retried(SSLError(_ssl_error("RECORD_LAYER_FAILURE"))), Failure(PLAIN_HTTP, True, False)),
        (requests.exceptions.SSLError(_retried(SSLError(_untrusted()))), Failure(UNTRUSTED, True, False)),
        (ValueError("something else"), Failure("ValueError", False)),
    ],
)
def test_describe_failure(err: BaseException, failure: Failure) -> None:
    assert describe_failure(err, 5, REGISTRY) == failure


def test_an_attempt_stopped_at_its_deadline_says_so_whatever_the_error() -> None:
    exchange = Exchange(120)
    exchange.expired = True
    assert describe_failure(ProtocolError("aborted"), 5, REGISTRY, exchange) == Failure(
        "the answer took longer than 120 s (setting deadline)", False
    )


@pytest.mark.parametrize(
    ("err", "message"),
    [
        (_ssl_error("WRONG_VERSION_NUMBER"), PLAIN_HTTP),
        (_ssl_error("HTTP_REQUEST"), PLAIN_HTTP),
        (_ssl_error("UNKNOWN_PROTOCOL"), PLAIN_HTTP),
        (_untrusted(), UNTRUSTED),
        (_ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"), "the TLS handshake failed (TLSV1_ALERT_PROTOCOL_VERSION)"),
        (SSLError("no reason given"), "the TLS handshake failed (no reason given)"),
    ],
)
def test_tls_failure(err: BaseException, message: str) -> None:
    assert tls_failure(err, REGISTRY) == message
