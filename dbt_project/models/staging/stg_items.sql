-- Typed, cleaned catalog. One row per row of the lake's items table: nothing is removed here (duplicates or
-- missing ids included), so the unique / not_null tests catch an upstream defect instead of hiding it.
select
    cast(item_id as varchar)                                                as item_id,
    coalesce({{ clean_text('title') }}, '')                                 as title,
    coalesce(trim(description), '')                                         as description,
    {{ clean_category_path('category_path') }}                              as category_path,
    -- A negative or non-finite price is a feed error: unknown, not a bargain.
    case when isfinite(price) and price >= 0 then cast(price as double) end as price,
    lower({{ clean_text('brand') }})                                        as brand,
    {{ clean_text('location') }}                                            as location,
    replace(lower({{ clean_text('condition') }}), ' ', '_')                 as condition,
    {{ clean_text('image_url') }}                                           as image_url,
    {{ clean_text('seller_id') }}                                           as seller_id,
    -- Item.available defaults to True (relevance_core.schemas): a feed that omits it lists the item.
    coalesce(available, true)                                               as available,
    created_at                                                              as created_at
from {{ source('lake', 'items') }}
