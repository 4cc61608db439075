"""Hyper-parameters of the two-tower model and its training.

One plain dataclass, so the Dagster asset's ``dg.Config``, the CLI, the benchmarks and the GPU check all
describe a run the same way and the exact config is stored next to the weights (``config.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TwoTowerConfig:
    # -- shape of the towers -------------------------------------------------------------------------
    #: output dimension of both towers (the FAISS index dimension)
    dim: int = 64
    #: width of each categorical / id / title embedding inside the item tower
    emb_dim: int = 32
    #: hidden width of the item tower's MLP and of the user tower's sequence encoder
    hidden: int = 64
    #: last L interactions the user tower reads (the Spark job keeps at most this many)
    history_length: int = 20
    #: "transformer" (causal; reads order, which the generator's next-category structure needs) or "mean".
    #: Measured so far: a tie on the order-free synthetic "tiny" preset (HR@20 0.765 vs 0.767).
    encoder: str = "transformer"
    #: transformer readout: the appended query token ("query"); the query token plus the most recent
    #: interaction's output token ("query+last"); or ("items") the query token's attention over the history
    #: mixing the history's own item vectors, plus a gated residual, so users live in the items' space.
    #: "items" measured best: synthetic "small" HR@20 64.4 vs 61.8 ("query"); DIGINETICA validation
    #: 48.35 / 17.16 vs 46.52 / 16.28 ("query+last"), docs/session_benchmark.md
    readout: str = "items"
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1
    #: hashed title uni+bi-gram buckets (EmbeddingBag rows) and tokens kept per title
    title_buckets: int = 1 << 14
    max_title_tokens: int = 24
    #: probability of hiding a training item's ID embedding, so that the content path alone learns to place
    #: items: this is what makes a never-seen listing's content-only embedding useful (cold start)
    id_dropout: float = 0.25
    #: False: an ID-only item tower, for catalogs without item features (see ``ItemTower``); items never
    #: seen in training then get no vector, so cold start needs content. None (the default): decided by
    #: the catalog (``features.catalog_has_content``); without content, ``id_dropout`` is 0 as well
    item_content: bool | None = None
    #: an item needs this many training interactions to get its own ID embedding row trained
    min_item_count: int = 1

    # -- loss ------------------------------------------------------------------------------------------
    #: "sampled" (in-batch + optional uniform negatives, logQ-corrected), "full" (softmax over the whole
    #: catalog) or "auto" (full when the catalog has at most ``full_softmax_max_items`` items)
    softmax: str = "sampled"
    full_softmax_max_items: int = 2_000
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    #: extra negatives drawn uniformly from the catalog per batch (mixed negative sampling, against
    #: popularity bias); 0 = in-batch only
    uniform_negatives: int = 0
    temperature: float = 0.05
    learn_temperature: bool = False
    #: weight each example by its target event's weight (purchase 10 … view 1)
    use_event_weights: bool = True

    # -- optimisation ----------------------------------------------------------------------------------
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_epochs: int = 10
    #: early stopping: epochs without a better validation recall@K before training stops
    patience: int = 2
    #: K of the validation recall that drives early stopping and checkpointing (against ALL items)
    recall_k: int = 20
    #: cap on validation examples scored each epoch (the metric is exact over all items; this bounds time)
    max_val_examples: int = 20_000
    #: streaming shuffle: examples held in memory and shuffled together (the data set never is)
    shuffle_buffer: int = 65_536
    #: fraction of training batches per epoch (None = all); used by tests and quick runs
    limit_train_batches: float | int | None = None

    # -- runtime -----------------------------------------------------------------------------------------
    seed: int = 42
    #: deterministic algorithms; on CUDA "warn" is used instead so a non-deterministic kernel is not fatal
    deterministic: bool = True
    accelerator: str = "auto"
    devices: int | str = "auto"
    #: "auto" → DDP (spawned workers) when several devices are used, else single device
    strategy: str = "auto"
    #: None → "bf16-mixed" on CUDA, "32-true" elsewhere
    precision: str | None = None
    #: intra-op CPU threads for training (None = leave torch's default)
    num_threads: int | None = None
    num_workers: int = 0
    progress_bar: bool = True
    log_every_n_steps: int = 50
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown TwoTowerConfig fields: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TwoTowerConfig:
        return dataclasses.replace(self, **changes)
