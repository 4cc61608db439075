{#- Popularity of every catalog item over trailing windows, for the service's popularity fallback, its
    popularity penalty and the cold-start rules.

    * One row per item of dim_items, zeros for items nobody touched (a new listing is "not popular", not absent).
    * Events for item_ids missing from the catalog are NOT counted here (nothing could be served for them);
      daily_event_stats.unknown_item_events counts them per day so the gap stays visible.
    * Windows are whole UTC days counted back from the newest event date, that day included: the
      `w`-day window holds event_date > as_of_date - w. Relative to the data, not the wall clock, so a
      rebuild over the same lake gives the same numbers.
    * score_{w}d = sum of event weights (var event_weights; impressions weigh 0) in the window.
    * trending_score = (short rate + prior) / (long rate + prior), rates in weighted events per day over the
      short and long windows. The long window is cut to the days the data actually spans so a young lake does
      not look like everything is trending. > 1: hotter now than usual; 1: steady or no signal. -#}
{%- set windows = var('popularity_windows') -%}
{%- set types = var('event_weights').keys() | list -%}
{%- set short = var('trending_short_days') -%}
{%- set long = var('trending_long_days') -%}
{%- set prior = var('trending_prior') -%}

with events as (
    select * from {{ ref('stg_events') }}
),

bounds as (
    select
        max(event_date)                    as as_of_date,
        max(event_date) - min(event_date) + 1 as span_days
    from events
),

windowed as (
    select
        e.item_id,
        e.event_type,
        e.user_id,
        e.weight,
        e.event_ts,
        b.as_of_date - e.event_date as age_days
    from events e
    cross join bounds b
),

agg as (
    select
        item_id,
        {%- for w in windows %}
        count(*) filter (where age_days < {{ w }})                                    as events_{{ w }}d,
        {%- for t in types %}
        count(*) filter (where age_days < {{ w }} and event_type = '{{ t }}')          as {{ t }}_{{ w }}d,
        {%- endfor %}
        coalesce(sum(weight) filter (where age_days < {{ w }}), 0.0)                  as score_{{ w }}d,
        {%- endfor %}
        coalesce(sum(weight) filter (where age_days < {{ short }}), 0.0)              as trending_short_score,
        coalesce(sum(weight) filter (where age_days < {{ long }}), 0.0)               as trending_long_score,
        count(distinct user_id) filter (where age_days < {{ windows | max }})         as users_{{ windows | max }}d,
        count(*)                                                                      as events_all,
        max(event_ts)                                                                 as last_event_at
    from windowed
    group by item_id
)

select
    i.item_id,
    i.category_l1,
    b.as_of_date,
    {%- for w in windows %}
    coalesce(a.events_{{ w }}d, 0)                    as events_{{ w }}d,
    {%- for t in types %}
    coalesce(a.{{ t }}_{{ w }}d, 0)                   as {{ t }}_{{ w }}d,
    {%- endfor %}
    coalesce(a.score_{{ w }}d, 0.0)                   as score_{{ w }}d,
    {%- endfor %}
    coalesce(a.users_{{ windows | max }}d, 0)         as users_{{ windows | max }}d,
    coalesce(a.events_all, 0)                         as events_all,
    a.last_event_at,
    -- the headline number: weighted interactions over the longest window
    coalesce(a.score_{{ windows | max }}d, 0.0)       as popularity_score,
    (coalesce(a.trending_short_score, 0.0) / {{ short }} + {{ prior }})
        / (coalesce(a.trending_long_score, 0.0) / least({{ long }}, coalesce(b.span_days, 1)) + {{ prior }})
                                                      as trending_score
from {{ ref('dim_items') }} i
cross join bounds b
left join agg a on a.item_id = i.item_id
