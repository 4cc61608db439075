"""``relevance serve --workers 2``: one SO_REUSEPORT socket per worker process. Connections spread over
both workers and even out (a worker over its share has clients reconnect), a worker that dies is
replaced while the other keeps answering, SIGTERM stops them all, a SIGKILLed supervisor leaves no worker
behind, and with ``RELEVANCE_REDIS_URL`` every worker answers a user from the history another worker
stored."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from support.bundles import publish_bundle
from support.service_process import AUTH, Server, wait_for

from relevance_core.storage import LocalStore

pytestmark = pytest.mark.e2e


def workers_answering(url: str, tries: int = 40) -> set[int]:
    """Worker pids seen over ``tries`` fresh connections (each goes to one listening socket)."""
    seen = set()
    for _ in range(tries):
        r = httpx.get(f"{url}/readyz", timeout=10)
        if r.status_code == 200:
            seen.add(r.json()["worker"])
    return seen


def split(answers: list[httpx.Response]) -> dict[int, int]:
    """How many of these ``/readyz`` answers each worker gave."""
    out: dict[int, int] = {}
    for r in answers:
        out[r.json()["worker"]] = out.get(r.json()["worker"], 0) + 1
    return out


def two_workers(url: str, without: int | None = None) -> set[int] | None:
    seen = workers_answering(url)
    return seen if len(seen) == 2 and without not in seen else None


def test_two_workers_share_connections_survive_a_worker_kill_and_stop_cleanly(model, tmp_path):
    store = LocalStore(tmp_path / "home")
    publish_bundle(store, 0)
    srv = Server(store.root, tmp_path / "server.log", workers=2)
    try:
        srv.wait_ready()
        first = wait_for(lambda: two_workers(srv.url), timeout=120)
        assert srv.proc.pid not in first  # the supervisor does not serve, its workers do
        # 64 keep-alive clients: the kernel hashes their connections over both workers' sockets at random,
        # and a worker holding more than its share answers with Connection: close until the split is even
        clients = [httpx.Client(base_url=srv.url, timeout=10) for _ in range(64)]
        try:
            rounds = [[c.get("/readyz") for c in clients] for _ in range(6)]
        finally:
            for c in clients:
                c.close()
        at_start, at_end = split(rounds[0]), split(rounds[-1])
        shed = sum(r.headers.get("connection") == "close" for answers in rounds for r in answers)
        assert set(at_start) == set(at_end) == first, (at_start, at_end)
        assert max(at_end.values()) - min(at_end.values()) <= 2, (at_start, at_end, shed)
        if max(at_start.values()) - min(at_start.values()) > 2:
            assert shed > 0, (at_start, at_end)
        # a connection the server did not ask to close stays on its worker
        for answers, later_answers in zip(rounds, rounds[1:], strict=False):
            for r, later in zip(answers, later_answers, strict=True):
                if r.headers.get("connection") != "close":
                    assert later.json()["worker"] == r.json()["worker"]
        # a worker dies: requests keep being answered by the other, and a replacement starts
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        # connections already queued on the dead worker's own socket are reset with it (the price of
        # per-worker sockets); once it is gone every new connection goes to the live worker
        wait_for(lambda: f"worker {victim} exited" in srv.log_path.read_text(), timeout=30)
        for _ in range(20):
            assert (
                httpx.post(f"{srv.url}/v1/recommendations", json={"history": []}, timeout=10).status_code
                == 200
            )
        later = wait_for(lambda: two_workers(srv.url, without=victim), timeout=120)
        assert len(later - first) == 1
    finally:
        srv.stop()
    assert srv.proc.returncode == 0, srv.log_path.read_text()[-2000:]
    assert not any(alive(pid) for pid in first | later)

    # a SIGKILLed supervisor takes its workers with it (no orphan keeps serving on the port)
    srv2 = Server(store.root, tmp_path / "server2.log", workers=2)
    try:
        srv2.wait_ready()
        orphans = wait_for(lambda: two_workers(srv2.url), timeout=120)
        os.kill(srv2.proc.pid, signal.SIGKILL)
        srv2.proc.wait(timeout=30)
        wait_for(lambda: not any(alive(pid) for pid in orphans), timeout=30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv2.url}/readyz", timeout=5)
    finally:
        srv2.kill()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_share_user_state_through_redis(model, tmp_path, redis_url):
    """Events posted to one worker change every worker's answer for that user, and an erasure on one
    worker forgets the user on all (in-process state would leave the other worker answering "popular",
    then remembering an erased user)."""
    store = LocalStore(tmp_path / "home")
    publish_bundle(store, 0)
    env = {"RELEVANCE_REDIS_URL": redis_url}
    srv = Server(store.root, tmp_path / "server.log", workers=2, env=env)
    try:
        srv.wait_ready()
        wait_for(lambda: two_workers(srv.url), timeout=120)
        last = model.pairs.to_pylist()[-1]
        user, items = f"redis-{last['user_id']}", last["hist_item_ids"][-6:]
        events = {"events": [{"user_id": user, "item_id": i, "event_type": "view"} for i in items]}
        assert httpx.post(f"{srv.url}/v1/events", json=events, headers=AUTH, timeout=10).status_code == 202

        def answers() -> dict[int, set[str]]:
            """strategy per worker over fresh connections (each lands on one worker's socket)."""
            seen: dict[int, set[str]] = {}
            for _ in range(40):
                with httpx.Client(base_url=srv.url, timeout=10) as c:
                    w = c.get("/readyz").json()["worker"]
                    r = c.get(f"/v1/users/{user}/recommendations")
                    assert r.status_code == 200, r.text
                    seen.setdefault(w, set()).add(r.json()["strategy"])
            return seen

        before = answers()
        assert len(before) == 2 and all(v == {"personalized"} for v in before.values()), before
        r = httpx.post(f"{srv.url}/v1/admin/erase-users", json={"user_ids": [user]}, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["forgotten"] == 1, r.text
        after = answers()
        assert len(after) == 2 and all(v == {"popular"} for v in after.values()), after
    finally:
        srv.stop()
