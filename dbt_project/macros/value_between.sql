{#- Generic test: every non-NULL value lies in [min_value, max_value] (either bound optional).
    Written here because dbt packages (dbt_utils) cannot be fetched from the hub on these machines. -#}
{% test value_between(model, column_name, min_value=none, max_value=none) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (
    false
    {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
    {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %}
  )
{% endtest %}
