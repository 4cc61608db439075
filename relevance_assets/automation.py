"""The one place where freshness policies and automation conditions are declared.

Values a marketplace would choose, and why:

* Events land daily; a day's ``raw_events`` partition is expected within a couple of hours of midnight, so
  ingestion is *warn* after 25 h and *fail* after 26 h without a new materialization.
* ``sessions`` / ``training_pairs`` follow ingestion by one run: a little more slack (26 h / 28 h).
* The catalog (``items`` and the dbt models) changes all day; a snapshot older than a day means listings
  sold yesterday still look available, which users notice: warn 24 h, fail 26 h.
* The model, embeddings, index, evaluation and bundle retrain nightly at 02:00 UTC (a cron automation
  condition) and must be published by 06:00 UTC, before European morning traffic: a cron freshness policy
  with deadline 06:00 and a 24 h lower bound ("a materialization in the 24 h before each deadline").

Freshness is per asset, not per partition (a Dagster limitation): for the daily assets it measures
"some partition was materialized recently", which is what the on-call cares about.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

RETRAIN_CRON = "0 2 * * *"
PUBLISH_DEADLINE_CRON = "0 6 * * *"

_INGEST = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
_DERIVED = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=28), warn_window=timedelta(hours=26))
_CATALOG = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=24))
_NIGHTLY = dg.FreshnessPolicy.cron(deadline_cron=PUBLISH_DEADLINE_CRON, lower_bound_delta=timedelta(hours=24))

#: asset key (path string) → freshness policy. Every asset of the graph is listed; a test checks that
#: none is missing.
FRESHNESS_POLICIES: dict[str, dg.FreshnessPolicy] = {
    "raw_events": _INGEST,
    "items": _CATALOG,
    "sessions": _DERIVED,
    "training_pairs": _DERIVED,
    "stg_items": _CATALOG,
    "stg_events": _DERIVED,
    "dim_items": _CATALOG,
    "item_popularity": _DERIVED,
    "daily_event_stats": _DERIVED,
    "two_tower_model": _NIGHTLY,
    "item_embeddings": _NIGHTLY,
    "faiss_index": _NIGHTLY,
    "learned_ranker": _NIGHTLY,
    "offline_evaluation": _NIGHTLY,
    "published_bundle": _NIGHTLY,
}

#: The model retrains on a cron; everything below it follows eagerly, so one tick republishes a bundle.
#: Catalog models follow their upstreams eagerly too. Daily event partitions are launched by the landing
#: sensor (a new file is a better signal than a clock).
#: Daily-partitioned assets: their partitions before the first landed day (and days with no data yet) are
#: "missing" forever, which would block plain ``eager()`` downstream of them. Their *updates* still
#: trigger, their missing partitions don't block.
DAILY_ASSETS = dg.AssetSelection.assets("raw_events", "sessions", "training_pairs")
_EAGER = dg.AutomationCondition.eager().replace(
    "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(DAILY_ASSETS)
)
#: Below the model, a new day of pairs is not a reason to rebuild the index (the nightly retrain is): the
#: daily assets neither trigger nor block.
_EAGER_AFTER_MODEL = dg.AutomationCondition.eager().ignore(DAILY_ASSETS)
AUTOMATION_CONDITIONS: dict[str, dg.AutomationCondition] = {
    "two_tower_model": dg.AutomationCondition.on_cron(RETRAIN_CRON),
    "item_embeddings": _EAGER_AFTER_MODEL,
    "faiss_index": _EAGER_AFTER_MODEL,
    "learned_ranker": _EAGER_AFTER_MODEL,
    "offline_evaluation": _EAGER_AFTER_MODEL,
    "published_bundle": _EAGER_AFTER_MODEL,
    "stg_items": _EAGER,
    "stg_events": _EAGER,
    "dim_items": _EAGER,
    "item_popularity": _EAGER,
    "daily_event_stats": _EAGER,
}


def _key(spec: dg.AssetSpec) -> str:
    return spec.key.to_user_string()


def _apply(spec: dg.AssetSpec) -> dg.AssetSpec:
    key = _key(spec)
    if key in FRESHNESS_POLICIES:
        spec = dg.apply_freshness_policy(spec, FRESHNESS_POLICIES[key])
    if key in AUTOMATION_CONDITIONS:
        spec = spec.replace_attributes(automation_condition=AUTOMATION_CONDITIONS[key])
    return spec


def apply_policies(defs: dg.Definitions) -> dg.Definitions:
    """Attach the freshness policies and automation conditions above to whatever assets ``defs`` holds."""
    return defs.map_asset_specs(func=_apply)


automation_sensor = dg.AutomationConditionSensorDefinition(
    "relevance_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the declarative automation (nightly retrain on cron, eager downstream).",
)
