"""Why a request to a registry failed, in a short reason that names the setting or entry to change."""

from __future__ import annotations

import ssl
from typing import NamedTuple

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

from .deadlines import Exchange

# OpenSSL's complaints when the other end answers a TLS handshake in plain HTTP.
PLAIN_HTTP_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
)
# A chain of causes is short; never loop on a strange one.
MAX_CAUSE_DEPTH = 12


class Failure(NamedTuple):
    """Why a request failed, whether the registry cannot be reached at all, and whether it was retried."""

    reason: str
    unreachable: bool
    retried: bool = True


def describe_failure(
    err: BaseException, timeout: float, registry: str = "", exchange: Exchange | None = None
) -> Failure:
    """A short reason for a failed request, naming the setting or the entry to change."""
    if exchange is not None and exchange.expired:
        return Failure(exchange.describe(), False)
    reason: BaseException | None = err
    for _depth in range(MAX_CAUSE_DEPTH):
        if reason is None:
            break
        if isinstance(reason, MaxRetryError) and reason.reason is not None:
            reason = reason.reason
            continue
        if isinstance(reason, ResponseError) and str(reason).startswith("rate limited"):
            return Failure(str(reason), False)
        if isinstance(reason, NameResolutionError):
            host = getattr(getattr(reason, "conn", None), "host", None) or registry
            return Failure(f"cannot resolve host {host!r}; check the registry name in the entry", True, False)
        if isinstance(reason, SSLError | ssl.SSLError):
            return Failure(tls_failure(reason, registry), True, False)
        if isinstance(reason, NewConnectionError):  # (a subclass of ConnectTimeoutError)
            return Failure("cannot connect (connection refused or host unreachable)", True)
        if isinstance(reason, ConnectTimeoutError | requests.ConnectTimeout):
            return Failure(f"cannot connect within {timeout:g} s (setting timeout)", True)
        if isinstance(reason, ReadTimeoutError | requests.ReadTimeout | TimeoutError):
            return Failure(f"no answer within {timeout:g} s (setting timeout)", False)
        if isinstance(reason, ProtocolError | ConnectionError):
            return Failure("connection dropped by the registry or the network", False)
        nested = reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None
        reason = nested or reason.__cause__ or reason.__context__
    return Failure(type(err).__name__, False)


def tls_failure(err: BaseException, registry: str) -> str:
    """What a failed TLS handshake means, from OpenSSL's reason code."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else cause.__cause__
    code = getattr(cause, "reason", None)
    detail = getattr(cause, "verify_message", None) or code or str(err)
    if code in PLAIN_HTTP_TLS_REASONS:
        return (
            "the TLS handshake failed: the registry answers plain HTTP; write the entry as "
            f"http://{registry}/..., or set registries: {{{registry}: {{insecure: true}}}} in the config"
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"its TLS certificate is not trusted ({detail}); if a private CA signed it, point "
            "REQUESTS_CA_BUNDLE to that CA's certificate"
        )
    return f"the TLS handshake failed ({detail})"
