{#- Trim, collapse runs of whitespace to one space, and turn the empty string into NULL.
    Catalog feeds differ in spacing; the model's vocabularies must not. -#}
{% macro clean_text(expr) -%}
    nullif(trim(regexp_replace({{ expr }}, '\s+', ' ', 'g')), '')
{%- endmacro %}

{#- A category path normalised to "A > B > C": levels trimmed, empty levels dropped, NULL when nothing is left. -#}
{% macro clean_category_path(expr) -%}
    nullif(
        array_to_string(
            list_filter(
                list_transform(string_split(coalesce({{ expr }}, ''), '>'), lambda x: {{ clean_text('x') }}),
                lambda x: x is not null
            ),
            ' > '
        ),
        ''
    )
{%- endmacro %}
