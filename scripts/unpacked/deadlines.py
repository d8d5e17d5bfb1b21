"""Overall deadlines for registry answers: a bound on the whole of one attempt, headers and body.

`timeout` bounds each socket read, so a registry that trickles a byte every few seconds never trips
it (issue 7). Here every request runs as an `Exchange`. The connection that carries one of its
attempts (`DeadlineAdapter` installs such connections in its pools) starts the attempt's clock and
names the socket it uses. When the attempt is due and not over, the watchdog shuts that socket down
(`shutdown(SHUT_RDWR)`): the read blocked on it ends at once, urllib3 (headers) or the caller (body)
sees a broken answer, and `Exchange.expired` tells that apart from a dropped connection.

An attempt is due `seconds` after it starts, plus, for blobs (`min_rate`), one second for every
`min_rate` bytes received so far: a download may take `seconds + size / min_rate` in all, and one
that falls that far behind is stopped then rather than when its whole allowance is spent.

One watchdog thread serves every exchange of the process: it sleeps on a condition until the
earliest attempt is due (nothing is polled), and ends once no request has been under way for
`IDLE_EXIT` seconds, so that back-to-back requests do not each pay for starting a thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

# Seconds the watchdog waits for another request before its thread ends.
IDLE_EXIT = 1.0
# The exchange whose request this thread is sending (set only while `Exchange.sending()` runs).
_current: ContextVar[Exchange | None] = ContextVar("unpacked_exchange", default=None)


def current_exchange() -> Exchange | None:
    return _current.get()


class DeadlinePassed(ConnectionAbortedError):
    """The headers of an answer ended early because its attempt ran out of time."""


class _Watchdog:
    """Stops overdue attempts of every exchange; its lock guards all exchanges' deadline state."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.live = 0  # exchanges started and not finished
        # Which exchange each socket serves now, so that a late stop never shuts down a pooled
        # connection that another request has taken over since.
        self.owners: weakref.WeakKeyDictionary[socket.socket, Exchange] = weakref.WeakKeyDictionary()
        self._queue: list[tuple[float, int, Exchange]] = []  # (due no later than, order, exchange)
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, exchange: Exchange, due: float) -> None:
        """Look at `exchange` again at `due` (called with the lock held)."""
        heapq.heappush(self._queue, (due, next(self._order), exchange))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unpacked-deadlines", daemon=True)
            self._thread.start()
        elif self._queue[0][2] is exchange:
            self.lock.notify()  # due before whatever the watchdog sleeps for

    def all_finished(self) -> None:
        """No exchange is live: forget the queue (called with the lock held)."""
        self._queue.clear()
        self.lock.notify()

    def _run(self) -> None:
        with self.lock:
            while True:
                if self._queue:
                    self._check_earliest()
                elif self.live:
                    self.lock.wait()  # exchanges between attempts: until one is scheduled
                elif not self.lock.wait(IDLE_EXIT) and not self._queue and not self.live:
                    self._thread = None
                    return

    def _check_earliest(self) -> None:
        due, _, exchange = self._queue[0]
        now = time.monotonic()
        if due > now:
            self.lock.wait(due - now)
            return
        heapq.heappop(self._queue)
        exchange._queued = False
        if exchange._finished:
            return
        later = exchange._due()
        if later > now:  # it received bytes or started another attempt since it was scheduled
            exchange._queued = True
            heapq.heappush(self._queue, (later, next(self._order), exchange))
            return
        exchange.expired = True
        exchange._shut_down()


_watchdog = _Watchdog()


