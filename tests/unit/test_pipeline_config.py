"""The pipeline's settings: split derivation, validation, and the SQL fragments both engines share."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from relevance_core.pipeline.config import PairsConfig, SessionConfig, day_range, shift_day
from relevance_core.pipeline.sessionize import rank_sql, stream_sql, weight_sql


def test_default_split_keeps_the_last_days_out_of_training():
    val, test = PairsConfig().split_dates("2026-03-10")
    assert (val, test) == (date(2026, 3, 9), date(2026, 3, 10))
    val, test = PairsConfig(test_days=2, validation_days=3).split_dates("2026-03-10")
    assert (val, test) == (date(2026, 3, 6), date(2026, 3, 9))
    val, test = PairsConfig(test_start="2026-02-01", validation_start="2026-01-20").split_dates(None)
    assert (val, test) == (date(2026, 1, 20), date(2026, 2, 1))
    with pytest.raises(ValueError):
        PairsConfig().split_dates(None)
    with pytest.raises(ValueError):
        PairsConfig(test_start="2026-01-01", validation_start="2026-02-01").split_dates(None)


@pytest.mark.parametrize("kwargs", [{"gap_minutes": 0}, {"lookback_days": 0}, {"gap_minutes": 24 * 60}])
def test_session_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        SessionConfig(**kwargs)


def test_pairs_config_rejects_nonsense():
    with pytest.raises(ValueError):
        PairsConfig(history_length=0)


def test_days():
    assert day_range("2026-02-27", "2026-03-01") == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert shift_day("2026-03-01", -1) == "2026-02-28"


def test_sql_fragments_mean_the_same_in_duckdb():
    """Weights/ranks/streams are one text for Spark and DuckDB; DuckDB must read them as intended
    (a NULL session id must not vanish into the stream key: DuckDB's concat() would skip it)."""
    cfg = SessionConfig(event_weights={"view": 1.5, "purchase": 10.0})
    con = duckdb.connect()
    rows = con.execute(
        f"""SELECT {weight_sql("e", cfg)}, {rank_sql("e")},
                   {stream_sql().replace("AS STRING", "AS VARCHAR")}
            FROM (VALUES ('u1', NULL, 'i1', 'view', 5, NULL, 'view'),
                         ('u1', 's', 'i1', 'purchase', 5, NULL, 'purchase'),
                         (NULL, NULL, 'i1', 'teleport', 5, 'mobile', 'teleport'))
                 t(user_id, session_id, item_id, event_type, ts_us, device_type, e)"""
    ).fetchall()
    assert rows == [
        (1.5, 1, "uu1\x1fn"),
        (10.0, 6, "uu1\x1fss"),
        (0.0, 9, "ei1\x1f5\x1fteleport\x1fmobile"),
    ]
