"""A worker over its share of keep-alive connections answers with ``Connection: close``
(``relevance_service.connection_balance``); the real server converging is tested in
tests/e2e/test_service_workers.py."""

from __future__ import annotations

import asyncio

import pytest

from relevance_service.connection_balance import ConnectionBalanceMiddleware, ConnectionShare


@pytest.mark.parametrize(
    ("mine", "other", "over"),
    [
        (16, 16, False),
        (17, 15, False),  # within the slack of one
        (18, 14, True),
        (18, 16, False),
        (19, 15, True),
        (3, 0, False),
        (4, 0, True),
        (0, 5, False),
    ],
)
def test_a_worker_is_over_its_share_above_the_rounded_up_mean_plus_slack(mine, other, over):
    counts = [0, other]
    share = ConnectionShare(counts, 0, lambda: mine)
    assert share.over_share() is over
    assert counts == [mine, other]  # it publishes its own count for the other workers


def run(middleware, headers=()):
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(app)({"type": "http"}, None, send))
    return sent[0]["headers"], sent[1]["body"]


def test_only_an_over_share_worker_asks_the_client_to_reconnect():
    shed = []
    counts = [0, 10]

    def balanced(mine):
        return lambda app: ConnectionBalanceMiddleware(
            app, ConnectionShare(counts, 0, lambda: mine), lambda: shed.append(1)
        )

    headers, body = run(balanced(11), [(b"content-type", b"application/json")])
    assert headers == [(b"content-type", b"application/json")] and body == b"{}" and not shed
    headers, body = run(balanced(14 + 10), [(b"content-type", b"application/json")])
    assert headers == [(b"content-type", b"application/json"), (b"connection", b"close")]
    assert body == b"{}" and len(shed) == 1
    # a response that already decides about its connection is left alone
    headers, _ = run(balanced(30), [(b"Connection", b"keep-alive")])
    assert headers == [(b"Connection", b"keep-alive")] and len(shed) == 1
