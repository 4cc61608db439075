"""Feature encoding, the towers' invariants, and the TorchScript export's parity with the eager model."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from relevance_core.features import ITEM_FEATURES, FeatureEncoder, category_levels
from relevance_core.model.config import TwoTowerConfig
from relevance_core.model.data import encode_pairs
from relevance_core.model.export import check_parity, export_towers, load_towers
from relevance_core.model.onnx_encoder import OnnxUserEncoder
from relevance_core.model.towers import ItemTower, TwoTower

ITEMS = pd.DataFrame(
    {
        "item_id": [f"i{i}" for i in range(12)],
        "title": [f"Phone model {i} blue" if i < 6 else f"Sofa {i} leather" for i in range(12)],
        "category_path": ["Electronics > Phones > Apple"] * 6 + ["Home > Furniture > Sofas"] * 6,
        "price": [100.0 + 50 * i for i in range(12)],
        "brand": [" Apple ", "apple", "Samsung", "samsung", "Apple", None] + ["Ikea"] * 6,
        "location": ["Berlin"] * 12,
        "condition": ["new", "used"] * 6,
    }
)
SMALL = TwoTowerConfig(dim=16, emb_dim=8, hidden=16, n_layers=1, title_buckets=512, max_title_tokens=8)


def _encoder(counts=None) -> FeatureEncoder:
    return FeatureEncoder.fit(
        ITEMS, counts or {f"i{i}": 3 for i in range(8)}, title_buckets=512, max_title_tokens=8
    )


def _model(encoder: FeatureEncoder, cfg: TwoTowerConfig = SMALL, seed: int = 0) -> TwoTower:
    torch.manual_seed(seed)
    m = TwoTower(cfg, encoder.sizes())
    m.set_catalog(encoder.encode_catalog(ITEMS), encoder.id_known_tensor())
    return m.eval()


def test_encode_items_keys_are_the_item_towers_forward_arguments():
    enc = _encoder()
    feats = enc.encode_items(ITEMS)
    assert tuple(feats) == ITEM_FEATURES
    params = list(inspect.signature(ItemTower.forward).parameters)[1:]
    assert params == list(ITEM_FEATURES)
    assert feats["title_tokens"].shape == (12, 8)
    assert feats["item_row"].tolist() == [enc.item_index[f"i{i}"] for i in range(12)]
    assert enc.id_known[enc.item_index["i9"]] == 0 and enc.id_known[enc.item_index["i1"]] == 1
    # brand is canonicalised: " Apple " and "apple" are one value
    assert feats["brand"][0] == feats["brand"][1] != 0
    assert feats["brand"][5] == 0  # unknown
    assert ((feats["price_bucket"] >= 1) & (feats["price_bucket"] <= 10)).all()


def test_derived_columns_or_canonical_only_encode_the_same():
    enc = _encoder()
    derived = ITEMS.copy()
    levels = [category_levels(p) for p in derived["category_path"]]
    derived["category_l1"] = [lv[0].split(" > ")[-1] for lv in levels]
    derived["category_l2"] = [lv[1].split(" > ")[-1] for lv in levels]
    derived["category_l3"] = [lv[2].split(" > ")[-1] for lv in levels]
    derived["price_bucket"] = 3
    only_derived = derived.drop(columns=["category_path"])
    a = enc.encode_items(ITEMS)
    for other in (pa.Table.from_pandas(derived), only_derived):
        b = enc.encode_items(other)
        for k in ITEM_FEATURES:
            assert torch.equal(a[k], b[k]), k
    fitted_on_derived = FeatureEncoder.fit(only_derived, None, title_buckets=512, max_title_tokens=8)
    assert fitted_on_derived.vocabs["category_l2"] == enc.vocabs["category_l2"]


def test_unknown_item_is_content_only_and_json_round_trips():
    enc = _encoder()
    new = ITEMS.iloc[[0]].assign(item_id="brand-new")
    feats = enc.encode_items(new)
    assert feats["item_row"].item() == 0
    m = _model(enc)
    # an unknown item's vector does not depend on the id row it *would* have had
    content_only = m.item_tower(**feats)
    as_cold_row = dict(feats, item_row=torch.tensor([enc.item_index["i9"]]))  # i9: no ID embedding
    assert torch.allclose(content_only, m.item_tower(**as_cold_row), atol=1e-6)
    warm = dict(feats, item_row=torch.tensor([enc.item_index["i0"]]))
    assert not torch.allclose(content_only, m.item_tower(**warm), atol=1e-4)
    again = FeatureEncoder.from_json(enc.to_json())
    assert again == enc
    for k, v in again.encode_items(ITEMS).items():
        assert torch.equal(v, enc.encode_items(ITEMS)[k])


def test_training_and_serving_encode_histories_identically():
    enc = _encoder()
    hists = [
        [("i1", "view", 100.0), ("i2", "purchase", 50.0), ("zzz", "click", 10.0)],
        [(f"i{i}", "view", float(30 - i)) for i in range(8)],  # longer than L: keeps the last L
        [],
    ]
    L = 5
    rows, events, ages = enc.encode_histories(hists, L)
    assert rows[0].tolist() == [0, 0, enc.item_index["i1"], enc.item_index["i2"], 0]
    assert rows[1].tolist() == [enc.item_index[f"i{i}"] for i in range(3, 8)]
    assert rows[2].tolist() == [0] * L
    table = pa.table(
        {
            "hist_item_ids": [[h[0] for h in x] for x in hists],
            "hist_event_types": [[h[1] for h in x] for x in hists],
            "hist_age_s": [[h[2] for h in x] for x in hists],
            "target_item_id": ["i1", "i2", "nope"],
            "target_weight": [1.0, 10.0, None],
        }
    )
    d = encode_pairs(table.to_batches()[0], enc, L)
    assert (d["hist_rows"] == rows.numpy()).all()
    assert (d["hist_events"] == events.numpy()).all()
    assert (d["hist_age_s"] == ages.numpy()).all()
    assert d["target_rows"].tolist() == [enc.item_index["i1"], enc.item_index["i2"], 0]
    assert d["weights"].tolist() == [1.0, 10.0, 1.0]


@pytest.mark.parametrize("encoder", ["transformer", "mean", "transformer+last"])
def test_user_tower_ignores_padding_and_handles_empty_histories(encoder):
    enc = _encoder()
    encoder, _, last = encoder.partition("+")
    cfg = SMALL.replace(encoder=encoder, history_length=10, readout="query+last" if last else "query")
    m = _model(enc, cfg)
    hist = [[("i1", "view", 100.0), ("i7", "click", 5.0)], []]
    short = m.user_vectors(*enc.encode_histories(hist, 4))
    long = m.user_vectors(*enc.encode_histories(hist, 10))
    assert torch.allclose(short, long, atol=1e-5)
    assert torch.isfinite(short).all()
    assert torch.allclose(short.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the transformer reads order (same interactions, other order → other vector); mean pooling does not
    other = m.user_vectors(*enc.encode_histories([[("i7", "click", 5.0), ("i1", "view", 100.0)]], 4))
    assert torch.allclose(other[0], short[0], atol=1e-5) == (encoder == "mean")


def test_exported_towers_match_eager(tmp_path):
    enc = _encoder()
    for encoder, readout in (
        ("transformer", "query"),
        ("mean", "query"),
        ("transformer", "query+last"),
        ("transformer", "items"),
    ):
        m = _model(enc, SMALL.replace(encoder=encoder, readout=readout))
        if readout == "items":
            with torch.no_grad():
                m.user_tower.ro_gate.fill_(0.5)  # exercise both terms, not only the fresh mix
        paths = export_towers(m, tmp_path / f"{encoder}-{readout}")
        assert check_parity(m, paths["user_tower"], paths["item_tower"], atol=1e-5) <= 1e-5
        user, item = load_towers(tmp_path / f"{encoder}-{readout}")
        feats = enc.encode_items(ITEMS)
        assert torch.allclose(item(**feats), m.item_tower(**feats), atol=1e-5)
        hist = enc.encode_histories([[("i1", "view", 10.0), ("i3", "add_to_cart", 2.0)]], 20)
        out = user(*hist)
        assert out.shape == (1, SMALL.dim)
        assert torch.allclose(out, m.user_vectors(*hist), atol=1e-5)
        # the ONNX twin of the encoder, over the TorchScript file's own item table, gives the same vector
        onnx_user = OnnxUserEncoder(paths["user_encoder"], user.item_table.numpy())
        got = onnx_user(*(t.numpy() for t in hist))
        assert np.abs(got - out.detach().numpy()).max() <= 1e-5


def test_parity_check_catches_a_broken_export(tmp_path):
    from relevance_core.model.export import ExportParityError

    enc = _encoder()
    m = _model(enc)
    paths = export_towers(m, tmp_path)
    with torch.no_grad():
        m.item_tower.brand.weight.add_(1.0)  # the eager model moves on; the files no longer match it
    with pytest.raises(ExportParityError):
        check_parity(m, paths["user_tower"], paths["item_tower"])


def test_id_only_item_tower_ignores_content_and_exports(tmp_path):
    """``item_content=False``: an item's vector is its normalised ID row alone, so two items with identical
    content still start apart (the symmetry a constant-content catalog otherwise starts from), content
    changes nothing, an unknown item has no vector, and the TorchScript export keeps parity."""
    enc = _encoder()
    m = _model(enc, SMALL.replace(item_content=False))
    feats = enc.encode_items(ITEMS)
    v = m.item_tower(**feats)
    known = torch.as_tensor(enc.id_known_tensor())[feats["item_row"]]
    expected = torch.nn.functional.normalize(m.item_tower.id_emb(feats["item_row"]), dim=-1)
    assert torch.allclose(v[known], expected[known], atol=1e-6)
    assert torch.count_nonzero(v[~known]) == 0
    # i0 and i1 share category/price bucket ranges; with content on they start near each other
    assert abs(float(v[0] @ v[1])) < 0.9
    other = dict(
        feats, brand=torch.zeros_like(feats["brand"]), title_tokens=torch.zeros_like(feats["title_tokens"])
    )
    assert torch.equal(m.item_tower(**other), v)
    paths = export_towers(m, tmp_path)
    assert check_parity(m, paths["user_tower"], paths["item_tower"], atol=1e-5) <= 1e-5


def test_query_plus_last_readout_reads_the_most_recent_item_token():
    """Same weights, two readouts: they differ exactly when there is a most recent item to add."""
    enc = _encoder()
    torch.manual_seed(0)
    a = TwoTower(SMALL.replace(readout="query"), enc.sizes()).eval()
    b = TwoTower(SMALL.replace(readout="query+last"), enc.sizes()).eval()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.set_catalog(enc.encode_catalog(ITEMS), enc.id_known_tensor())
    hist = enc.encode_histories([[("i1", "view", 100.0), ("i7", "click", 5.0)], []], 6)
    ua, ub = a.user_vectors(*hist), b.user_vectors(*hist)
    assert not torch.allclose(ua[0], ub[0], atol=1e-4)
    assert torch.allclose(ua[1], ub[1], atol=1e-6)  # empty history: nothing to add
    with pytest.raises(ValueError, match="readout"):
        TwoTower(SMALL.replace(readout="last"), enc.sizes())


def test_items_readout_mixes_the_historys_own_item_vectors():
    """Readout "items" with its residual gate still at 0 (as trained from): the user vector is a convex
    mix of the history's item vectors, so one item alone gives exactly that item's vector and an empty
    history gives a finite (zero) vector, not NaN; opening the gate moves the user off the items."""
    enc = _encoder()
    m = _model(enc, SMALL.replace(readout="items")).eval()
    items = m.all_item_vectors()
    one = enc.encode_histories([[("i3", "view", 10.0)]], 6)
    row = int(one[0][0, -1])
    with torch.no_grad():
        u = m.user_vectors(*one)[0]
        assert torch.allclose(u, items[row], atol=1e-5)
        two = enc.encode_histories([[("i1", "view", 100.0), ("i7", "click", 5.0)], []], 6)
        u2 = m.user_vectors(*two)
        assert torch.isfinite(u2).all() and float(u2[1].norm()) == 0.0
        r1, r7 = int(two[0][0, -2]), int(two[0][0, -1])
        # inside the cone of the two item vectors: no other direction is mixed in
        basis = torch.stack([items[r1], items[r7]])
        coef = torch.linalg.lstsq(basis.T, u2[0].unsqueeze(-1)).solution.squeeze(-1)
        assert torch.allclose(basis.T @ coef, u2[0], atol=1e-5) and (coef > 0).all()
        m.user_tower.ro_gate.fill_(1.0)
        assert not torch.allclose(m.user_vectors(*one)[0], items[row], atol=1e-3)
    # mean pooling has no tokens to attend over: the readout setting does not apply to it
    mean = _model(enc, SMALL.replace(readout="items", encoder="mean"))
    assert not mean.user_tower.item_readout and "ro_gate" not in dict(mean.named_parameters())
