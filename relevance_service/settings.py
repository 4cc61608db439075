"""Service settings: one env-backed dataclass, read once behind a cached :func:`get_settings`.

Every knob has a default that works on one machine; production overrides come from
``RELEVANCE_*`` environment variables, so the same image runs as N stateless replicas. Tests build a
:class:`ServiceSettings` directly (``ServiceSettings(home=..., dev_mode=True)``) or with
:meth:`ServiceSettings.from_env` over a dict, never by mutating ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from relevance_core.ranking.rules import RerankConfig
from relevance_core.schemas import EVENT_TYPES, EventType
from relevance_core.settings import relevance_home
from relevance_service.user_state import DEFAULT_TTL_S

#: Interactions that mean "the user has seen this item": removed from their recommendations by default.
#: ``impression`` is excluded: an item that was merely shown may be shown again.
DEFAULT_EXCLUDE_SEEN: tuple[str, ...] = tuple(e for e in EVENT_TYPES if e != EventType.IMPRESSION)

#: the rules' defaults (the settings below take them, under the same names)
_RULES = RerankConfig()

#: Hard ceilings that the OpenAPI schema advertises; the configurable limits must stay under them.
HARD_MAX_K = 1000
HARD_MAX_HISTORY = 1000

RATE_UNITS = {
    "s": "second",
    "sec": "second",
    "second": "second",
    "m": "minute",
    "min": "minute",
    "minute": "minute",
    "h": "hour",
    "hour": "hour",
    "d": "day",
    "day": "day",
}


class SettingsError(ValueError):
    """A setting has an invalid value, or the combination of settings is unsafe to start with."""


def _setting(default: object = dataclasses.MISSING, doc: str = "", *, factory=dataclasses.MISSING):
    """A field with its meaning attached: docs/configuration.md is generated from these
    (:func:`reference`), so the reference cannot drift from the code."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    # -- where the bundles live ------------------------------------------------------------------
    home: str = _setting(
        doc="the store the bundles are read from: a directory or `s3://bucket/prefix`", factory=relevance_home
    )
    s3_endpoint: str | None = _setting(None, "an S3-compatible server's URL (MinIO, moto); empty: AWS")
    poll_interval_s: float = _setting(10.0, "seconds between checks of `artifacts/LATEST` for a new bundle")
    bundle_cache_dir: str | None = _setting(
        None,
        "local copies of remote (S3) bundles and the last-good pointer, so a restart while S3 is down "
        "serves the last good bundle; empty: `<tmp>/relevance-bundle-cache`",
    )
    s3_connect_timeout_s: float = _setting(3.0, "S3 connect timeout")
    s3_read_timeout_s: float = _setting(30.0, "S3 read timeout")
    s3_max_attempts: int = _setting(3, "S3 attempts per call (retries with backoff)")
    # -- security and limits ---------------------------------------------------------------------
    dev_mode: bool = _setting(
        False, "write and admin endpoints open without a token (logged loudly); for a laptop only"
    )
    api_token: str | None = _setting(
        None,
        "the token write and admin endpoints require (`Authorization: Bearer`); required outside dev mode",
    )
    write_endpoints: bool = _setting(True, "mount the write and admin endpoints (0: a read-only replica)")
    max_body_bytes: int = _setting(1 << 20, "largest request body accepted (413 above)")
    default_k: int = _setting(20, "recommendations per request when the request names no `k`")
    max_k: int = _setting(100, "largest `k` a request may ask for")
    max_history: int = _setting(200, "longest history a request may carry")
    max_events_per_batch: int = _setting(1000, "most events one `POST /v1/events` may carry")
    pseudonym_key: str | None = _setting(
        None,
        "key of the HMAC that replaces user ids in logs, impressions and landing events; empty: a random "
        "key per start (pseudonyms then do not join up across restarts)",
    )
    rate_limit: str | None = _setting(
        None,
        "per client address, `N/second` (or minute, hour, day): 429 with `Retry-After` above it; empty: off",
    )
    cors_allow_origins: tuple[str, ...] = _setting(
        (), "comma-separated origins allowed by CORS; empty: CORS off (no Access-Control-* headers)"
    )
    # -- logging ------------------------------------------------------------------------------------------
    log_level: str | None = _setting(
        None,
        "the service's own loggers (debug ... critical); empty: INFO under uvicorn, else the host's "
        "configuration (uvicorn's loggers follow `relevance serve --log-level`)",
    )
    access_log: bool = _setting(False, "one line per request: route template, status, ms, pseudonymised user")
    # -- retrieval --------------------------------------------------------------------------------
    candidates_k: int = _setting(500, "ANN candidates fetched per request before filters and ranking")
    max_candidates_k: int = _setting(
        8000, "most ANN candidates a widened search fetches when filters leave too few"
    )
    exact_scan_limit: int = _setting(
        200_000, "a restrictive filter whose matching items are at most this many is answered by exact scan"
    )
    nprobe: int | None = _setting(None, "IVF lists searched; empty: the value tuned at build time, else 32")
    ef_search: int | None = _setting(None, "HNSW search breadth; empty: the tuned value, else 128")
    torch_threads: int = _setting(1, "threads of the TorchScript towers per worker")
    user_tower_runtime: str = _setting(
        "auto",
        "`auto`: ONNX Runtime runs the bundle's `user_encoder.onnx` (about half the TorchScript tower's "
        "time; a bundle whose two disagree is refused), else TorchScript; `torchscript`: always `user_tower.pt`",
    )
    faiss_threads: int = _setting(1, "FAISS threads per worker")
    history_length: int | None = _setting(
        None, "history entries the user tower reads; empty: the length the model was trained with"
    )
    # -- ranking and re-ranking ---------------------------------------------------------------------
    ranking_stage: bool = _setting(
        True,
        "0: serve the retrieval order even when the bundle carries a ranker (the operator's switch, "
        "without republishing; `GET /v1/bundle` shows `ranking.in_use`)",
    )
    exclude_seen_event_types: tuple[str, ...] = _setting(
        DEFAULT_EXCLUDE_SEEN, "comma-separated event types whose items are not recommended back to the user"
    )
    popularity_penalty: float = _setting(
        _RULES.popularity_penalty,
        "score subtracted x the item's popularity (log-scaled to 0..1): against popularity bias",
    )
    max_per_category: int = _setting(
        _RULES.max_per_category, "diversity cap: items of one category per slate"
    )
    max_per_seller: int = _setting(_RULES.max_per_seller, "diversity cap: items of one seller per slate")
    diversity_category_level: int = _setting(2, "category path level the category cap counts on")
    diversity: str = _setting(
        _RULES.diversity, "`caps`, `mmr` (maximal marginal relevance over the embeddings) or `none`"
    )
    mmr_lambda: float = _setting(_RULES.mmr_lambda, "relevance weight of MMR (1: no diversity)")
    promotions_file: str | None = _setting(
        None,
        "a JSON file of additive boosts by item, category prefix or seller (`Promotions`), read at start",
    )
    # -- user state --------------------------------------------------------------------------------
    redis_url: str | None = _setting(
        None, "user histories shared by every worker and replica (`redis://host:6379/0`); empty: in-process"
    )
    state_max_users: int = _setting(
        1_000_000, "users kept in the in-process state (least recently updated dropped first)"
    )
    state_ttl_s: float = _setting(
        DEFAULT_TTL_S, "a user's history expires this long after their last event (wall-clock seconds)"
    )
    seed_from_lake: bool = _setting(True, "seed user histories from the lake's newest `sessions` at start")
    seed_days: int = _setting(7, "days of `sessions` read when seeding")
    seed_max_users: int = _setting(200_000, "most users seeded")
    seed_ready_timeout_s: float = _setting(
        120.0,
        "/readyz answers 503 while seeding runs, but no longer than this after start-up (a slow lake must "
        "not keep every replica out for good)",
    )
    # -- landing writes (impressions, live events, live listings) ----------------------------------
    impressions_enabled: bool = _setting(
        True, "write served slates to the landing zone as `impression` events"
    )
    landing_flush_s: float = _setting(2.0, "seconds between flushes of pending landing writes")
    landing_max_pending: int = _setting(
        200_000, "pending landing rows held for the next flush; rows beyond it are dropped and counted"
    )
    persist_live_items: bool = _setting(True, "write live listings to the landing catalog")
    max_live_items: int = _setting(50_000, "live listings held in memory beside the bundle")

    def __post_init__(self) -> None:
        if not 1 <= self.max_k <= HARD_MAX_K:
            raise SettingsError(f"max_k must be in 1..{HARD_MAX_K}, got {self.max_k}")
        if not 1 <= self.default_k <= self.max_k:
            raise SettingsError(f"default_k must be in 1..max_k ({self.max_k}), got {self.default_k}")
        if not 1 <= self.max_history <= HARD_MAX_HISTORY:
            raise SettingsError(f"max_history must be in 1..{HARD_MAX_HISTORY}")
        if self.candidates_k < self.max_k:
            raise SettingsError("candidates_k must be at least max_k")
        if self.user_tower_runtime not in ("auto", "torchscript"):
            raise SettingsError(
                f"user_tower_runtime must be auto or torchscript, got {self.user_tower_runtime!r}"
            )
        if self.diversity not in ("caps", "mmr", "none"):
            raise SettingsError(f"diversity must be caps, mmr or none, got {self.diversity!r}")
        unknown = set(self.exclude_seen_event_types) - set(EVENT_TYPES)
        if unknown:
            raise SettingsError(f"exclude_seen_event_types has unknown event types {sorted(unknown)}")
        if self.poll_interval_s <= 0:
            raise SettingsError("poll_interval_s must be positive")
        self.rate_limit_rule  # noqa: B018 - validates the format
        if self.log_level and self.log_level.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise SettingsError(
                f"log_level must be debug, info, warning, error or critical, got {self.log_level!r}"
            )
        if self.s3_max_attempts < 1 or self.s3_connect_timeout_s <= 0 or self.s3_read_timeout_s <= 0:
            raise SettingsError("s3 timeouts must be positive and s3_max_attempts at least 1")

    @property
    def rate_limit_rule(self) -> tuple[str, int] | None:
        """``rate_limit`` as Litestar's ``(unit, max_requests)``, or None when off."""
        if not self.rate_limit or self.rate_limit.strip().lower() in ("off", "0", "none"):
            return None
        n, _, unit = self.rate_limit.strip().partition("/")
        unit = RATE_UNITS.get(unit.strip().lower(), "")
        try:
            count = int(n)
        except ValueError:
            count = 0
        if not unit or count < 1:
            raise SettingsError(
                f"rate_limit must look like 100/second (units: second, minute, hour, day), got {self.rate_limit!r}"
            )
        return unit, count

    @property
    def writes_allowed(self) -> bool:
        """Write/admin endpoints are mounted only with a token, or in dev mode (then open)."""
        return self.write_endpoints and (bool(self.api_token) or self.dev_mode)

    def check_startable(self) -> None:
        """Refuse to start write endpoints without a token outside dev mode."""
        if self.write_endpoints and not self.api_token and not self.dev_mode:
            raise SettingsError(
                "write/admin endpoints need RELEVANCE_API_TOKEN; set it, run with RELEVANCE_DEV_MODE=1, "
                "or disable them with RELEVANCE_WRITE_ENDPOINTS=0 (read-only replica)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> ServiceSettings:
        """Build from ``RELEVANCE_<FIELD>`` variables (upper-case field name); ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"RELEVANCE_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        if "home" not in values and "RELEVANCE_HOME" in env:
            values["home"] = env["RELEVANCE_HOME"]
        values.update(overrides)
        return cls(**values)


def _parse(name: str, raw: str, typ: object) -> object:
    t = str(typ)
    try:
        if t.startswith("bool"):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if t.startswith("int"):
            return None if (raw == "" and "None" in t) else int(raw)
        if t.startswith("float"):
            return float(raw)
        if t.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if "None" in t and raw == "":
            return None
        return raw
    except ValueError as e:
        raise SettingsError(f"RELEVANCE_{name.upper()}: cannot parse {raw!r} as {t}") from e


def reference() -> str:
    """docs/configuration.md: every ``RELEVANCE_*`` setting, its default and meaning, from the fields."""
    lines = [
        "# Configuration",
        "",
        "Every setting of the service is a `RELEVANCE_*` environment variable (the upper-case field name of",
        "`relevance_service.settings.ServiceSettings`). Generated from the code by",
        "`python -m relevance_service.settings > docs/configuration.md`; a test checks it is current.",
        "Booleans take 1/0, true/false, yes/no, on/off; lists are comma-separated.",
        "",
        "The pipeline's own settings (`RELEVANCE_HOME`, `DAGSTER_HOME`, `RELEVANCE_SPARK_MASTER`,",
        "`RELEVANCE_PARTITIONS_START`, `RELEVANCE_WAREHOUSE`) are in the README's configuration table; the",
        "assets' hyper-parameters are their Dagster run config.",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for f in dataclasses.fields(ServiceSettings):
        if f.default is not dataclasses.MISSING:
            default = f.default
            shown = (
                ", ".join(default)
                if isinstance(default, tuple)
                else ("" if default is None else str(int(default) if isinstance(default, bool) else default))
            )
        else:
            shown = "`./.relevance`" if f.name == "home" else ""
        shown = f"`{shown}`" if shown and not shown.startswith("`") else (shown or "(empty)")
        lines.append(f"| `RELEVANCE_{f.name.upper()}` | {shown} | {f.metadata.get('doc', '')} |")
    return "\n".join(lines) + "\n"


@functools.cache
def get_settings() -> ServiceSettings:
    """The process's settings, read from the environment once."""
    return ServiceSettings.from_env()


if __name__ == "__main__":
    print(reference(), end="")
