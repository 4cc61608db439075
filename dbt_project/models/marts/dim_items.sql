-- The catalog as the model's feature encoder and the service read it (columns: docs/contracts.md).
--
-- * category_l1..l3: the first three levels of the normalised path ("A > B > C > D" keeps D only in the path).
-- * price_norm: the item's mid-rank percentile of price within its category_l1, in (0, 1): robust to the heavy
--   tail of marketplace prices, and ties (equal prices) get equal values. NULL when the price is unknown.
-- * price_bucket: the decile of price_norm, an int 0..9 (0 = cheapest tenth of that top-level category);
--   NULL when the price is unknown (the encoder maps NULL to its own "unknown" id).
-- Items without a category form one group (category_l1 NULL) for the price statistics.
with items as (
    select
        *,
        string_split(coalesce(category_path, ''), ' > ') as levels
    from {{ ref('stg_items') }}
),

leveled as (
    select
        *,
        nullif(levels[1], '') as category_l1,
        nullif(levels[2], '') as category_l2,
        nullif(levels[3], '') as category_l3
    from items
),

ranked as (
    select
        *,
        -- min rank among equal prices, the number of equal prices, and the size of the category
        rank() over (partition by category_l1 order by price asc nulls last)          as price_rank,
        count(*) over (partition by category_l1, price)                  as price_ties,
        count(price) over (partition by category_l1)                     as priced_in_category
    from leveled
),

normed as (
    select
        *,
        case
            when price is not null
                then ((price_rank - 1) + 0.5 * price_ties) / priced_in_category
        end as price_pct
    from ranked
)

select
    item_id,
    title,
    description,
    category_path,
    category_l1,
    category_l2,
    category_l3,
    price,
    price_pct                                                          as price_norm,
    -- (least() skips NULLs in DuckDB, so the NULL case is spelled out)
    case when price_pct is not null then cast(least(9, floor(price_pct * 10)) as integer) end as price_bucket,
    brand,
    location,
    condition,
    image_url,
    seller_id,
    available,
    created_at
from normed
