"""Synthetic marketplace: a catalog and an interaction stream with structure a recommender can learn and
a test can check, plus the noise real landing zones carry.

Public API::

    cfg = preset("demo", seed=7)                        # or MarketplaceConfig(...)
    items, events, truth = generate_tables(cfg)          # in memory, canonical Arrow schemas
    report = write_marketplace(cfg, store_from_uri(uri))  # landing zone + generator_truth/
"""

from relevance_core.generator.config import PRESETS, MarketplaceConfig, ending_yesterday, preset
from relevance_core.generator.tables import MarketplaceTruth, generate_tables
from relevance_core.generator.writer import TRUTH_PREFIX, DayReport, MarketplaceReport, write_marketplace

__all__ = [
    "PRESETS",
    "TRUTH_PREFIX",
    "DayReport",
    "MarketplaceConfig",
    "MarketplaceReport",
    "MarketplaceTruth",
    "generate_tables",
    "ending_yesterday",
    "preset",
    "write_marketplace",
]
