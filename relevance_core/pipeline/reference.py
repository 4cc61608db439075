"""The same sessionization and pair generation as plain DuckDB SQL: the yardstick for the Spark jobs.

It is written differently on purpose where that is cheap: it sessionizes *all* events at once (no daily
windows, no look-back), and builds histories with joins instead of window frames and array surgery. The
parity test therefore checks the rules (ownership, look-back, tie-breaks, horizon) and not only the code.
The benchmark times it on the same input as the Spark path.

Both functions take and return DuckDB relations (lazy) so a caller can stream the result to Parquet.
"""

from __future__ import annotations

from datetime import date

import duckdb

from relevance_core.pipeline.config import PairsConfig, SessionConfig
from relevance_core.pipeline.sessionize import SEP, US_PER_DAY, US_PER_MIN, rank_sql, stream_sql, weight_sql


def reference_sessions_sql(events: str, cfg: SessionConfig) -> str:
    """SQL over the relation/view named ``events`` (``EVENT_ARROW_SCHEMA``) → sessions with ``date``."""
    gap = cfg.gap_us
    bot_conds = []
    if cfg.max_events_per_day is not None:
        bot_conds.append(f"sum(c) > {int(cfg.max_events_per_day)}")
    if cfg.max_events_per_minute is not None:
        bot_conds.append(f"max(c) > {int(cfg.max_events_per_minute)}")
    having = " OR ".join(bot_conds) if bot_conds else "false"
    order = "ts_us, rk, item_id, coalesce(device_type, '')"
    return f"""
WITH ev AS (
    SELECT user_id, session_id, item_id, event_type, device_type, epoch_us(timestamp) AS ts_us
    FROM {events}
), ev2 AS (
    SELECT *, {weight_sql("event_type", cfg)} AS weight, {rank_sql("event_type")} AS rk,
           CAST(floor(ts_us / {US_PER_DAY}) AS INTEGER) AS dayn
    FROM ev
), minutes AS (
    SELECT user_id, dayn, floor(ts_us / {US_PER_MIN}) AS minute, count(*) AS c
    FROM ev2 WHERE user_id IS NOT NULL GROUP BY ALL
), bots AS (
    SELECT user_id, dayn, sum(c) AS n_day, max(c) AS max_per_minute FROM minutes GROUP BY ALL HAVING {having}
), clean AS (
    SELECT ev2.* FROM ev2 ANTI JOIN bots USING (user_id, dayn)
), streams AS (
    SELECT *, {stream_sql().replace("AS STRING", "AS VARCHAR")} AS stream FROM clean
), cuts AS (
    SELECT *, CASE WHEN ts_us - lag(ts_us) OVER (PARTITION BY stream ORDER BY {order}) <= {gap} THEN 0 ELSE 1 END
              AS is_new
    FROM streams
), numbered AS (
    SELECT *, sum(is_new) OVER (PARTITION BY stream ORDER BY {order} ROWS UNBOUNDED PRECEDING) AS sidx
    FROM cuts
), sess AS (
    SELECT stream, sidx, any_value(user_id) AS user_id, min(ts_us) AS start_us, max(ts_us) AS end_us,
           list(item_id ORDER BY {order}) AS item_ids,
           list(event_type ORDER BY {order}) AS event_types,
           list(make_timestamp(ts_us) ORDER BY {order}) AS timestamps,
           list(weight ORDER BY {order}) AS weights,
           CAST(count(*) AS INTEGER) AS n_events
    FROM numbered GROUP BY stream, sidx
)
SELECT substr(sha256(stream || '{SEP}' || CAST(start_us AS VARCHAR)), 1, 32) AS session_key, user_id,
       make_timestamp(start_us) AS start_ts, make_timestamp(end_us) AS end_ts,
       item_ids, event_types, timestamps, weights, n_events,
       DATE '1970-01-01' + CAST(floor((end_us + {gap}) / {US_PER_DAY}) AS INTEGER) AS date
FROM sess
"""


def reference_bot_events_sql(events: str, cfg: SessionConfig) -> str:
    """Count of bot events per day (for comparing the quarantine counts)."""
    bot_conds = []
    if cfg.max_events_per_day is not None:
        bot_conds.append(f"sum(c) > {int(cfg.max_events_per_day)}")
    if cfg.max_events_per_minute is not None:
        bot_conds.append(f"max(c) > {int(cfg.max_events_per_minute)}")
    having = " OR ".join(bot_conds) if bot_conds else "false"
    return f"""
WITH m AS (
    SELECT user_id, CAST(floor(epoch_us(timestamp) / {US_PER_DAY}) AS INTEGER) AS dayn,
           floor(epoch_us(timestamp) / {US_PER_MIN}) AS minute, count(*) AS c
    FROM {events} WHERE user_id IS NOT NULL GROUP BY ALL
)
SELECT DATE '1970-01-01' + dayn AS date, user_id, sum(c) AS n
FROM m GROUP BY ALL HAVING {having}
"""


