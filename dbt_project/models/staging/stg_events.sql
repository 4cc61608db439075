{{ config(materialized='view') }}
-- The lake's events with a UTC day and the event's weight. A view: the events stay in the Parquet lake
-- (no copy in the warehouse); it exists so the event tests have one home and both marts share one definition.
-- Read it only while the lake it points at exists (an S3 lake is staged to a temporary local copy).
select
    user_id,
    session_id,
    item_id,
    event_type,
    "timestamp"                                          as event_ts,
    cast(timezone('UTC', "timestamp") as date)           as event_date,
    device_type,
    {{ event_weight('event_type') }}                     as weight
from {{ source('lake', 'raw_events') }}
