-- One row per UTC day of events: volume by type, distinct users / sessions / items, anonymous events and
-- events whose item is not in the catalog (item_popularity leaves those out; this keeps them visible).
-- `sessions` counts distinct non-null session_id values only: events without one are sessionised later by
-- the Spark `sessions` asset (inactivity gap), which the warehouse does not repeat.
{%- set types = var('event_weights').keys() | list %}
with events as (
    select * from {{ ref('stg_events') }}
),

catalog as (
    select distinct item_id from {{ ref('dim_items') }}
)

select
    e.event_date,
    count(*)                                                    as events,
    {%- for t in types %}
    count(*) filter (where e.event_type = '{{ t }}')            as {{ t }}_events,
    {%- endfor %}
    sum(e.weight)                                               as weighted_events,
    count(distinct e.user_id)                                   as users,
    count(*) filter (where e.user_id is null)                   as anonymous_events,
    count(distinct e.session_id)                                as sessions,
    count(distinct e.item_id)                                   as items,
    count(*) filter (where c.item_id is null)                   as unknown_item_events
from events e
left join catalog c on c.item_id = e.item_id
group by e.event_date
order by e.event_date