def reference_pairs_sql(
    sessions: str, cfg: PairsConfig, validation_start: date | str, test_start: date | str
) -> str:
    """SQL over ``sessions`` (the contract columns plus ``date``) → training pairs with ``date``.

    History of a target = the L most recent interactions (not impressions) among (a) earlier events of
    its own session and (b) events of the same known user's sessions that *ended before this session
    started*, no older than the horizon before the target. Targets with no history are not pairs.
    """
    L = cfg.history_length
    horizon = cfg.horizon_us
    order = "ts_us, rk, item_id, session_key, pos"
    return f"""
WITH ev AS (
    SELECT session_key, user_id, epoch_us(start_ts) AS s_start, epoch_us(end_ts) AS s_end, date,
           unnest(item_ids) AS item_id, unnest(event_types) AS event_type,
           epoch_us(unnest(timestamps)) AS ts_us, unnest(weights) AS weight,
           unnest(range(len(item_ids))) AS pos
    FROM {sessions}
), inter AS (
    SELECT *, {rank_sql("event_type")} AS rk,
           row_number() OVER (PARTITION BY session_key ORDER BY pos) AS ii
    FROM ev WHERE event_type <> 'impression'
), targets AS (
    SELECT * FROM inter WHERE weight >= {float(cfg.min_target_weight)!r} AND weight > 0
), prefix AS (  -- per session: the L most recent interactions of the user's earlier sessions in the horizon
    SELECT s.session_key AS t_session, h.*
    FROM (SELECT DISTINCT session_key, user_id, s_start FROM targets WHERE user_id IS NOT NULL) s
    JOIN inter h ON h.user_id = s.user_id AND h.s_end < s.s_start AND h.ts_us >= s.s_start - {horizon}
    QUALIFY row_number() OVER (PARTITION BY s.session_key ORDER BY h.ts_us DESC, h.rk DESC, h.item_id DESC,
                               h.session_key DESC, h.pos DESC) <= {L}
), cand AS (
    SELECT t.session_key AS t_key, t.pos AS t_pos, h.ts_us, h.rk, h.item_id, h.session_key, h.pos,
           h.event_type, t.ts_us AS t_ts
    FROM targets t JOIN inter h ON h.session_key = t.session_key AND h.ii BETWEEN t.ii - {L} AND t.ii - 1
    UNION ALL
    SELECT t.session_key, t.pos, p.ts_us, p.rk, p.item_id, p.session_key, p.pos, p.event_type, t.ts_us
    FROM targets t JOIN prefix p ON p.t_session = t.session_key
), hist AS (
    SELECT * FROM cand WHERE t_ts - ts_us <= {horizon}
    QUALIFY row_number() OVER (PARTITION BY t_key, t_pos ORDER BY ts_us DESC, rk DESC, item_id DESC,
                               session_key DESC, pos DESC) <= {L}
), agg AS (
    SELECT t_key, t_pos, list(item_id ORDER BY {order}) AS hist_item_ids,
           list(event_type ORDER BY {order}) AS hist_event_types,
           list(CAST(t_ts - ts_us AS DOUBLE) / 1e6 ORDER BY {order}) AS hist_age_s
    FROM hist GROUP BY t_key, t_pos
)
SELECT t.user_id, t.session_key, a.hist_item_ids, a.hist_event_types, a.hist_age_s,
       t.item_id AS target_item_id, t.event_type AS target_event_type, t.weight AS target_weight,
       make_timestamp(t.ts_us) AS target_ts,
       CASE WHEN CAST(make_timestamp(t.ts_us) AS DATE) >= DATE '{test_start}' THEN 'test'
            WHEN CAST(make_timestamp(t.ts_us) AS DATE) >= DATE '{validation_start}' THEN 'validation'
            ELSE 'train' END AS split,
       t.date
FROM targets t JOIN agg a ON a.t_key = t.session_key AND a.t_pos = t.pos
"""


def reference_pipeline(
    con: duckdb.DuckDBPyConnection,
    events_parquet: str | list[str],
    session_cfg: SessionConfig | None = None,
    pairs_cfg: PairsConfig | None = None,
    last_event_day: str | None = None,
) -> tuple[duckdb.DuckDBPyRelation, duckdb.DuckDBPyRelation]:
    """Sessions and pairs relations over raw_events Parquet files (a glob or a list of paths).

    Views ``ref_events``, ``ref_sessions`` are created on ``con``; the pairs' split cut-offs come from
    ``pairs_cfg`` or, by default, from the newest event day in the input.
    """
    session_cfg = session_cfg or SessionConfig()
    pairs_cfg = pairs_cfg or PairsConfig()
    files = events_parquet if isinstance(events_parquet, list) else [events_parquet]
    file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    # fetchall(): DuckDB 2 refuses new work on a connection whose last result was not consumed.
    con.execute("SET TimeZone = 'UTC'").fetchall()
    con.execute(f"CREATE OR REPLACE VIEW ref_events AS SELECT * FROM read_parquet([{file_list}])").fetchall()
    con.execute(
        f"CREATE OR REPLACE VIEW ref_sessions AS {reference_sessions_sql('ref_events', session_cfg)}"
    ).fetchall()
    if last_event_day is None and pairs_cfg.test_start is None:
        rows = con.execute("SELECT max(CAST(timestamp AS DATE)) FROM ref_events").fetchall()
        last_event_day = str(rows[0][0]) if rows and rows[0][0] is not None else None
    val, test = pairs_cfg.split_dates(last_event_day)
    sessions = con.sql("SELECT * FROM ref_sessions")
    pairs = con.sql(reference_pairs_sql("ref_sessions", pairs_cfg, val, test))
    return sessions, pairs
