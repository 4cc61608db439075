-- A shorter window can never hold more than a longer one (windows are nested, all counted back from one day).
{%- set windows = var('popularity_windows') | sort %}
select item_id
from {{ ref('item_popularity') }}
where false
{%- for i in range(windows | length - 1) %}
   or events_{{ windows[i] }}d > events_{{ windows[i + 1] }}d
   or score_{{ windows[i] }}d > score_{{ windows[i + 1] }}d
{%- endfor %}
