"""Service settings: one env-backed dataclass, read once behind a cached :func:`get_settings`.

Every knob has a default that works on one machine (DESIGN.md §5); production overrides come from
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

from relevance_core.schemas import EVENT_TYPES, EventType
from relevance_core.settings import relevance_home

#: Interactions that mean "the user has seen this item": removed from their recommendations by default.
#: ``impression`` is excluded: an item that was merely shown may be shown again.
DEFAULT_EXCLUDE_SEEN: tuple[str, ...] = tuple(e for e in EVENT_TYPES if e != EventType.IMPRESSION)

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


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    # -- where the bundles live ------------------------------------------------------------------
    home: str = field(default_factory=relevance_home)
    s3_endpoint: str | None = None
    poll_interval_s: float = 10.0
    # local copies of remote (S3) bundles and the last-good pointer; None: <tmp>/relevance-bundle-cache
    bundle_cache_dir: str | None = None
    s3_connect_timeout_s: float = 3.0
    s3_read_timeout_s: float = 30.0
    s3_max_attempts: int = 3
    # -- security and limits ---------------------------------------------------------------------
    dev_mode: bool = False
    api_token: str | None = None
    write_endpoints: bool = True
    max_body_bytes: int = 1 << 20
    default_k: int = 20
    max_k: int = 100
    max_history: int = 200
    max_events_per_batch: int = 1000
    pseudonym_key: str | None = None
    rate_limit: str | None = None  # per client address, "N/second" | "N/minute" | ...; None: off
    cors_allow_origins: tuple[str, ...] = ()  # empty: CORS off (no Access-Control-* headers at all)
    # -- logging ------------------------------------------------------------------------------------------
    # the service's own loggers; None: INFO under uvicorn, the host's configuration otherwise (uvicorn's
    # loggers follow ``relevance serve --log-level``)
    log_level: str | None = None
    access_log: bool = False  # one line per request: route template, status, ms, pseudonymised user
    # -- retrieval --------------------------------------------------------------------------------
    candidates_k: int = 500
    max_candidates_k: int = 8000
    exact_scan_limit: int = 200_000
    nprobe: int | None = None  # None: the value tuned at build time (manifest), else 32
    ef_search: int | None = None  # None: the tuned value, else 128
    torch_threads: int = 1
    #: "auto": ONNX Runtime when the bundle has ``user_encoder.onnx`` and onnxruntime is installed (about
    #: half the user tower's time), else TorchScript; "torchscript": always ``user_tower.pt``
    user_tower_runtime: str = "auto"
    faiss_threads: int = 1
    history_length: int | None = None
    # -- re-ranking --------------------------------------------------------------------------------
    #: False: serve the retrieval order even when the bundle carries a ranker (the operator's switch when
    #: the second stage misbehaves or costs too much, without republishing; also the A/B reference of
    #: ``relevance bench serve --compare-ranking``)
    ranking_stage: bool = True
    exclude_seen_event_types: tuple[str, ...] = DEFAULT_EXCLUDE_SEEN
    popularity_penalty: float = 0.05
    max_per_category: int = 6
    max_per_seller: int = 3
    diversity_category_level: int = 2
    diversity: str = "caps"  # "caps" | "mmr" | "none"
    mmr_lambda: float = 0.8
    promotions_file: str | None = None
    # -- user state --------------------------------------------------------------------------------
    #: a shared store for several workers / replicas (``redis://host:6379/0``); None: in-process
    redis_url: str | None = None
    state_max_users: int = 1_000_000
    state_ttl_s: float = 30 * 86400.0
    seed_from_lake: bool = True
    seed_days: int = 7
    seed_max_users: int = 200_000
    #: /readyz answers 503 while seeding runs (a replica that answers a returning user with "popular"
    #: is not ready), but no longer than this after start-up: a slow lake must not keep every replica
    #: out for good
    seed_ready_timeout_s: float = 120.0
    # -- landing writes (impressions, live events, live listings) ----------------------------------
    impressions_enabled: bool = True
    landing_flush_s: float = 2.0
    landing_max_pending: int = 200_000
    persist_live_items: bool = True
    max_live_items: int = 50_000

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
        """Refuse to start write endpoints without a token outside dev mode (issue 6, security)."""
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


@functools.cache
def get_settings() -> ServiceSettings:
    """The process's settings, read from the environment once."""
    return ServiceSettings.from_env()