class Exchange:
    """One request over its attempts; each attempt must be answered in full before it is due.

    `retry` is the retry budget left for the next attempt (None: the adapter's own policy); the
    transport lowers it when a body fails after urllib3 has already handed the answer over.
    `finish()` must be called once the answer is read or abandoned.
    """

    def __init__(self, seconds: float, min_rate: float | None = None) -> None:
        self.seconds = seconds
        self.min_rate = min_rate
        self.retry: Retry | None = None
        self.expired = False
        self._started = 0.0
        self._received = 0
        self._connection: object | None = None
        self._sent = False
        self._socket: socket.socket | None = None
        self._live = False
        self._queued = False
        self._finished = False

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Attempts this thread sends meanwhile (connections opened or reused) belong to this exchange."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    def start(self, connection: object, sending: bool) -> None:
        """An attempt begins on `connection`: the clock starts again.

        urllib3 opens an HTTPS connection (TLS handshake) before it sends the request: the request
        that follows on that connection is the same attempt.
        """
        if sending and connection is self._connection and not self._sent:
            self._sent = True
            return
        with _watchdog.lock:
            self._connection, self._sent = connection, sending
            self._started = time.monotonic()
            self._received = 0
            self.expired = False
            if not self._live:
                self._live = True
                _watchdog.live += 1
            if not self._queued:
                self._queued = True
                _watchdog.schedule(self, self._due())

    def watch(self, sock: socket.socket) -> None:
        """The current attempt reads from `sock` (the raw socket, then its TLS wrapper)."""
        with _watchdog.lock:
            _watchdog.owners[sock] = self
            self._socket = sock
            if self.expired:  # the attempt was due before its connection was even made
                self._shut_down()

    def received(self, count: int) -> None:
        """Body bytes have arrived: a blob's attempt is due later (read when the watchdog looks)."""
        self._received += count

    def describe(self) -> str:
        """Why an attempt was stopped, naming the setting(s) to change."""
        if self.min_rate:
            return (
                f"the download averaged less than {self.min_rate:g} bytes/s after its first {self.seconds:g} s"
                " (settings min_rate and deadline)"
            )
        return f"the answer took longer than {self.seconds:g} s (setting deadline)"

    def finish(self) -> None:
        """The answer is complete or abandoned: its attempts are no longer watched."""
        with _watchdog.lock:
            self._finished = True
            if self._socket is not None and _watchdog.owners.get(self._socket) is self:
                del _watchdog.owners[self._socket]
            self._socket = None
            if self._live:
                self._live = False
                _watchdog.live -= 1
                if not _watchdog.live:
                    _watchdog.all_finished()

    def _due(self) -> float:
        allowance = self.seconds + (self._received / self.min_rate if self.min_rate else 0.0)
        return self._started + allowance

    def _shut_down(self) -> None:
        """Stop the current attempt's socket, if it still serves this exchange (lock held)."""
        sock = self._socket
        if sock is not None and _watchdog.owners.get(sock) is self:
            with contextlib.suppress(OSError):  # already closed: nothing left to stop
                sock.shutdown(socket.SHUT_RDWR)


class _DeadlineConnectionMixin:
    """Starts the calling thread's exchange's attempt and names its socket (see `Exchange`)."""

    sock: Any
    _sending = False

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        exchange = _current.get()
        if exchange is not None:
            exchange.watch(sock)  # before the TLS handshake, which may trickle too
        return sock

    def connect(self) -> None:
        exchange = _current.get()
        if exchange is not None and not self._sending:
            exchange.start(self, sending=False)
        super().connect()  # type: ignore[misc]
        if exchange is not None and self.sock is not None:
            exchange.watch(self.sock)  # the TLS wrapper took over the raw socket's descriptor

    def request(self, *args: Any, **kwargs: Any) -> None:
        exchange = _current.get()
        if exchange is not None:
            exchange.start(self, sending=True)
            if self.sock is not None:
                exchange.watch(self.sock)
        self._sending = True
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._sending = False

    def getresponse(self) -> Any:
        response = super().getresponse()  # type: ignore[misc]
        exchange = _current.get()
        if exchange is not None and exchange.expired:
            # Headers cut short by the shutdown may still parse: they are not an answer.
            response.close()
            raise DeadlinePassed(exchange.describe())
        return response


class DeadlineHTTPConnection(_DeadlineConnectionMixin, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_DeadlineConnectionMixin, HTTPSConnection):
    pass


class DeadlineHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


POOL_CLASSES = {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' HTTPAdapter with deadline-aware connections and a per-exchange retry budget."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # (SOCKS proxies bring their own connection classes)
            manager.pool_classes_by_scheme = POOL_CLASSES
        return manager

    @property
    def max_retries(self) -> Retry:
        """The retries left to the exchange being sent on this thread, else the full policy."""
        exchange = _current.get()
        if exchange is not None and exchange.retry is not None:
            return exchange.retry
        return self._max_retries

    @max_retries.setter
    def max_retries(self, value: Retry) -> None:
        self._max_retries = value
