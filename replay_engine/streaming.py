"""Large replay corpora: tokenize shard by shard in background processes, never the whole corpus
in one process's memory.

Generic pre-training data comes as many files (C4, FineWeb and the like ship as hundreds of
JSONL or Parquet shards). `prepare_sharded` gives each shard to a pool of worker processes; a
worker reads, tokenizes and packs that one shard into its own ordinary cache entry
(`data.prepare_dataset([shard])`: memory-mapped .npy arrays, content-addressed, atomic), then
forgets it. The parent only ever holds memory maps, so its memory stays flat however large the
corpus, and a worker's memory is bounded by the largest shard, not the corpus. A rerun, or a
second job on the same shards, tokenizes nothing; adding a shard tokenizes only that shard.

The shards are then presented as one dataset whose rows are the shards' rows in file order
(`ConcatRows`), whatever order the workers finished in. So the generic row numbering, and with it
the mixture's seeded generic order, is a pure function of the seed and the files' contents.

Why the whole corpus is tokenized before step 1, not alongside training: the plan's exact batch
composition and the generic order (a seeded permutation of all G rows, fresh each pass) need G,
the number of generic rows. The alternative we considered, a shard-major order (a seeded
permutation of the shards, then of the rows within each shard as it becomes ready), would let
training start after the first shard, but it mixes far less (consecutive batches replay the same
shard) and changes the order of every existing run. Tokenizing runs at roughly a million tokens
per second per core, far ahead of training a model worth replaying for, and the worker's
`prepare_job` does it before the job is queued, so the GPU never waits on it.

Held-out documents are chosen per shard (val_fraction of each shard's documents, by the seed),
which for a corpus of many shards is the same sampling as holding out across the whole corpus.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .data import (
    DataFormatError,
    PackedDataset,
    PackedSplit,
    _cache_key,
    _is_entry,
    _load_entry,
    prepare_dataset,
    tokenizer_fingerprint,
)

# Generic file sets at least this large (bytes, all files together) are prepared shard by shard.
STREAM_MIN_BYTES = int(os.environ.get("REPLAYFT_STREAM_MIN_BYTES", 256 * 2**20))


class ConcatRows:
    """Several (n_i, seq_len) arrays read as one (sum n_i, seq_len) array, without copying.

    Supports what the trainer does with a split: len(), integer-array and slice indexing."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index, dtype=np.int64)
        scalar = index.ndim == 0
        index = np.atleast_1d(index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        part = np.searchsorted(self.offsets, index, side="right") - 1
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        for p in np.unique(part):
            chosen = part == p
            out[chosen] = self.parts[p][index[chosen] - self.offsets[p]]
        return out[0] if scalar else out

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def _concat(splits: list[PackedSplit]) -> PackedSplit:
    return PackedSplit(
        tokens=ConcatRows([s.tokens for s in splits]),
        loss_mask=ConcatRows([s.loss_mask for s in splits]),
        positions=ConcatRows([s.positions for s in splits]),
        n_documents=sum(s.n_documents for s in splits),
        n_tokens=sum(s.n_tokens for s in splits),
        n_trainable_tokens=sum(s.n_trainable_tokens for s in splits),
    )


def _worker_init() -> None:
    # one process per core already; the tokenizer's own thread pool would oversubscribe them
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _prepare_shard(args: tuple) -> tuple[str, bool]:
    shard, tokenizer, kwargs = args
    entry = prepare_dataset([shard], tokenizer=tokenizer, **kwargs)
    return entry.cache_key, entry.from_cache  # the arrays stay on disk; only names travel


def prepare_sharded(
    paths: list[str],
    *,
    tokenizer,
    seq_len: int,
    cache_dir: str | Path,
    val_paths: list[str] = (),
    val_fraction: float = 0.05,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> PackedDataset:
    """`prepare_dataset` for many shards: one cache entry per shard, built in `workers`
    background processes (default: one per core, at most one per shard), read as one dataset.
    With `val_paths`, the validation split is those files (taken from the first shard's entry).
    `progress` gets the share of shards ready (cached ones count from the start)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    kwargs = dict(
        seq_len=seq_len,
        cache_dir=str(cache_dir),
        val_paths=list(val_paths),
        val_fraction=val_fraction,
        seed=seed,
    )
    for path in [*paths, *val_paths]:
        if not Path(path).is_file():
            raise DataFormatError(path, None, "no such file")
    # Shards already in the cache need no worker: hashing a file is all a hit costs.
    fingerprint = tokenizer_fingerprint(tokenizer)
    done: dict[int, tuple[str, bool]] = {}
    for i, shard in enumerate(paths):
        key = _cache_key(
            [Path(shard)],
            [Path(v) for v in val_paths],
            fingerprint,
            int(seq_len),
            float(val_fraction),
            int(seed),
            1.0,  # subset_fraction: a generic corpus is always used whole
        )
        if _is_entry(Path(cache_dir) / key):
            done[i] = (key, True)
    todo = [i for i in range(len(paths)) if i not in done]
    jobs = [(str(paths[i]), tokenizer, kwargs) for i in todo]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    built: list[tuple[str, bool]] = []

    def collect(results) -> None:  # in shard order, as each is ready
        for result in results:
            built.append(result)
            if progress is not None:
                progress((len(done) + len(built)) / len(paths))

    if progress is not None and done and todo:
        progress(len(done) / len(paths))
    if workers == 1:
        collect(map(_prepare_shard, jobs))
    else:
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_worker_init
        ) as pool:
            collect(pool.map(_prepare_shard, jobs))
    if progress is not None and not todo:
        progress(1.0)
    done.update(zip(todo, built, strict=True))
    order = [done[i] for i in range(len(paths))]  # file order, not completion order
    shards = [_load_entry(Path(cache_dir) / key, key, hit) for key, hit in order]
    formats = {s.format for s in shards}
    return PackedDataset(
        train=_concat([s.train for s in shards]),
        val=shards[0].val if val_paths else _concat([s.val for s in shards]),
        format=formats.pop() if len(formats) == 1 else "mixed",
        cache_key="+".join(key for key, _ in order),
        from_cache=all(s.from_cache for s in shards),
    )


def should_stream(paths: list[str]) -> bool:
    """Many files adding up to a large corpus: prepare them shard by shard."""
    sizes = [Path(p).stat().st_size for p in paths if Path(p).is_file()]
    return len(paths) > 1 and sum(sizes) >= STREAM_MIN_BYTES
