"""At most `max_connections` connections to one registry at once from this process.

Two designs, measured against each other by bench/connection_cap.py:

- `PoolCap` (used): urllib3's own pool, `pool_maxsize=N, pool_block=True`. A request waits for one of
  the N connections of the registry's pool; a streamed answer keeps its connection until it is read
  to the end or closed (requests' `Response.close` closes the connection and puts it back), so a
  blob stream abandoned half-read frees its slot as soon as its response is closed.
- the earlier design, a semaphore taken before each request and given back when its answer is read
  or closed over a pool that does not block, is defined in the benchmark, which passes it in
  through the same `ConnectionCap` interface to compare the two again when urllib3 changes.

Measured (16 threads, N = 3, small answers, blobs abandoned half-read and blobs read whole): both
keep at most N connections open at once, and neither loses a slot to an abandoned stream. The pool
needs no bookkeeping of ours, and a request waiting out a backoff between two attempts does not
hold a slot it does not use. It caps connections per host of one transport: a token server or a
redirect target has a pool (and a cap) of its own. urllib3 (2.x) closes a pool it drops from its
manager only when that pool is collected, and a new pool for the host would not count connections
still out: so the manager keeps `POOLS` hosts, more than a transport ever talks to.
"""

from __future__ import annotations

from typing import Protocol

# Hosts one transport keeps a pool for (registry, token server, redirect targets); far more than
# any registry uses, so that no pool whose connections are out is evicted (see the module docs).
POOLS = 32


class ConnectionCap(Protocol):
    """What the transport asks of a cap: the pool's settings, and a slot around each request."""

    pool_block: bool

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class PoolCap:
    """The pool blocks on its N connections: no slot to take here."""

    pool_block = True

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass
