"""``GET /v1/bundle`` (what is serving), ``POST /v1/admin/reload`` and ``POST /v1/admin/erase-users``
(both token-guarded)."""

from __future__ import annotations

import logging

import msgspec
from litestar import Controller, get, post
from litestar.exceptions import ServiceUnavailableException

from relevance_service.controllers._common import serving_state
from relevance_service.schemas import (
    BundleResponse,
    EraseUsersRequest,
    EraseUsersResponse,
    ReloadRequest,
    ReloadResponse,
)
from relevance_service.security import require_token
from relevance_service.service import Service
from relevance_service.user_state import UserStateUnavailable

log = logging.getLogger(__name__)


class BundleController(Controller):
    path = "/v1/bundle"
    tags = ["admin"]

    @get("/", summary="The serving bundle's manifest")
    async def bundle(self, svc: Service) -> BundleResponse:
        """Version, size, search breadth and the full manifest (lineage, checksums, evaluation metrics)."""
        state = serving_state(svc)
        b = state.bundle
        return BundleResponse(
            version=b.version,
            loaded_at=b.loaded_at,
            n_items=b.n_items,
            live_items=len(state.overlay.data),
            dim=b.dim,
            search={"nprobe": b.default_breadth.nprobe, "ef_search": b.default_breadth.ef_search},
            user_tower_runtime=b.user_tower_runtime,
            ranking={
                "ranker": b.ranked,
                "in_use": b.ranked and svc.settings.ranking_stage,
                "covisit_edges": b.ranking.covisit.n_edges if b.ranking is not None else 0,
                "features": list(b.ranking.ranker.features) if b.ranked else [],
            },
            manifest=msgspec.to_builtins(b.manifest),
        )


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    security = [{"bearer": []}]
    guards = [require_token]

    @post("/reload", summary="Reload the bundle now", status_code=200)
    async def reload(self, svc: Service, data: ReloadRequest | None = None) -> ReloadResponse:
        """Checks ``LATEST`` (or loads ``version``) now instead of at the next poll; retries a version
        that failed before. A bundle that fails verification is refused and the old one keeps serving."""
        version = data.version if data is not None else None
        out = await svc.reloader.check(force=version is not None, version=version, retry_failed=True)
        return ReloadResponse(
            reloaded=out.reloaded, version=out.version, previous_version=out.previous_version, error=out.error
        )

    @post("/erase-users", summary="Forget users (right to erasure)", status_code=200)
    async def erase_users(self, svc: Service, data: EraseUsersRequest) -> EraseUsersResponse:
        """Deletes each user's recent history (held under the raw id and, for seeded live events, under
        the service's keyed pseudonym) and drops their rows still buffered for the landing zone, so
        nothing of theirs is written back after the lake is erased. ``relevance erase-user --service-url``
        calls this. The ids are never logged."""
        ids = sorted(set(data.user_ids))
        aliases = {u: svc.pseudonymize(u) for u in ids}
        pending_hit = svc.writer.forget({*ids, *aliases.values()})
        forgotten = 0
        try:
            for u in ids:
                p = aliases[u]
                held = await svc.user_state.delete_async(u)
                held = await svc.user_state.delete_async(p) or held
                if held or u in pending_hit or p in pending_hit:
                    forgotten += 1
        except UserStateUnavailable as e:  # an erasure must not report success it did not achieve
            svc.metrics.user_state_errors.labels(op="delete").inc()
            raise ServiceUnavailableException(f"{e}; retry the erasure") from e
        log.info("erasure: %d user(s) requested, %d forgotten", len(ids), forgotten)
        return EraseUsersResponse(requested=len(ids), forgotten=forgotten)
