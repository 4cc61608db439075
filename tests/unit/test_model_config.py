"""The Dagster asset's run config mirrors the model's dataclass by hand (Dagster needs a pydantic class):
this keeps the two from drifting apart silently."""

from __future__ import annotations

import dataclasses

from relevance_assets.defs.model.two_tower import TwoTowerModelConfig
from relevance_core.model.config import TwoTowerConfig

#: asset-side defaults that differ on purpose: no progress bar in Dagster run logs
ASSET_OVERRIDES = {"progress_bar": False}


def test_every_asset_field_is_a_model_field_with_the_same_default():
    core = {f.name: f.default for f in dataclasses.fields(TwoTowerConfig)}
    asset = {name: field.default for name, field in TwoTowerModelConfig.model_fields.items()}
    assert set(asset) <= set(core), sorted(set(asset) - set(core))
    for name, default in asset.items():
        assert default == ASSET_OVERRIDES.get(name, core[name]), name


def test_the_asset_config_converts_to_the_model_config():
    cfg = TwoTowerModelConfig(item_content=False, readout="query+last", devices="2").to_core()
    assert isinstance(cfg, TwoTowerConfig)
    assert (cfg.item_content, cfg.readout, cfg.devices, cfg.progress_bar) == (False, "query+last", 2, False)
