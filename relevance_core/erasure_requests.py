"""What an erasure asks of the rest of the system: which assets to rebuild, and the running service to
forget the users' recent history. Shared by ``relevance erase-user`` and the ``erase_users`` Dagster job
(docs/reliability.md has the endpoint's contract)."""

from __future__ import annotations

#: What a retrain after an erasure rebuilds: the dbt aggregates that counted the users, and the model
#: with everything downstream of it (embeddings, index, evaluation, the published bundle).
RETRAIN_ASSETS = ("stg_events", "item_popularity", "daily_event_stats")
RETRAIN_ROOT = "two_tower_model"
SERVICE_ERASE_PATH = "/v1/admin/erase-users"


def retrain_selection() -> str:
    """The ``dagster asset materialize --select`` string (Dagster's asset selection syntax)."""
    return ",".join([*RETRAIN_ASSETS, f"{RETRAIN_ROOT}*"])


def erase_in_service(url: str, token: str | None, user_ids: list[str], timeout_s: float = 30.0) -> dict:
    """Ask the service to forget the users (see docs/reliability.md for the endpoint's contract).

    Returns a small status dict for the receipt (no ids): ``{"status": "ok"|"missing_endpoint"|"error",
    "http_status": ..., "forgotten": n}``. Never raises for an HTTP answer: the lake erasure still runs
    and the command reports the service part as not done.
    """
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.post(
            url.rstrip("/") + SERVICE_ERASE_PATH,
            json={"user_ids": user_ids},
            headers=headers,
            timeout=timeout_s,
        )
    except httpx.HTTPError as e:
        return {"status": "error", "error": type(e).__name__}
    out: dict = {"http_status": r.status_code}
    if r.status_code in (404, 405):
        out["status"] = "missing_endpoint"
    elif r.is_success:
        out["status"] = "ok"
        try:
            body = r.json()
            if isinstance(body, dict):
                out.update({k: v for k, v in body.items() if isinstance(v, int | float | bool)})
        except ValueError:
            pass
    else:
        out["status"] = "error"
    return out
