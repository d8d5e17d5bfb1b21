"""A fault-injecting HTTP reverse proxy in front of a LocalRegistry, for tests.

The real registry cannot misbehave on demand: this proxy, on 127.0.0.1, forwards every request to
it (Authorization and WWW-Authenticate untouched, bodies streamed) and can, per test:

- paginate tag lists (`tag_page_size`): opaque `last` tokens, `Link: <...>; rel="next"` relative,
  absolute, or pointing to another host (`link_host`);
- serve fixed tag pages without any registry behind it (`tag_pages`, Docker Hub / Quay style);
- answer chosen requests with a status (429 + Retry-After, 5xx bursts) via `Fault`s, delay them,
  cut a body after K bytes with a connection reset, flip a body's bytes, or trickle it slowly;
- treat tokens older than `expire_tokens_after` seconds as expired (the registry then answers 401
  with its own challenge), like a registry with a strict clock;
- add `ratelimit-limit` / `ratelimit-remaining` headers;
- record every request (method, path, status, Range, start and end times) and the peak number of
  requests in flight.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Headers that belong to one hop, never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
CHUNK = 64 << 10


@dataclass
class Fault:
    """What to do to the requests that match `path` (a regex searched in path?query) and `method`.

    Only the first `times` matching requests are affected (None: all of them). With `status`, the
    proxy answers itself (with `headers` and a JSON error body) instead of forwarding; otherwise it
    forwards and applies `delay` (before answering), `rate` (body bytes per second), `cut_after`
    (reset the connection after that many body bytes) and `corrupt` (flip every body byte).
    """

    path: str
    method: str | None = None
    times: int | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    rate: int | None = None
    cut_after: int | None = None
    corrupt: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy answered."""

    method: str
    path: str
    status: int
    range: str | None
    authorized: bool
    start: float
    end: float


class FaultProxy:
    """Reverse proxy on a free loopback port; `upstream` is a registry URL (or None: pages only)."""

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.faults: list[Fault] = []
        self.tag_page_size: int | None = None
        self.link_style = "relative"  # or "absolute"
        self.link_host: str | None = None  # absolute links to this host instead of the proxy
        self.tag_pages: dict[str, list[tuple[list[str], str | None]]] = {}
        self.expire_tokens_after: float | None = None
        self.ratelimit: tuple[int, int] | None = None  # (limit, remaining), remaining counts down
        self.seen: list[Seen] = []
        self.active = 0
        self._started = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._page_tokens: dict[str, int] = {}
        self._token_first_seen: dict[str, float] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        # A short poll: `stop()` waits for the serving loop to notice, 0.5 s by default (once per test).
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    # -- configuration and inspection -----------------------------------------------------------

    def add(self, *faults: Fault) -> FaultProxy:
        with self._lock:
            self.faults.extend(faults)
        return self

    def reset(self) -> None:
        """Forget faults, paging, token expiry, rate-limit headers and recorded requests."""
        with self._lock:
            self.faults.clear()
            self.tag_page_size = None
            self.link_style = "relative"
            self.link_host = None
            self.expire_tokens_after = None
            self.ratelimit = None
            self._started -= len(self.seen)
            self.seen.clear()
            self.max_active = self.active

    def settle(self, timeout: float = 30) -> None:
        """Wait until no request is being answered (one may still trickle after its client left)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.seen) >= self._started:
                    return
            time.sleep(0.01)
        raise TimeoutError("the proxy is still answering requests")

    def requests(self, method: str | None = None, path: str | None = None, status: int | None = None) -> list[Seen]:
        """Recorded requests (once every request under way is answered), in the order they arrived,
        filtered by method, path regex (searched) and status."""
        self.settle()
        with self._lock:
            # Recorded once answered: a client's next request can be recorded before the answer to
            # its previous one is, so the order is by arrival.
            seen = sorted(self.seen, key=lambda s: s.start)
        return [
            s
            for s in seen
            if (method is None or s.method == method)
            and (path is None or re.search(path, s.path))
            and (status is None or s.status == status)
        ]

    def count(self, method: str | None = None, path: str | None = None, status: int | None = None) -> int:
        return len(self.requests(method, path, status))

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            if self.ratelimit is None:
                return {}
            limit, remaining = self.ratelimit
            self.ratelimit = (limit, max(remaining - 1, 0))
        return {"ratelimit-limit": f"{limit};w=21600", "ratelimit-remaining": f"{remaining};w=21600"}

    def _token_expired(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("bearer ") or self.expire_tokens_after is None:
            return False
        with self._lock:
            first = self._token_first_seen.setdefault(authorization, time.monotonic())
        return time.monotonic() - first > self.expire_tokens_after

    def _page_token(self, index: int) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._page_tokens[token] = index
        return token

    def _next_link(self, path: str) -> str:
        if self.link_host:
            return f"http://{self.link_host}{path}"
        if self.link_style == "absolute":
            return f"{self.url}{path}"
        return path

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, close-delimited bodies allowed.
            status_sent = 0
            counted = False

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PATCH(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def _handle(self) -> None:
                start = time.monotonic()
                with proxy._lock:
                    proxy._started += 1
                    proxy.active += 1
                    proxy.max_active = max(proxy.max_active, proxy.active)
                    self.counted = True
                try:
                    self._serve()
                except OSError:
                    pass  # the client went away (e.g. it timed out): nothing to answer
                finally:
                    self._leave()
                    with proxy._lock:
                        proxy.seen.append(
                            Seen(
                                self.command,
                                self.path,
                                self.status_sent,
                                self.headers.get("Range"),
                                "Authorization" in self.headers,
                                start,
                                time.monotonic(),
                            )
                        )

            def _leave(self) -> None:
                """No longer in flight. Called just BEFORE the last bytes go out: the client cannot
                start its next request before it has them, so the peak count is never inflated."""
                with proxy._lock:
                    if self.counted:
                        self.counted = False
                        proxy.active -= 1

            def _serve(self) -> None:
                fault = proxy._fault_for(self.command, self.path)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                url = urlsplit(self.path)
                tags = re.fullmatch(r"/v2/(.+)/tags/list", url.path)
                if tags and tags.group(1) in proxy.tag_pages and not (fault and fault.status):
                    self._static_page(tags.group(1), url.query)
                    return
                if fault and fault.status:
                    body = json.dumps({"errors": [{"code": "INJECTED", "message": f"fault {fault.status}"}]})
                    self._reply(fault.status, {"Content-Type": "application/json", **fault.headers}, body.encode())
                    return
                if proxy.upstream is None:
                    self._reply(404, {}, b"")
                    return
                if tags and self.command == "GET" and proxy.tag_page_size:
                    self._paged_tags(tags.group(1), url.query)
                    return
                self._forward(fault)

            def _upstream(self, method: str, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
                assert proxy.upstream is not None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = proxy.upstream.netloc
                if proxy._token_expired(headers.get("Authorization")):
                    headers.pop("Authorization")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                connection = http.client.HTTPConnection(proxy.upstream.netloc, timeout=60)
                connection.request(method, path, body=body, headers=headers)
                return connection, connection.getresponse()

            def _forward(self, fault: Fault | None) -> None:
                connection, response = self._upstream(self.command, self.path)
                try:
                    headers = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                    if fault:
                        headers.update(fault.headers)
                    if self.command == "HEAD":
                        self._start(response.status, headers, last=True)
                        return
                    self._start(response.status, headers)
                    self._stream(response, fault)
                finally:
                    connection.close()

            def _stream(self, response: http.client.HTTPResponse, fault: Fault | None) -> None:
                sent = 0
                length = response.getheader("Content-Length")
                chunk = CHUNK
                if fault and fault.rate:
                    chunk = max(fault.rate // 10, 1)
                while True:
                    data = response.read(chunk)
                    if not data:
                        return
                    if fault and fault.rate:
                        time.sleep(len(data) / fault.rate)
                    if fault and fault.corrupt:
                        data = bytes(b ^ 0xFF for b in data)
                    if fault and fault.cut_after is not None and sent + len(data) >= fault.cut_after:
                        self.wfile.write(data[: fault.cut_after - sent])
                        self._reset()
                        return
                    if length is not None and sent + len(data) >= int(length):
                        self._leave()
                    self.wfile.write(data)
                    sent += len(data)

            def _reset(self) -> None:
                """Drop the connection with a TCP reset (SO_LINGER 0), like a broken network.

                A reset discards what the client has not read yet: wait a moment so that it has
                the bytes sent so far (and can resume after them)."""
                self.wfile.flush()
                time.sleep(0.3)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _paged_tags(self, repo: str, query: str) -> None:
                connection, response = self._upstream("GET", f"/v2/{repo}/tags/list")
                try:
                    data = response.read()
                    if response.status != 200:
                        headers = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                        headers.pop("Content-Length", None)
                        self._reply(response.status, headers, data)
                        return
                finally:
                    connection.close()
                tags = sorted(json.loads(data).get("tags") or [])
                params = parse_qs(query)
                size = proxy.tag_page_size
                assert size
                token = params.get("last", [None])[0]
                with proxy._lock:
                    index = proxy._page_tokens.get(token, 0) if token else 0
                page = tags[index : index + size]
                headers = {"Content-Type": "application/json"}
                if index + size < len(tags):
                    link = proxy._next_link(f"/v2/{repo}/tags/list?n={size}&last={proxy._page_token(index + size)}")
                    headers["Link"] = f'<{link}>; rel="next"'
                self._reply(200, headers, json.dumps({"name": repo, "tags": page}).encode())

            def _static_page(self, repo: str, query: str) -> None:
                page = int(parse_qs(query).get("page", ["0"])[0])
                pages = proxy.tag_pages[repo]
                if page >= len(pages):
                    self._reply(404, {}, b"")
                    return
                tags, link = pages[page]
                headers = {"Content-Type": "application/json"}
                if link:
                    headers["Link"] = f'<{link.replace("HOST", proxy.host)}>; rel="next"'
                self._reply(200, headers, json.dumps({"name": repo, "tags": tags}).encode())

            def _start(self, status: int, headers: dict[str, str], last: bool = False) -> None:
                self.status_sent = status
                self.send_response(status)
                for key, value in {**headers, **proxy._rate_headers()}.items():
                    self.send_header(key, value)
                if last:
                    self._leave()
                self.end_headers()

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self._start(status, {**headers, "Content-Length": str(len(body))}, last=True)
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest output clean

        return Handler


def serve_pages(pages: dict[str, list[tuple[list[str], str | None]]]) -> FaultProxy:
    """A registry stand-in that only serves fixed tag-list pages (`?page=N`; HOST in a link is the proxy)."""
    proxy = FaultProxy(None)
    proxy.tag_pages.update(pages)
    return proxy


def paths(seen: Iterable[Seen]) -> list[str]:
    return [s.path for s in seen]
