"""A threaded HTTP server on 127.0.0.1 for the small fake registries that a real one cannot imitate."""

from __future__ import annotations

import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that refuses the test certificate (what the TLS tests check) or hangs up ends the
        # handshake: expected, and printed after its test ends it would only look like a failure in CI.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """Serves `handler` on a free 127.0.0.1 port in a daemon thread until `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll: `stop()` waits for the serving loop to notice, 0.5 s by default (once per test).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
