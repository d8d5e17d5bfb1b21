"""Benchmark: does urllib3's blocking pool cap connections to a registry as the semaphore did?

    .venv/bin/python bench/connection_cap.py [--threads 16] [--max-connections 3] [--rounds 6]

Starts a small HTTP/1.1 server on 127.0.0.1 (a free port) that counts the connections open at once
and the requests being answered at once. Then, for each design of `unpacked.connection_cap` (the
urllib3 pool with `pool_block=True`, and the semaphore taken around each request), runs `--threads`
threads through one `RegistryTransport` with `max_connections` N; each thread, `--rounds` times:

- GETs a small answer, read whole (the server waits a little, so requests overlap);
- streams a blob and abandons it after its first chunk (closes the response half-read);
- streams a blob to its end.

Then one more round with every thread done: if an abandoned stream had leaked a slot, requests
would stall (after `--stall` seconds the design is reported stalled). The designs alternate
`--repeat` times. Prints, per run, the most connections open at once as the client counts them
(where urllib3 opens and closes them: exact) and as the server counts them (it notices a closed
connection a little later, so its count can exceed what the client ever had open), the most
requests the server was answering at once (late in the same way), connections opened in all, and
the wall time. The cap holds if the client's count never exceeds N.
"""

from __future__ import annotations

import argparse
import gc
import http.server
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from unpacked.connection_cap import ConnectionCap, PoolCap
from unpacked.deadlines import DeadlineHTTPConnection
from unpacked.transport import RegistryTransport


class SemaphoreCap:
    """The earlier design: N slots, one held from before a request is sent until its answer is read
    or closed, over a pool that does not block."""

    pool_block = False

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)

    def acquire(self) -> None:
        self._slots.acquire()

    def release(self) -> None:
        self._slots.release()


BLOB = bytes(range(256)) * 4096  # 1 MiB
SMALL = b'{"tags": []}'
SCOPE = "repository:bench/x:pull"


class Counter:
    """Things at once, and the most seen at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.total = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1

    def reset(self) -> None:
        with self._lock:
            self.most, self.total = self.now, 0


class CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)  # port 0: the system picks a free one
        self.connections = Counter()
        self.requests = Counter()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that closes a stream half-read resets its connection: expected here

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # One thread serves one connection from accept to close: count it for that long.
        self.connections.enter()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.leave()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as registries do
    server: CountingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.enter()
        try:
            body = BLOB if "/blobs/" in self.path else SMALL
            if body is SMALL:
                time.sleep(0.02)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), 65536):
                self.wfile.write(body[start : start + 65536])
        except OSError:
            self.close_connection = True  # the client closed a stream half-read
        finally:
            self.server.requests.leave()


# Connections the client has open, counted where urllib3 opens and closes them: exact, where the
# server's count lags by the time it takes to notice a connection the client has closed.
CLIENT = Counter()


def count_client_connections() -> None:
    connect, close = DeadlineHTTPConnection.connect, DeadlineHTTPConnection.close

    def counted_connect(self: DeadlineHTTPConnection) -> None:
        connect(self)
        self._bench_open = True  # type: ignore[attr-defined]
        CLIENT.enter()

    def counted_close(self: DeadlineHTTPConnection) -> None:
        close(self)
        if getattr(self, "_bench_open", False):
            self._bench_open = False  # type: ignore[attr-defined]
            CLIENT.leave()

    DeadlineHTTPConnection.connect = counted_connect  # type: ignore[method-assign,assignment]
    DeadlineHTTPConnection.close = counted_close  # type: ignore[method-assign,assignment]


@dataclass
class Outcome:
    design: str
    client: int
    server: int
    requests: int
    opened: int
    seconds: float
    stalled: bool


def worker(transport: RegistryTransport, base: str, rounds: int, errors: list[BaseException]) -> None:
    try:
        for _ in range(rounds):
            transport.request("GET", f"{base}/v2/bench/x/tags/list", SCOPE)
            with transport.request("GET", f"{base}/v2/bench/x/blobs/a", SCOPE, stream=True, blob=True) as half:
                next(iter(transport.chunks(half)))  # abandoned after its first chunk
            with transport.request("GET", f"{base}/v2/bench/x/blobs/b", SCOPE, stream=True, blob=True) as whole:
                assert sum(len(c) for c in transport.chunks(whole)) == len(BLOB)
    except BaseException as err:
        errors.append(err)


def run(design: str, cap: ConnectionCap, server: CountingServer, args: argparse.Namespace) -> Outcome:
    registry = f"127.0.0.1:{server.server_port}"
    base = f"http://{registry}"
    transport = RegistryTransport(registry, None, timeout=10, retries=0, max_connections=args.max_connections, cap=cap)
    transport.session.trust_env = False  # never a proxy from the environment: 127.0.0.1 only
    # urllib3 (2.x) closes a cleared pool's idle connections only when the pool is collected: collect
    # the previous run's, and wait until the server has seen them go, to count this run's alone.
    gc.collect()
    settle = time.monotonic() + 10
    while (CLIENT.now or server.connections.now) and time.monotonic() < settle:
        time.sleep(0.01)
    for counter in (CLIENT, server.connections, server.requests):
        counter.reset()
    errors: list[BaseException] = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(transport, base, args.rounds, errors), daemon=True)
        for _ in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(args.stall - (time.monotonic() - started), 0.1))
    last: list[BaseException] = []
    stalled = any(t.is_alive() for t in threads)
    if not stalled:
        # With every thread done, one more round must find free slots at once.
        final = threading.Thread(target=worker, args=(transport, base, 1, last), daemon=True)
        final.start()
        final.join(args.stall)
        stalled = final.is_alive()
    if errors or last:
        raise SystemExit(f"{design}: requests failed: {(errors + last)[0]!r}")
    seconds = time.monotonic() - started
    transport.session.close()
    return Outcome(design, CLIENT.most, server.connections.most, server.requests.most, CLIENT.total, seconds, stalled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--max-connections", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stall", type=float, default=60.0, help="seconds after which a run counts as stalled")
    args = parser.parse_args()
    count_client_connections()
    server = CountingServer()
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        print(
            f"{args.threads} threads x {args.rounds} rounds (small GET, blob abandoned half-read, blob read "
            f"whole), max_connections {args.max_connections}, on {socket.gethostname()} ({os.cpu_count()} CPUs)"
        )
        print(
            f"{'design':31} {'client conns':>12} {'server conns':>12} {'server reqs':>11} {'opened':>6} "
            f"{'seconds':>7}  stalled"
        )
        most: dict[str, int] = {}
        for _ in range(args.repeat):
            designs: list[tuple[str, ConnectionCap]] = [
                ("urllib3 pool (pool_block=True)", PoolCap()),
                ("semaphore + wrapped close", SemaphoreCap(max(args.max_connections, 1))),
            ]
            for name, cap in designs:
                out = run(name, cap, server, args)
                most[name] = max(most.get(name, 0), out.client)
                print(
                    f"{out.design:31} {out.client:>12} {out.server:>12} {out.requests:>11} {out.opened:>6} "
                    f"{out.seconds:>7.2f}  {'YES' if out.stalled else 'no'}"
                )
        for name, seen in most.items():
            verdict = "holds" if seen <= args.max_connections else "BROKEN"
            print(f"{name}: at most {seen} connections open at once (cap {args.max_connections}): {verdict}")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
