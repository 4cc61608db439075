"""The two towers. Plain ``nn.Module``s, TorchScript-compatible, no Lightning in here.

- :class:`ItemTower` embeds one listing from its content (category levels, brand, price bucket, condition,
  location, hashed title uni/bi-grams) plus, when the item is known from training, its ID embedding. The ID
  embedding is *added* to the content vector, so "unknown item" is simply "no ID term": a never-seen
  listing lands where its content puts it.
- :class:`UserTower` reads the last L interactions: each one is the item tower's vector of that item
  (shared weights: what the model learns about items helps read histories and vice versa), plus an
  event-type embedding and a log-bucketed recency embedding. A causal transformer (default) or mean
  pooling turns them into one vector. There is no user-ID embedding: cold users, anonymous sessions and
  erasure requests need nothing special.
- :class:`TwoTower` holds both plus the catalog's feature tensors (one row per vocabulary item), so
  training and the exported user tower work from item *rows* only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relevance_core.features import ITEM_FEATURES
from relevance_core.model.config import TwoTowerConfig
from relevance_core.schemas import EVENT_TYPE_CODES

#: recency buckets: floor(log2(1 + age_s)) + 1, capped (2^30 s ≈ 34 years); 0 = padding
N_AGE_BUCKETS = 32
N_EVENT_CODES = len(EVENT_TYPE_CODES) + 1


class ItemTower(nn.Module):
    """``content=False`` makes an ID-only tower (the classic item embedding table) for catalogs that carry
    no item features, such as the public session benchmarks: there a content MLP over constant inputs adds
    one shared vector to every item, and after normalisation every item points almost the same way
    (cosine ≈ 0.97 at the start), which in-batch training needs hundreds of steps to escape and which
    makes a full softmax pointlessly dear. The ID table then starts at the usual 1/sqrt(dim) scale.
    Unknown items have no vector (zero) in that mode: there is nothing to place them by."""

    def __init__(
        self, sizes: dict[str, int], dim: int = 64, emb_dim: int = 32, hidden: int = 128, content: bool = True
    ):
        super().__init__()
        self.use_content = content
        self.id_emb = nn.Embedding(sizes["n_rows"], dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.01 if content else 1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        self.category_l1 = nn.Embedding(sizes["category_l1"], emb_dim, padding_idx=0)
        self.category_l2 = nn.Embedding(sizes["category_l2"], emb_dim, padding_idx=0)
        self.category_l3 = nn.Embedding(sizes["category_l3"], emb_dim, padding_idx=0)
        self.brand = nn.Embedding(sizes["brand"], emb_dim, padding_idx=0)
        self.price_bucket = nn.Embedding(sizes["price_bucket"], emb_dim, padding_idx=0)
        self.condition = nn.Embedding(sizes["condition"], emb_dim, padding_idx=0)
        self.location = nn.Embedding(sizes["location"], emb_dim, padding_idx=0)
        self.title = nn.EmbeddingBag(sizes["title_buckets"], emb_dim, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(8 * emb_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # rows whose ID embedding was trained; others (and row 0) are content only
        self.register_buffer("id_known", torch.zeros(sizes["n_rows"], dtype=torch.bool))

    def encode(
        self,
        item_row: Tensor,
        category_l1: Tensor,
        category_l2: Tensor,
        category_l3: Tensor,
        brand: Tensor,
        price_bucket: Tensor,
        condition: Tensor,
        location: Tensor,
        title_tokens: Tensor,
        use_id: Tensor,
    ) -> Tensor:
        """Un-normalised vector; ``use_id`` (bool [B]) says which rows get their ID term."""
        ids = self.id_emb(item_row) * use_id.unsqueeze(-1).to(self.id_emb.weight.dtype)
        if not self.use_content:
            return ids
        content = torch.cat(
            [
                self.category_l1(category_l1),
                self.category_l2(category_l2),
                self.category_l3(category_l3),
                self.brand(brand),
                self.price_bucket(price_bucket),
                self.condition(condition),
                self.location(location),
                self.title(title_tokens),
            ],
            dim=-1,
        )
        out = self.mlp(content)
        return out + ids.to(out.dtype)

    def forward(
        self,
        item_row: Tensor,
        category_l1: Tensor,
        category_l2: Tensor,
        category_l3: Tensor,
        brand: Tensor,
        price_bucket: Tensor,
        condition: Tensor,
        location: Tensor,
        title_tokens: Tensor,
    ) -> Tensor:
        """``FeatureEncoder.encode_items(items)`` → Float[B, D], L2-normalised (the bundle's contract)."""
        item_row = item_row.clamp(0, self.id_known.shape[0] - 1)
        use_id = self.id_known[item_row]
        v = self.encode(
            item_row,
            category_l1,
            category_l2,
            category_l3,
            brand,
            price_bucket,
            condition,
            location,
            title_tokens,
            use_id,
        )
        return F.normalize(v, dim=-1)


class CausalBlock(nn.Module):
    """Pre-LayerNorm transformer block; written out (rather than ``nn.TransformerEncoderLayer``) so eager
    and TorchScript take the same code path (the built-in layer has an inference fast path whose numerics
    differ) and the attention mask semantics stay explicit."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
        self.heads = heads
        self.p = dropout
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        B, T, H = x.shape
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=allowed, dropout_p=p)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, H)))
        return x + self.drop(self.ff(self.ln2(x)))


class UserTower(nn.Module):
    """History item vectors + event types + recency → one L2-normalised user vector."""

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 128,
        max_len: int = 20,
        encoder: str = "transformer",
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.1,
        readout: str = "query",
    ):
        super().__init__()
        if encoder not in ("transformer", "mean"):
            raise ValueError(f"encoder must be 'transformer' or 'mean', not {encoder!r}")
        if readout not in ("query", "query+last", "items"):
            raise ValueError(f"readout must be 'query', 'query+last' or 'items', not {readout!r}")
        self.use_transformer = encoder == "transformer"
        # readouts read the transformer's tokens; mean pooling has none and ignores the setting
        self.add_last = readout == "query+last"
        self.item_readout = readout == "items" and self.use_transformer
        self.max_len = max_len
        self.item_proj = nn.Linear(dim, hidden)
        self.event_emb = nn.Embedding(N_EVENT_CODES, hidden, padding_idx=0)
        self.age_emb = nn.Embedding(N_AGE_BUCKETS + 1, hidden, padding_idx=0)
        # position 0 is the query token; position 1 + k is the k-th most recent interaction
        self.pos_emb = nn.Embedding(max_len + 1, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))
        self.blocks = nn.ModuleList(
            [CausalBlock(hidden, n_heads, dropout) for _ in range(n_layers if self.use_transformer else 0)]
        )
        # every parameter takes part in every step (DDP requires it): mean pooling has no blocks and the
        # transformer no pooling MLP
        self.pool = (
            nn.Identity() if self.use_transformer else nn.Sequential(nn.Linear(hidden, hidden), nn.GELU())
        )
        self.ln_f = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        # readout "items": the query token attends over the history's output tokens and the user vector is
        # that weighted mix of the history's own item vectors (CORE, Hou et al. 2022), so users and items
        # live in one space and an item already in the history scores high (a fifth of DIGINETICA's next
        # clicks are repeats); a residual term, gated from 0, lets it move away from them. Other readouts
        # get parameter-free stand-ins (TorchScript compiles every branch; old checkpoints still load).
        self.ro_q = nn.Linear(hidden, hidden) if self.item_readout else nn.Identity()
        self.ro_k = nn.Linear(hidden, hidden) if self.item_readout else nn.Identity()
        if self.item_readout:
            self.ro_gate = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("ro_gate", torch.zeros(1), persistent=False)
        self.ro_scale = 1.0 / math.sqrt(hidden)
        # Small context embeddings and unit-variance item inputs: with default N(0, 1) embeddings the event,
        # recency and position terms drown the (unit-norm, so ~1/sqrt(D) per entry) item vectors, every
        # user starts out identical and training sits on a log(N) plateau before it finds the items.
        for emb in (self.event_emb, self.age_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.event_emb.weight[0].zero_()
            self.age_emb.weight[0].zero_()
        self.item_scale = math.sqrt(dim)
        self.inv_ln2 = 1.0 / math.log(2.0)
        self.n_age_buckets = N_AGE_BUCKETS

    def forward(self, hist_vecs: Tensor, valid: Tensor, hist_events: Tensor, hist_age_s: Tensor) -> Tensor:
        L = hist_vecs.shape[1]
        if L > self.max_len:  # keep the most recent max_len (inputs are left-padded, recent last)
            hist_vecs = hist_vecs[:, L - self.max_len :]
            valid = valid[:, L - self.max_len :]
            hist_events = hist_events[:, L - self.max_len :]
            hist_age_s = hist_age_s[:, L - self.max_len :]
            L = self.max_len
        age = torch.floor(torch.log1p(hist_age_s.float().clamp(min=0.0)) * self.inv_ln2).long() + 1
        age = age.clamp(1, self.n_age_buckets) * valid.long()
        x = (
            self.item_proj(hist_vecs * self.item_scale)
            + self.event_emb(hist_events * valid.long())
            + self.age_emb(age)
        )
        vf = valid.unsqueeze(-1).to(x.dtype)
        pos = torch.arange(L, 0, -1, device=x.device)  # oldest gets L, most recent gets 1
        x = x + self.pos_emb(pos).unsqueeze(0)
        if not self.use_transformer:
            pooled = (x * vf).sum(1) / vf.sum(1).clamp(min=1.0)
            h = self.pool(pooled + self.query)  # the query vector is a learned bias here
        else:
            B = x.shape[0]
            q = (self.query + self.pos_emb.weight[0]).to(x.dtype).expand(B, 1, -1)
            seq = torch.cat([x * vf, q], dim=1)
            keys = torch.cat([valid, torch.ones((B, 1), dtype=torch.bool, device=x.device)], dim=1)
            T = L + 1
            at = torch.arange(T, device=x.device)
            causal = at.unsqueeze(1) >= at.unsqueeze(0)  # row i may see columns j <= i
            eye = at.unsqueeze(1) == at.unsqueeze(0)
            # a token attends to earlier valid tokens and always to itself (no all-masked row → no NaN)
            allowed = ((causal.unsqueeze(0) & keys.unsqueeze(1)) | eye.unsqueeze(0)).unsqueeze(1)
            for block in self.blocks:
                seq = block(seq, allowed)
            h = seq[:, -1]
            if self.item_readout:
                normed = self.ln_f(seq)  # per token: the history's tokens and the query token at once
                tokens, query = normed[:, :L], normed[:, -1]
                logits = (self.ro_k(tokens) @ self.ro_q(query).unsqueeze(-1)).squeeze(-1)
                logits = (logits.float() * self.ro_scale).masked_fill(~valid, -1e9)  # fp32: bf16-safe
                weights = torch.softmax(logits, dim=-1).to(hist_vecs.dtype) * valid.to(hist_vecs.dtype)
                mix = (weights.unsqueeze(-1) * hist_vecs).sum(1)
                return F.normalize(mix + self.ro_gate * self.out(query), dim=-1)
            if self.add_last:
                # the most recent interaction's own output token (SASRec's readout): its residual stream
                # still carries that item's vector, which the query token only sees through attention
                h = h + seq[:, -2] * valid[:, -1:].to(h.dtype)
        return F.normalize(self.out(self.ln_f(h)), dim=-1)


class TwoTower(nn.Module):
    """Both towers and the catalog's encoded features (buffers ``cat_<feature>``, one row per item row)."""

    def __init__(self, config: TwoTowerConfig, sizes: dict[str, int]):
        super().__init__()
        self.sizes = dict(sizes)
        # ``item_content=None`` is resolved from the catalog before training (``train.resolve_content``);
        # a model built directly from an unresolved config gets the content tower
        self.item_tower = ItemTower(
            sizes,
            dim=config.dim,
            emb_dim=config.emb_dim,
            hidden=config.hidden,
            content=config.item_content is not False,
        )
        self.user_tower = UserTower(
            dim=config.dim,
            hidden=config.hidden,
            max_len=config.history_length,
            encoder=config.encoder,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            dropout=config.dropout,
            readout=config.readout,
        )
        n = sizes["n_rows"]
        for name in ITEM_FEATURES:
            shape = (n, sizes["max_title_tokens"]) if name == "title_tokens" else (n,)
            self.register_buffer(f"cat_{name}", torch.zeros(shape, dtype=torch.long))

    @property
    def n_rows(self) -> int:
        return int(self.sizes["n_rows"])

    def set_catalog(self, catalog: dict[str, Tensor], id_known: Tensor) -> None:
        for name in ITEM_FEATURES:
            t = catalog[name]
            buf = getattr(self, f"cat_{name}")
            if t.shape != buf.shape:
                raise ValueError(
                    f"catalog feature {name} has shape {tuple(t.shape)}, expected {tuple(buf.shape)}"
                )
            buf.copy_(t)
        self.item_tower.id_known.copy_(id_known)

    def catalog_features(self, rows: Tensor) -> dict[str, Tensor]:
        return {name: getattr(self, f"cat_{name}")[rows] for name in ITEM_FEATURES}

    def item_vectors(self, rows: Tensor, id_dropout: float = 0.0) -> Tensor:
        """Normalised vectors of catalog rows; during training a random ``id_dropout`` share of them hide
        their ID embedding so the content path learns to stand alone (cold start)."""
        feats = self.catalog_features(rows)
        use_id = self.item_tower.id_known[rows]
        if id_dropout > 0.0:
            use_id = use_id & (torch.rand(rows.shape, device=rows.device) >= id_dropout)
        return F.normalize(self.item_tower.encode(**feats, use_id=use_id), dim=-1)

    def all_item_vectors(self, chunk: int = 8192) -> Tensor:
        """Vectors of every row (row 0, padding, included so row index = column index)."""
        device = self.cat_item_row.device
        parts = [
            self.item_vectors(torch.arange(s, min(s + chunk, self.n_rows), device=device))
            for s in range(0, self.n_rows, chunk)
        ]
        return torch.cat(parts, dim=0)

    def user_from_item_vectors(
        self, item_vecs: Tensor, hist_rows: Tensor, hist_events: Tensor, hist_age_s: Tensor
    ) -> Tensor:
        """User vectors given per-row item vectors ``item_vecs`` [n_rows, D] (row = index)."""
        hist_rows = hist_rows.clamp(0, self.n_rows - 1)
        return self.user_tower(item_vecs[hist_rows], hist_rows > 0, hist_events, hist_age_s)

    def user_vectors(self, hist_rows: Tensor, hist_events: Tensor, hist_age_s: Tensor) -> Tensor:
        """User vectors computing only the history's items (the eager twin of the exported user tower)."""
        hist_rows = hist_rows.clamp(0, self.n_rows - 1)
        uniq, inv = torch.unique(hist_rows, return_inverse=True)
        vecs = self.item_vectors(uniq)[inv]
        return self.user_tower(vecs, hist_rows > 0, hist_events, hist_age_s)

    def forward(self, hist_rows: Tensor, hist_events: Tensor, hist_age_s: Tensor) -> Tensor:
        return self.user_vectors(hist_rows, hist_events, hist_age_s)
