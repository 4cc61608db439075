"""Even out keep-alive connections over the workers of ``relevance serve --workers N``.

Each worker listens on its own ``SO_REUSEPORT`` socket and the kernel hashes every new connection to
one of them. Over thousands of short-lived clients that is even; over the few dozen long-lived
keep-alive connections of a reverse proxy or a load generator it is a coin toss per connection. With 32
connections a 19 / 13 split is common, and then one worker answers 59% of the requests: its queue and
tail latency grow while the other idles (measured: per-second p99 up to 27 ms on the heavier worker
against 18 ms on the lighter, ``docs/benchmark-history.md``).

So a worker that holds more than its share asks the client to reconnect: while its connection count
is above ``ceil(total / workers) + SLACK`` its responses carry ``Connection: close``, the server closes
that connection once the response is sent, and the client's next connection is hashed afresh. A worker
only sheds while it is over its share, so the split converges to within ``SLACK`` of even (17 / 15 of
32). The slack keeps it from churning: without it a replacement connection that lands on the other
worker pushes that one over by one, it sheds in turn, and so on (measured: 1,510 reconnects in an
18 s closed-loop run with no slack). This is the same remedy as gRPC's ``MAX_CONNECTION_AGE`` or
Envoy's connection balancing, at the cost of one new TCP connection per shed connection. No request is dropped: the response is
complete, and HTTP/1.1 clients open a new connection for the next request after ``Connection: close``.

The counts live in a small shared array the supervisor creates (one slot per worker); each worker
writes its own slot from uvicorn's live connection set when it answers a request and reads the
others'. A slot can be a little stale, which only delays a shed by a request.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence

#: connections a worker may hold above the even share before it sheds
SLACK = 1

#: the share this worker process enforces; set by ``relevance serve`` in each worker before the app is
#: created, None with one worker (or outside ``relevance serve``)
current: ConnectionShare | None = None


class ConnectionShare:
    def __init__(self, counts: MutableSequence[int], index: int, connections: Callable[[], int]):
        self.counts = counts
        self.index = index
        self.connections = connections

    def over_share(self) -> bool:
        """Whether this worker holds more connections than ``ceil(total / workers) + SLACK``."""
        mine = self.connections()
        self.counts[self.index] = mine
        total = sum(self.counts)
        return mine > -(-total // len(self.counts)) + SLACK


def install(share: ConnectionShare | None) -> None:
    global current
    current = share


class ConnectionBalanceMiddleware:
    """Raw ASGI: ``Connection: close`` on responses while this worker is over its share."""

    def __init__(self, app, share: ConnectionShare, shed: Callable[[], None]):
        self.app = app
        self.share = share
        self.shed = shed  # counts a shed connection (``relevance_connections_shed_total``)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.share.over_share():
            await self.app(scope, receive, send)
            return

        async def send_closing(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                    self.shed()
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)
