"""The assets' run config is generated from the core's config dataclasses: every core field settable from
Dagster with the core's default, and converted back to the same dataclass."""

import dataclasses

import dagster as dg
import pytest

from relevance_assets.config import to_core
from relevance_assets.defs.model.two_tower import TwoTowerModelConfig
from relevance_assets.defs.pipeline.assets import SessionsConfig, TrainingPairsConfig
from relevance_core.model.config import TwoTowerConfig
from relevance_core.pipeline.config import PairsConfig, SessionConfig


def _defaults(core) -> dict:
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(core)
    }


def test_every_model_field_is_run_config_with_the_core_default():
    fields = TwoTowerModelConfig.model_fields
    assert set(fields) == {f.name for f in dataclasses.fields(TwoTowerConfig)}
    for name, default in _defaults(TwoTowerConfig).items():
        expected = False if name == "progress_bar" else default  # a Dagster run's log is not a terminal
        assert fields[name].get_default(call_default_factory=True) == expected, name


def test_the_model_run_config_converts_to_the_model_config():
    cfg = to_core(TwoTowerModelConfig(item_content=False, readout="query+last", devices="2"), TwoTowerConfig)
    assert isinstance(cfg, TwoTowerConfig)
    assert (cfg.item_content, cfg.readout, cfg.devices, cfg.progress_bar) == (False, "query+last", 2, False)
    assert to_core(TwoTowerModelConfig(), TwoTowerConfig).devices == "auto"
    assert to_core(TwoTowerModelConfig(limit_train_batches=150), TwoTowerConfig).limit_train_batches == 150


def test_a_field_only_the_core_declared_before_is_settable_from_dagster():
    """``weight_decay`` and ``shuffle_buffer`` were not in the hand-written asset config."""
    cfg = to_core(TwoTowerModelConfig(weight_decay=0.01, shuffle_buffer=1024), TwoTowerConfig)
    assert (cfg.weight_decay, cfg.shuffle_buffer) == (0.01, 1024)


def test_run_config_is_checked_by_dagster():
    @dg.op
    def takes(config: TwoTowerModelConfig) -> int:
        return config.batch_size

    @dg.job
    def job():
        takes()

    ok = job.execute_in_process(run_config={"ops": {"takes": {"config": {"batch_size": 64, "devices": "1"}}}})
    assert ok.output_for_node("takes") == 64
    with pytest.raises(dg.DagsterInvalidConfigError):
        job.execute_in_process(run_config={"ops": {"takes": {"config": {"no_such_field": 1}}}})


def test_pipeline_run_config_has_the_core_defaults():
    assert to_core(SessionsConfig(), SessionConfig) == SessionConfig()
    pairs, session = TrainingPairsConfig().to_core()
    assert pairs == PairsConfig()
    assert (session.gap_minutes, session.lookback_days) == (
        SessionConfig().gap_minutes,
        SessionConfig().lookback_days,
    )
    pairs, session = TrainingPairsConfig(history_length=5, session_gap_minutes=10.0).to_core()
    assert (pairs.history_length, session.gap_minutes) == (5, 10.0)
