"""Streaming ``training_pairs`` into the model (docs/contracts.md ``lake/training_pairs/date=D/``).

The data set is read with ``pyarrow.dataset`` one record batch at a time and never held in memory whole:

- shuffling is two-level: the order of Parquet fragments is shuffled per epoch, and examples are shuffled
  inside a bounded buffer (``shuffle_buffer`` examples) — the usual streaming compromise;
- encoding is vectorised on Arrow arrays (``pyarrow.compute.index_in`` against the item vocabulary) and
  yields whole batches (``DataLoader(batch_size=None)``), so per-example Python work is nil;
- sharding for DDP / DataLoader workers: every shard reads the stream, shuffles each buffer identically and
  takes its rows of every global batch; every training shard stops after the same number of full batches,
  because DDP ranks with unequal batch counts deadlock in the gradient all-reduce.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from relevance_core.features import FeatureEncoder
from relevance_core.model.config import TwoTowerConfig
from relevance_core.schemas import EVENT_TYPES

PAIR_COLUMNS = ("hist_item_ids", "hist_event_types", "hist_age_s", "target_item_id", "target_weight")
_EVENT_VOCAB = pa.array(list(EVENT_TYPES), type=pa.string())

PairsSource = str | Path | Sequence[str | Path] | pa.Table | ds.Dataset


def open_pairs(source: PairsSource) -> ds.Dataset:
    """A directory (``training_pairs/`` with ``date=*/`` partitions, or one partition), Parquet file(s),
    an Arrow table or a dataset → a ``pyarrow.dataset.Dataset``. Hidden/underscore files (the store's
    temporary files) are ignored by pyarrow's defaults. The ``date=`` directory names are not parsed into a
    column: the model does not need them, and a writer that also keeps ``date`` inside the files would
    otherwise clash with the partition field."""
    if isinstance(source, ds.Dataset):
        return source
    if isinstance(source, pa.Table):
        return ds.dataset(source)
    if isinstance(source, (str, Path)):
        return ds.dataset(str(source), format="parquet")
    return ds.dataset([str(s) for s in source], format="parquet")


def split_filter(split: str | None) -> ds.Expression | None:
    return None if split is None else (ds.field("split") == split)


def count_rows(dataset: ds.Dataset, split: str | None) -> int:
    return dataset.count_rows(filter=split_filter(split))


def scan_item_counts(
    dataset: ds.Dataset, split: str | None = "train", batch_size: int = 65_536
) -> tuple[Counter, Counter, int]:
    """One streaming pass: (target counts, all-interaction counts incl. histories, examples)."""
    targets: Counter = Counter()
    everything: Counter = Counter()
    n = 0
    for rb in dataset.to_batches(
        columns=["hist_item_ids", "target_item_id"], filter=split_filter(split), batch_size=batch_size
    ):
        n += rb.num_rows
        for col, counters in (
            (rb.column("target_item_id"), (targets, everything)),
            (pc.list_flatten(rb.column("hist_item_ids")), (everything,)),
        ):
            vc = pc.value_counts(col)
            keys = vc.field("values").to_pylist()
            cnts = vc.field("counts").to_pylist()
            for c in counters:
                c.update(dict(zip(keys, cnts, strict=True)))
    targets.pop(None, None)
    everything.pop(None, None)
    return targets, everything, n


def encode_pairs(rb: pa.RecordBatch | pa.Table, encoder: FeatureEncoder, L: int) -> dict[str, np.ndarray]:
    """Arrow pairs → numpy arrays: hist_rows/hist_events Long[n, L] and hist_age_s Float[n, L] left-padded
    (most recent last, the same layout as ``FeatureEncoder.encode_histories``), target_rows Long[n],
    weights Float[n]."""
    n = rb.num_rows
    hist = rb.column("hist_item_ids")
    if isinstance(hist, pa.ChunkedArray):
        hist = hist.combine_chunks()
    offsets = hist.offsets.to_numpy()
    start, end = offsets[:-1], offsets[1:]
    lengths = end - start
    flat_items = pc.list_flatten(hist)
    flat_rows = encoder.arrow_rows(flat_items)
    flat_events = pc.index_in(
        pc.list_flatten(rb.column("hist_event_types")).cast(pa.string()), value_set=_EVENT_VOCAB
    )
    flat_events = flat_events.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    flat_age = pc.list_flatten(rb.column("hist_age_s")).cast(pa.float64()).fill_null(0.0)
    flat_age = flat_age.to_numpy(zero_copy_only=False).astype(np.float32)
    row_of = np.repeat(np.arange(n), lengths)
    # position counted from the end of each list: 0 = most recent; keep the last L
    from_end = np.repeat(end - offsets[0], lengths) - 1 - np.arange(len(row_of))
    keep = from_end < L
    cols = L - 1 - from_end[keep]
    rows_idx = row_of[keep]
    hist_rows = np.zeros((n, L), dtype=np.int64)
    hist_events = np.zeros((n, L), dtype=np.int64)
    hist_age = np.zeros((n, L), dtype=np.float32)
    hist_rows[rows_idx, cols] = flat_rows[keep]
    hist_events[rows_idx, cols] = flat_events[keep]
    hist_age[rows_idx, cols] = np.maximum(flat_age[keep], 0.0)
    target_rows = encoder.arrow_rows(rb.column("target_item_id"))
    if "target_weight" in rb.schema.names:
        w = rb.column("target_weight").cast(pa.float64()).fill_null(1.0).to_numpy(zero_copy_only=False)
    else:
        w = np.ones(n)
    return {
        "hist_rows": hist_rows,
        "hist_events": hist_events,
        "hist_age_s": hist_age,
        "target_rows": target_rows,
        "weights": w.astype(np.float32),
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(d: dict[str, np.ndarray], idx: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in d.items()}


def to_batch(d: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(np.ascontiguousarray(d["hist_rows"])),
        torch.from_numpy(np.ascontiguousarray(d["hist_events"])),
        torch.from_numpy(np.ascontiguousarray(d["hist_age_s"])),
        torch.from_numpy(np.ascontiguousarray(d["target_rows"])),
        torch.from_numpy(np.ascontiguousarray(d["weights"])),
    )


def _shard() -> tuple[int, int]:
    """(shard index, number of shards) over DDP ranks × DataLoader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    info = torch.utils.data.get_worker_info()
    if info is not None:
        return rank * info.num_workers + info.id, world * info.num_workers
    return rank, world


