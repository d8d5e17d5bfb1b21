"""A Docker-Hub-like token server for the registry's `auth: token` mode.

The registry verifies RS256 JWTs against `rootcertbundle`; the signing certificate travels in the
JWT header as `x5c` so the registry can chain it to that bundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TokenRequest:
    """One request the server saw; `user` is None for anonymous requests."""

    path: str
    query: dict[str, list[str]]
    user: str | None


def self_signed(common_name: str, ip: str | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A key and a self-signed CA certificate for `common_name` (and `ip` as its subject alt name)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated so a slightly skewed clock in the registry does not reject it.
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ip is not None:
        cert = cert.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    return key, cert.sign(key, hashes.SHA256())


@dataclass
class TokenServer:
    """Issues registry tokens on `GET /token?service=S&scope=repository:NAME:pull,push`.

    `users` maps user name to password (HTTP Basic). Anonymous callers get `pull` only when
    `allow_anonymous_pull`, else no access at all. Known users get every action they ask for.
    """

    cert_dir: Path
    users: dict[str, str] = field(default_factory=dict)
    service: str = "test-registry"
    issuer: str = "test-token-issuer"
    expires_in: int = 300
    allow_anonymous_pull: bool = True
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key, self._cert = self_signed(self.issuer)
        Path(self.cert_dir).mkdir(parents=True, exist_ok=True)
        self.cert_path = Path(self.cert_dir) / "token-cert.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        # A short poll: `stop()` waits for the serving loop to notice, 0.5 s by default (once per test).
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    # -- token issuing -------------------------------------------------------------------------

    def issue(self, user: str | None, scopes: list[str], service: str | None = None) -> str:
        """Sign a token granting `user` the requested scopes (filtered by policy)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [a for a in (self._grant(user, s) for s in scopes) if a is not None],
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": [self._x5c]})

    def _grant(self, user: str | None, scope: str) -> dict[str, object] | None:
        # scope = type:name:actions; the name may itself contain ':' only in theory (port-less).
        parts = scope.split(":")
        if len(parts) < 3:
            return None
        rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        if user is None:
            actions = ["pull"] if self.allow_anonymous_pull and "pull" in actions else []
        return {"type": rtype, "name": name, "actions": actions}

    def _check_basic(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, user): no header is anonymous, a wrong password is not ok."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return False, user
        return True, user

    # -- HTTP ------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                ok, user = server._check_basic(self.headers.get("Authorization"))
                with server._lock:
                    server.requests.append(TokenRequest(url.path, query, user))
                if url.path != "/token":
                    self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                if not ok:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]}, basic=True)
                    return
                service = query.get("service", [server.service])[0]
                token = server.issue(user, query.get("scope", []), service)
                issued = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._reply(
                    200,
                    {
                        "token": token,
                        "access_token": token,
                        "expires_in": server.expires_in,
                        "issued_at": issued,
                    },
                )

            def _reply(self, status: int, body: dict[str, object], basic: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if basic:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest output clean

        return Handler

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
