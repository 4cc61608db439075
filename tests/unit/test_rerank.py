"""Business rules after retrieval: filters, boosts, popularity penalty, diversity (relevance_core.ranking.rules)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from relevance_core.ranking.rules import (
    RULE_CATEGORY,
    RULE_DUPLICATE,
    RULE_LOCATION,
    RULE_MAX_PRICE,
    RULE_QUERY_ITEM,
    RULE_SEEN,
    RULE_UNAVAILABLE,
    Candidates,
    Filters,
    Promotions,
    RerankConfig,
    apply_filters,
    boost_per_code,
    category_prefix_matches,
    diversify_caps,
    diversify_mmr,
    member,
    rerank,
)

NO_DIVERSITY = RerankConfig(popularity_penalty=0.0, max_per_category=0, max_per_seller=0)


def cands(n: int, **over) -> Candidates:
    """n candidates with descending scores, all available, distinct categories and sellers."""
    base = dict(
        rows=np.arange(n, dtype=np.int64),
        scores=np.linspace(1.0, 0.5, n).astype(np.float32),
        available=np.ones(n, bool),
        path_code=np.arange(n, dtype=np.int32),
        diversity_code=np.arange(n, dtype=np.int32),
        seller_code=np.arange(n, dtype=np.int32),
        location_code=np.zeros(n, np.int32),
        price=np.full(n, 10.0),
        popularity=np.zeros(n, np.float32),
        boost=np.zeros(n, np.float32),
    )
    for k, v in over.items():
        base[k] = np.asarray(v, dtype=base[k].dtype)
    return Candidates(**base)


def test_filters_remove_each_rule_and_counts_add_up():
    c = cands(
        8,
        rows=[0, 1, 2, 3, 4, 5, 6, 6],  # last one a duplicate (index + overlay)
        available=[1, 0, 1, 1, 1, 1, 1, 1],
        path_code=[5, 5, 7, 5, 5, 5, 5, 5],
        price=[10, 10, 10, 99, 10, np.nan, 10, 10],
        location_code=[0, 0, 0, 0, 1, 0, 0, 0],
    )
    f = Filters(
        category_codes=np.array([5]),
        max_price=50.0,
        location_code=0,
        exclude_rows=np.array([0]),
        query_rows=np.array([6]),
    )
    keep, counts = apply_filters(c, f)
    assert keep.tolist() == []  # every candidate breaks exactly one rule
    assert counts == {
        RULE_DUPLICATE: 1,
        RULE_UNAVAILABLE: 1,
        RULE_QUERY_ITEM: 1,
        RULE_SEEN: 1,
        RULE_CATEGORY: 1,
        RULE_MAX_PRICE: 2,  # 99 and unknown (NaN) price
        RULE_LOCATION: 1,
    }
    assert sum(counts.values()) == len(c)


def test_no_filters_keep_everything():
    keep, counts = apply_filters(cands(5), Filters())
    assert keep.tolist() == [0, 1, 2, 3, 4] and counts == {}
    assert not Filters().restrictive and Filters(max_price=1.0).restrictive


def test_boost_lifts_and_popularity_penalty_lowers():
    c = cands(3, scores=[0.9, 0.8, 0.7], boost=[0, 0, 0.5])
    res = rerank(c, Filters(), 3, NO_DIVERSITY)
    assert res.chosen.rows.tolist() == [2, 0, 1]
    # popular head item loses its lead under a strong penalty
    c = cands(2, scores=[0.9, 0.85], popularity=[1.0, 0.0])
    assert rerank(c, Filters(), 2, NO_DIVERSITY).chosen.rows.tolist() == [0, 1]
    strong = RerankConfig(popularity_penalty=0.2, max_per_category=0, max_per_seller=0)
    res = rerank(c, Filters(), 2, strong)
    assert res.chosen.rows.tolist() == [1, 0]
    assert res.scores[0] == pytest.approx(0.85) and res.scores[1] == pytest.approx(0.7)


def test_diversity_caps_per_category_and_seller_then_fill():
    # 6 items of category 0 ahead of 2 of category 1; cap 2 per category
    cat = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    seller = np.arange(8)
    order = np.arange(8)
    picked = diversify_caps(order, cat, seller, 4, max_per_category=2, max_per_seller=0)
    assert picked.tolist() == [0, 1, 6, 7]
    # not enough diverse items: the page is filled with capped ones, still in score order
    picked = diversify_caps(order, cat, seller, 6, max_per_category=2, max_per_seller=0)
    assert picked.tolist() == [0, 1, 2, 3, 6, 7]
    # seller cap
    seller = np.array([9, 9, 9, 1, 2, 3, 4, 5])
    picked = diversify_caps(order, np.arange(8), seller, 4, max_per_category=0, max_per_seller=1)
    assert picked.tolist() == [0, 3, 4, 5]


def _caps_reference(order, cat, seller, k, max_cat, max_seller):
    """The greedy rule written plainly (one pass over everything, then the fill)."""
    chosen, skipped, per_cat, per_seller = [], [], {}, {}
    for i in order.tolist():
        c, s = int(cat[i]), int(seller[i])
        if (max_cat > 0 and c >= 0 and per_cat.get(c, 0) >= max_cat) or (
            max_seller > 0 and s >= 0 and per_seller.get(s, 0) >= max_seller
        ):
            skipped.append(i)
        elif len(chosen) < k:
            chosen.append(i)
            per_cat[c] = per_cat.get(c, 0) + 1
            per_seller[s] = per_seller.get(s, 0) + 1
    if len(chosen) < k:
        rank = {i: p for p, i in enumerate(order.tolist())}
        chosen = sorted(chosen + skipped[: k - len(chosen)], key=rank.__getitem__)
    return chosen


def test_diversity_caps_walk_past_a_chunk_of_capped_items():
    # 100 items of one category ahead of the rest: the walk must cross several chunks (4·k codes each)
    cat = np.array([0] * 100 + [1, 2, 3])
    seller = np.arange(103)
    order = np.arange(103)
    assert diversify_caps(order, cat, seller, 3, max_per_category=1, max_per_seller=0).tolist() == [
        0,
        100,
        101,
    ]
    # and the same greedy choice as the plain rule on random rankings, codes (incl. unknown -1) and caps
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 300))
        cat, seller = rng.integers(-1, 6, n), rng.integers(-1, 12, n)
        order = rng.permutation(n)
        k, mc, ms = int(rng.integers(1, 40)), int(rng.integers(0, 4)), int(rng.integers(0, 4))
        got = diversify_caps(order, cat, seller, k, max_per_category=mc, max_per_seller=ms).tolist()
        want = order[:k].tolist() if mc <= 0 and ms <= 0 else _caps_reference(order, cat, seller, k, mc, ms)
        assert got == want


def test_member_is_isin_for_small_and_large_sets():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 1_000, 500)
    for m in (0, 1, 10, 64, 65, 300):
        of = rng.integers(0, 1_000, m)
        np.testing.assert_array_equal(member(values, of), np.isin(values, of))
    assert member(np.zeros(0, np.int64), np.arange(3)).shape == (0,)


def test_rerank_mmr_embeddings_stay_aligned_with_candidates_after_filters():
    # item 0 is unavailable; items 1 and 2 are near-duplicates: MMR must pick 1 then 3, reading the
    # embedding of each candidate (not of its position among the survivors)
    emb = np.array([[0, 1], [1, 0], [0.99, 0.14], [0.6, 0.8]], dtype=np.float32)
    c = cands(4, available=[0, 1, 1, 1], scores=[1.0, 0.9, 0.89, 0.6])
    cfg = RerankConfig(diversity="mmr", mmr_lambda=0.5, popularity_penalty=0)
    res = rerank(c, Filters(), 2, cfg, embeddings=emb)
    assert res.chosen.rows.tolist() == [1, 3]
    assert res.filtered == {RULE_UNAVAILABLE: 1} and res.survivors == 3


def test_rerank_applies_caps_from_config():
    c = cands(6, diversity_code=[0, 0, 0, 1, 1, 2], seller_code=[0, 1, 2, 3, 4, 5])
    cfg = RerankConfig(popularity_penalty=0.0, max_per_category=1, max_per_seller=0)
    res = rerank(c, Filters(), 3, cfg)
    assert res.chosen.rows.tolist() == [0, 3, 5]
    assert res.survivors == 6


def test_mmr_prefers_dissimilar_items():
    emb = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
    scores = np.array([1.0, 0.95, 0.7], dtype=np.float32)
    assert diversify_mmr(scores, emb, 2, lam=1.0).tolist() == [0, 1]  # pure relevance
    assert diversify_mmr(scores, emb, 2, lam=0.5).tolist() == [0, 2]  # near-duplicate pushed out
    c = cands(3, scores=scores)
    res = rerank(
        c, Filters(), 2, RerankConfig(diversity="mmr", mmr_lambda=0.5, popularity_penalty=0), embeddings=emb
    )
    assert res.chosen.rows.tolist() == [0, 2]


def test_rerank_reports_short_page_after_filters():
    c = cands(5, available=[1, 0, 0, 0, 1])
    res = rerank(c, Filters(), 3, NO_DIVERSITY)
    assert res.n == 2 and res.filtered == {RULE_UNAVAILABLE: 3}
    empty = rerank(Candidates.empty(), Filters(), 3, NO_DIVERSITY)
    assert empty.n == 0


def test_category_matching_prefix_and_level_name():
    paths = ["Electronics > Phones > Apple", "Electronics > Laptops", "Home > Phones stands", "Toys > Phones"]
    assert category_prefix_matches(paths, "electronics").tolist() == [0, 1]
    assert category_prefix_matches(paths, "Electronics >  phones").tolist() == [0]
    # a single level name matches that level anywhere in the path, not substrings of other names
    assert category_prefix_matches(paths, "Phones").tolist() == [0, 3]
    assert category_prefix_matches(paths, "Nope").tolist() == []


def test_promotions_most_specific_category_wins_and_merge():
    paths = ["A > B > C", "A > B", "A > X", "Z"]
    b = boost_per_code(paths, {"a": 0.1, "A > B": 0.3})
    assert b.tolist() == pytest.approx([0.3, 0.3, 0.1, 0.0])
    bundle = Promotions(items={"i1": 0.1, "i2": 0.2}, categories={"a": 0.1})
    config = Promotions(items={"i2": 0.5})
    merged = bundle.merged(config)
    assert merged.items == {"i1": 0.1, "i2": 0.5} and merged.categories == {"a": 0.1}
    assert Promotions.load(b'{"items": {"x": 1.0}}').items == {"x": 1.0}
    with pytest.raises(msgspec.ValidationError):
        Promotions.load(b'{"itemz": {}}')


def test_member_agrees_with_isin_for_small_large_and_odd_sets():
    from relevance_core.ranking.rules import member

    rng = np.random.default_rng(3)
    for n_of in (0, 1, 5, 64, 65, 500):
        for upper in (10, 1_000, 1_000_000):
            values = rng.integers(0, upper, 300)
            of = np.concatenate([rng.integers(0, upper, n_of), values[: n_of // 3]])  # duplicates, overlaps
            assert member(values, of).tolist() == np.isin(values, of).tolist()
            # the marks are cleared after each call: a second call with another set is independent
            assert not member(of, np.arange(0)).any()
    negative = np.array([-3, 4, 7])
    assert member(negative, np.arange(-5, 100)).tolist() == [True, True, True]
    assert member(np.array([1.5, 2.0]), np.arange(100.0)).tolist() == [False, True]
