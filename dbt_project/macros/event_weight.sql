{#- The weight of an event type, from the `event_weights` var (DESIGN.md §2: one table of weights for labels,
    evaluation gains, serving and popularity). Unknown types weigh 0. -#}
{% macro event_weight(event_type_expr) -%}
    case {{ event_type_expr }}
    {%- for name, weight in var('event_weights').items() %}
        when '{{ name }}' then {{ weight }}::double
    {%- endfor %}
        else 0.0::double
    end
{%- endmacro %}
