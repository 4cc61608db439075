-- Per day, the counts by event type add up to the day's events (an unknown type would break this first).
{%- set types = var('event_weights').keys() | list %}
select event_date
from {{ ref('daily_event_stats') }}
where events <> 0{% for t in types %} + {{ t }}_events{% endfor %}