class PairsIterable(IterableDataset):
    """Batches of encoded pairs from one split, streamed; see the module docstring."""

    def __init__(
        self,
        source: PairsSource,
        encoder: FeatureEncoder,
        *,
        split: str | None,
        batch_size: int,
        history_length: int,
        shuffle: bool,
        seed: int = 0,
        shuffle_buffer: int = 65_536,
        drop_last: bool = False,
        drop_unknown_targets: bool = False,
        max_examples: int | None = None,
        read_batch_size: int = 16_384,
    ):
        super().__init__()
        self.source = source
        self.encoder = encoder
        self.split = split
        self.batch_size = batch_size
        self.L = history_length
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.drop_last = drop_last
        self.drop_unknown_targets = drop_unknown_targets
        self.max_examples = max_examples
        self.read_batch_size = read_batch_size
        self.epoch = 0
        self._n_rows: int | None = None
        self._dataset: ds.Dataset | None = None

    def __getstate__(self) -> dict[str, Any]:  # pyarrow datasets are re-opened in spawned workers
        state = dict(self.__dict__)
        state["_dataset"] = None
        return state

    @property
    def dataset(self) -> ds.Dataset:
        if self._dataset is None:
            self._dataset = open_pairs(self.source)
        return self._dataset

    @property
    def n_rows(self) -> int:
        if self._n_rows is None:
            n = count_rows(self.dataset, self.split)
            self._n_rows = min(n, self.max_examples) if self.max_examples else n
        return self._n_rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_shard(self, shards: int) -> int:
        per = self.n_rows // shards
        return per // self.batch_size if self.drop_last else math.ceil(per / self.batch_size)

    def __len__(self) -> int:
        rank_world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank_world = torch.distributed.get_world_size()
        return self.batches_per_shard(rank_world)

    def _examples(self, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        fragments = list(self.dataset.get_fragments(filter=split_filter(self.split)))
        if self.shuffle:
            fragments = [fragments[i] for i in rng.permutation(len(fragments))]
        cols = [c for c in PAIR_COLUMNS if c in self.dataset.schema.names]
        for frag in fragments:
            for rb in frag.to_batches(
                columns=cols, filter=split_filter(self.split), batch_size=self.read_batch_size
            ):
                if rb.num_rows:
                    yield encode_pairs(rb, self.encoder, self.L)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # Every shard reads the whole stream and shuffles each buffer with the same generator, then takes
        # its slice of every global batch (rows shard, shard + shards, ...). So the union of the shards'
        # batch k is one uniformly shuffled global batch. (Sharding *before* shuffling would pair each
        # example with its neighbour in the file — the same user's next event — on the other rank, and
        # those near-duplicates become false in-batch negatives under DDP.)
        shard, shards = _shard()
        rng = np.random.default_rng([self.seed, self.epoch])
        limit = self.batches_per_shard(shards) if self.drop_last else None
        gb = self.batch_size * shards
        max_global = self.max_examples
        seen_global = 0
        emitted = 0
        buf: list[dict[str, np.ndarray]] = []
        buffered = 0

        def drain(final: bool) -> Iterator[tuple[torch.Tensor, ...]]:
            nonlocal buf, buffered, emitted
            if not buf:
                return
            d = _concat(buf)
            if self.shuffle:
                d = _take(d, rng.permutation(len(d["target_rows"])))
            n_full = len(d["target_rows"]) // gb
            for b in range(n_full):
                if limit is not None and emitted >= limit:
                    break
                yield to_batch(_take(d, slice(b * gb + shard, (b + 1) * gb, shards)))
                emitted += 1
            rest = _take(d, slice(n_full * gb, None))
            buf, buffered = ([rest], len(rest["target_rows"])) if len(rest["target_rows"]) else ([], 0)
            if final and buffered and not self.drop_last:
                mine = _take(rest, slice(shard, None, shards))
                if len(mine["target_rows"]):
                    yield to_batch(mine)
                    emitted += 1
                buf, buffered = [], 0

        for d in self._examples(rng):
            n = len(d["target_rows"])
            if max_global is not None:
                if seen_global >= max_global:
                    break
                if seen_global + n > max_global:
                    d = _take(d, slice(0, max_global - seen_global))
                    n = max_global - seen_global
            seen_global += n
            if self.drop_unknown_targets:
                d = _take(d, d["target_rows"] > 0)
            if len(d["target_rows"]) == 0:
                continue
            buf.append(d)
            buffered += len(d["target_rows"])
            if buffered >= self.shuffle_buffer:
                yield from drain(final=False)
            if limit is not None and emitted >= limit:
                return
        yield from drain(final=True)


class PairsDataModule(pl.LightningDataModule):
    """Train and validation splits of ``training_pairs`` as streaming loaders of whole batches."""

    def __init__(
        self,
        source: PairsSource,
        encoder: FeatureEncoder,
        config: TwoTowerConfig,
        *,
        train_split: str = "train",
        val_split: str | None = "validation",
    ):
        super().__init__()
        self.source = source
        self.encoder = encoder
        self.config = config
        self.train_split = train_split
        self.val_split = val_split
        self.train_ds: PairsIterable | None = None
        self.val_ds: PairsIterable | None = None

    def setup(self, stage: str | None = None) -> None:
        c = self.config
        if self.train_ds is None:
            self.train_ds = PairsIterable(
                self.source,
                self.encoder,
                split=self.train_split,
                batch_size=c.batch_size,
                history_length=c.history_length,
                shuffle=True,
                seed=c.seed,
                shuffle_buffer=c.shuffle_buffer,
                drop_last=True,
                drop_unknown_targets=True,
            )
        if self.val_ds is None and self.val_split is not None:
            self.val_ds = PairsIterable(
                self.source,
                self.encoder,
                split=self.val_split,
                batch_size=max(c.batch_size, 1024),
                history_length=c.history_length,
                shuffle=False,
                max_examples=c.max_val_examples,
            )

    def _loader(self, dataset: PairsIterable) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.config.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def set_epoch(self, epoch: int) -> None:
        if self.train_ds is not None:
            self.train_ds.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        return self._loader(self.train_ds)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_ds is None:
            return []
        return self._loader(self.val_ds)
