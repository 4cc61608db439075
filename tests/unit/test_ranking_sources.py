"""Candidate sources of the ranking stage: the co-visitation table (DuckDB over training-pair Parquet), its
CSR form, item statistics and attributes, popular-by-category (relevance_core.ranking.covisit / sources)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relevance_core.pipeline.pairs import PAIRS_ARROW_SCHEMA
from relevance_core.ranking.covisit import COVISIT_SCHEMA, Covisitation, CovisitConfig, build_covisit_table
from relevance_core.ranking.sources import (
    ITEM_STATS_SCHEMA,
    ItemAttributes,
    PopularByCategory,
    build_item_stats,
)
from relevance_core.schemas import ITEM_ARROW_SCHEMA

DAY0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def pair(hist, target, split="train", weight=1.0, day=0.0):
    return {
        "user_id": None,
        "session_key": "s",
        "hist_item_ids": list(hist),
        "hist_event_types": ["view"] * len(hist),
        "hist_age_s": [10.0 * (len(hist) - i) for i in range(len(hist))],
        "target_item_id": target,
        "target_event_type": "view",
        "target_weight": float(weight),
        "target_ts": DAY0 + timedelta(days=day),
        "split": split,
    }


def write_pairs(path, rows):
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_ARROW_SCHEMA), path)
    return path


#: train pairs and the table they give (forward 1/d, backward 0.5/d, summed; self-transitions skipped)
TRAIN_PAIRS = [
    pair(["a", "b", "c"], "d"),  # a→d 1/3, b→d 1/2, c→d 1; d→a 1/6, d→b 1/4, d→c 1/2
    pair(["c"], "d"),  # c→d 1; d→c 1/2
    pair(["a", "d"], "d"),  # a→d 1/2, d→a 1/4 (d→d is no transition)
    pair(["b"], "e"),  # b→e 1; e→b 1/2
]
EXPECTED = {
    ("a", "d"): 1 / 3 + 1 / 2,
    ("b", "d"): 1 / 2,
    ("b", "e"): 1.0,
    ("c", "d"): 2.0,
    ("d", "a"): 1 / 6 + 1 / 4,
    ("d", "b"): 1 / 4,
    ("d", "c"): 1.0,
    ("e", "b"): 1 / 2,
}
#: rows of other splits that would add edges (and change scores) if they were read
OTHER_SPLITS = [
    pair(["a"], "e", split="validation", weight=10.0),
    pair(["c", "b"], "d", split="validation"),
    pair(["e"], "a", split="test"),
]


def as_dict(table: pa.Table) -> dict[tuple[str, str], float]:
    d = table.to_pydict()
    return {(s, t): v for s, t, v in zip(d["src_item_id"], d["dst_item_id"], d["score"], strict=True)}


@pytest.fixture()
def pair_files(tmp_path):
    # two files: the build reads them all (train rows split across both, plus the other splits)
    return [
        write_pairs(tmp_path / "p0.parquet", TRAIN_PAIRS[:2] + OTHER_SPLITS[:1]),
        write_pairs(tmp_path / "p1.parquet", TRAIN_PAIRS[2:] + OTHER_SPLITS[1:]),
    ]


# -- build_covisit_table -----------------------------------------------------------------------------


def test_covisit_scores_are_summed_forward_and_backward_weights_of_train_pairs(pair_files):
    table = build_covisit_table(pair_files)  # the defaults (top_m 50, backward 0.5, 2GB)
    assert table.schema == COVISIT_SCHEMA
    got = as_dict(table)
    assert set(got) == set(EXPECTED)  # no validation/test edge (a→e, e→a), no self-loop (d→d)
    for key, want in EXPECTED.items():
        assert got[key] == pytest.approx(want, rel=1e-6), key


def test_covisit_ignores_validation_and_test_rows(tmp_path, pair_files):
    only_train = [write_pairs(tmp_path / "train.parquet", TRAIN_PAIRS)]
    cfg = CovisitConfig(memory_limit=None)
    assert as_dict(build_covisit_table(pair_files, cfg)) == as_dict(build_covisit_table(only_train, cfg))
    only_other = [write_pairs(tmp_path / "other.parquet", OTHER_SPLITS)]
    assert build_covisit_table(only_other, cfg).num_rows == 0


def test_covisit_backward_weight_scales_the_came_before_edges(pair_files):
    got = as_dict(build_covisit_table(pair_files, CovisitConfig(backward_weight=2.0, memory_limit=None)))
    assert got[("d", "c")] == pytest.approx(4.0)  # 2/1 + 2/1 (the 0.5 default gives 1.0)
    assert got[("c", "d")] == pytest.approx(2.0)  # forward edges do not change
    none = as_dict(build_covisit_table(pair_files, CovisitConfig(backward_weight=0.0, memory_limit=None)))
    assert set(none) == {("a", "d"), ("b", "d"), ("b", "e"), ("c", "d")}


def test_covisit_top_m_keeps_the_best_neighbours_per_source(pair_files):
    one = as_dict(build_covisit_table(pair_files, CovisitConfig(top_m=1, memory_limit=None)))
    assert set(one) == {("a", "d"), ("b", "e"), ("c", "d"), ("d", "c"), ("e", "b")}
    two = as_dict(build_covisit_table(pair_files, CovisitConfig(top_m=2, memory_limit=None)))
    assert {k for k in two if k[0] == "d"} == {("d", "c"), ("d", "a")}  # 1.0 and 5/12 beat 1/4
    assert two[("d", "a")] == pytest.approx(EXPECTED[("d", "a")])  # truncation does not change scores


def test_covisit_without_files_is_an_empty_table():
    table = build_covisit_table([])
    assert table.num_rows == 0 and table.schema == COVISIT_SCHEMA


# -- Covisitation (CSR over item rows) ---------------------------------------------------------------


def expected_table() -> pa.Table:
    src, dst = zip(*EXPECTED, strict=True)
    return pa.table(
        {"src_item_id": list(src), "dst_item_id": list(dst), "score": list(EXPECTED.values())},
        schema=COVISIT_SCHEMA,
    )


ITEM_IDS = ["d", "a", "b", "zz"]  # rows 0..3; c and e are gone from the catalog, zz has no edges


def test_from_table_maps_ids_to_rows_drops_unknown_ids_and_sorts_rows_best_first():
    cv = Covisitation.from_table(expected_table(), ITEM_IDS)
    assert cv.n_items == 4
    # kept: a→d, b→d, d→a, d→b (every edge touching c or e is dropped)
    assert cv.n_edges == 4
    n, s = cv.row(0)  # d
    assert n.tolist() == [1, 2]  # a (5/12) before b (1/4)
    np.testing.assert_allclose(s, [5 / 12, 1 / 4], rtol=1e-6)
    n, s = cv.row(1)  # a
    assert n.tolist() == [0] and s[0] == pytest.approx(5 / 6)
    n, s = cv.row(2)  # b: b→e dropped, only b→d left
    assert n.tolist() == [0] and s[0] == pytest.approx(0.5)
    for r in (3, -1, 4, 100):  # no edges, unknown (-1), past the end
        n, s = cv.row(r)
        assert len(n) == 0 and len(s) == 0
    assert cv.indptr.tolist() == [0, 2, 3, 4, 4]


def test_from_empty_table_is_empty_over_the_items():
    cv = Covisitation.from_table(COVISIT_SCHEMA.empty_table(), ITEM_IDS)
    assert cv.n_items == 4 and cv.n_edges == 0
    assert cv.aggregate(np.array([0, 1]), np.array([1.0, 1.0]))[0].tolist() == []


def test_aggregate_sums_weight_times_score_over_history_rows():
    cv = Covisitation.from_table(expected_table(), ITEM_IDS)
    # history a, b, d with weights 1/3, 1/2, 1 (and an unknown row, which contributes nothing)
    rows, scores = cv.aggregate(np.array([1, -1, 2, 0]), np.array([0.25, 5.0, 0.5, 1.0]))
    got = dict(zip(rows.tolist(), scores.tolist(), strict=True))
    assert got == pytest.approx(
        {
            0: 0.25 * 5 / 6 + 0.5 * 0.5,  # d: from a and from b
            1: 1.0 * 5 / 12,  # a: from d
            2: 1.0 * 1 / 4,  # b: from d
        }
    )
    assert scores.dtype == np.float32
    # the same history row twice counts twice
    rows, scores = cv.aggregate(np.array([1, 1]), np.array([1.0, 2.0]))
    assert rows.tolist() == [0] and scores[0] == pytest.approx(3 * 5 / 6)


def test_covisitation_save_load_round_trip(tmp_path):
    cv = Covisitation.from_table(expected_table(), ITEM_IDS)
    assert Covisitation.load(tmp_path) is None  # no table: no source, not an error
    cv.save(tmp_path)
    back = Covisitation.load(tmp_path)
    for name in ("indptr", "neighbors", "scores"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cv, name))
        assert getattr(back, name).dtype == getattr(cv, name).dtype
    assert back.row(0)[0].tolist() == [1, 2]
    # a table cut short is refused
    np.save(tmp_path / "covisit_scores.npy", cv.scores[:-1])
    with pytest.raises(ValueError):
        Covisitation.load(tmp_path)


# -- build_item_stats --------------------------------------------------------------------------------


def test_item_stats_count_train_targets_overall_and_in_the_recent_window(tmp_path):
    rows = [
        pair(["x"], "d", weight=1.0, day=0),  # old
        pair(["x"], "d", weight=2.0, day=10),  # the newest train target: the window is (day 3, day 10]
        pair(["x"], "e", weight=4.0, day=9),
        pair(["x"], "b", weight=1.0, day=3),  # exactly 7 days before the newest: not recent
        pair(["x"], "b", weight=0.5, day=3.5),
        # later validation/test targets: neither counted nor moving the window
        pair(["x"], "d", split="validation", weight=8.0, day=20),
        pair(["x"], "f", split="test", weight=8.0, day=21),
    ]
    stats = build_item_stats([write_pairs(tmp_path / "p.parquet", rows)])
    assert stats.schema == ITEM_STATS_SCHEMA
    assert stats.to_pydict() == {
        "item_id": ["b", "d", "e"],
        "interactions": [1.5, 3.0, 4.0],
        "recent_interactions": [0.5, 2.0, 4.0],
    }
    short = build_item_stats([tmp_path / "p.parquet"], recent_days=1).to_pydict()
    assert short["recent_interactions"] == [0.0, 2.0, 0.0]  # day 9 is not within 1 day of day 10
    assert build_item_stats([]).num_rows == 0


# -- ItemAttributes ----------------------------------------------------------------------------------


def catalog(rows: list[dict]) -> pa.Table:
    full = [{"title": "t", **r} for r in rows]
    return pa.Table.from_pylist(full, schema=ITEM_ARROW_SCHEMA)


def test_item_attributes_from_tables():
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    items = catalog(
        [
            {"item_id": "other", "category_path": "Toys", "brand": "Zed", "price": 1.0},  # not a row
            {"item_id": "i2", "category_path": "Home > Garden", "brand": "Acme", "price": 20.0},
            {
                "item_id": "i0",
                "category_path": "Electronics > Phones",
                "brand": "Acme",
                "price": 100.0,
                "created_at": created,
            },
            {"item_id": "i1", "category_path": "Electronics > Laptops", "brand": "  ", "price": None},
        ]
    )
    stats = pa.table(
        {
            "item_id": ["i1", "zz", "i0"],
            "interactions": [3.0, 9.0, 5.0],
            "recent_interactions": [1.0, 9.0, 0.0],
        },
        schema=ITEM_STATS_SCHEMA,
    )
    a = ItemAttributes.from_tables(["i0", "i1", "i2", "i3"], items, stats)  # i3: not in the catalog
    assert len(a) == 4
    assert a.has_content
    # codes: the same string → the same code, unknown (missing item, blank brand) → -1
    assert a.top_code[0] == a.top_code[1] >= 0 and a.top_code[2] >= 0 and a.top_code[2] != a.top_code[0]
    assert len({*a.path_code[:3].tolist()}) == 3 and min(a.path_code[:3]) >= 0
    assert a.path_code[3] == -1 and a.top_code[3] == -1
    assert a.brand_code[0] == a.brand_code[2] >= 0
    assert a.brand_code[1] == -1 and a.brand_code[3] == -1
    # prices: NaN where unknown (null price, item not in the catalog)
    assert a.price[0] == 100.0 and a.price[2] == 20.0
    assert math.isnan(a.price[1]) and math.isnan(a.price[3])
    # listing time in epoch seconds, NaN unknown
    assert a.created_s[0] == pytest.approx(created.timestamp())
    assert np.isnan(a.created_s[1:]).all()
    # statistics aligned to the rows, 0 where an item has none
    assert a.interactions.tolist() == [5.0, 3.0, 0.0, 0.0]
    assert a.recent.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert a.interactions.dtype == np.float32


def test_item_attributes_of_an_id_only_catalog_have_no_content():
    items = pa.table({"item_id": ["i0", "i1", "i2"]})
    a = ItemAttributes.from_tables(["i0", "i1", "i2"], items, None)
    assert not a.has_content
    assert (a.path_code == -1).all() and (a.top_code == -1).all() and (a.brand_code == -1).all()
    assert np.isnan(a.price).all() and np.isnan(a.created_s).all()
    assert (a.interactions == 0).all() and (a.recent == 0).all()


# -- PopularByCategory -------------------------------------------------------------------------------


def attrs_with(top_code, recent, interactions) -> ItemAttributes:
    n = len(top_code)
    return ItemAttributes(
        path_code=np.asarray(top_code, np.int32),
        top_code=np.asarray(top_code, np.int32),
        brand_code=np.full(n, -1, np.int32),
        price=np.full(n, np.nan),
        created_s=np.full(n, np.nan),
        interactions=np.asarray(interactions, np.float32),
        recent=np.asarray(recent, np.float32),
    )


def test_popular_by_category_ranks_recent_first_per_top_level_category():
    #          row:  0  1  2  3  4   5  6  7
    top = [0, 0, 1, 0, 1, -1, 1, 0]
    recent = [1, 5, 2, 5, 0, 9, 0, 0]
    alltime = [1, 5, 2, 9, 3, 9, 0, 0]  # row 3 beats row 1 on all-time; rows 6, 7 never touched
    pop = PopularByCategory.build(attrs_with(top, recent, alltime), top_k=2)
    assert pop.by_top[0].tolist() == [3, 1]  # truncated to top_k: row 0 is out
    assert pop.by_top[1].tolist() == [2, 4]  # row 4 only through its all-time count; row 6 has none
    assert set(pop.by_top) == {0, 1}  # the unknown category (-1) is no category
    assert pop.overall.tolist() == [5, 3]  # overall includes items of unknown category
    assert pop.for_category(1).tolist() == [2, 4]
    assert pop.for_category(7).tolist() == [5, 3]  # unknown category → overall
    assert pop.for_category(-1).tolist() == [5, 3]


def test_popular_without_any_interactions_is_empty():
    pop = PopularByCategory.build(attrs_with([0, 1], [0, 0], [0, 0]))
    assert pop.by_top == {} and pop.for_category(0).tolist() == []
