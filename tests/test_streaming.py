"""Large replay corpora: shard-by-shard tokenizing in background processes keeps memory flat,
and the result is deterministic and identical however many workers built it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from replay_engine.models import load_tokenizer
from replay_engine.streaming import ConcatRows, prepare_sharded

TESTS = Path(__file__).resolve().parent
WORDS = "replay keeps the generic skills while the model learns the target task well".split()


def write_shards(folder, n_shards, docs_per_shard, seed=0):
    """Synthetic JSONL text shards: random word salad, ~1 KB per document."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_shards):
        path = folder / f"shard-{i:03d}.jsonl"
        with open(path, "w") as f:
            for _ in range(docs_per_shard):
                words = rng.choice(WORDS, size=170)
                f.write(json.dumps({"text": " ".join(words)}) + "\n")
        paths.append(str(path))
    return paths


# A fresh interpreter per run (tests/memory_probe.py samples the peak); workers are fresh
# processes: their ru_maxrss is theirs alone.
MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from memory_probe import peak_growth_kib
    from replay_engine.models import load_tokenizer
    from replay_engine.data import prepare_dataset
    from replay_engine.streaming import prepare_sharded
    mode, cache, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    tok = load_tokenizer("replayft/llama-tiny")
    tok(["warm up the tokenizer"] * 8)
    with peak_growth_kib() as memory:
        if mode == "sharded":
            ds = prepare_sharded(paths, tokenizer=tok, seq_len=256, cache_dir=cache, workers=2)
        else:
            ds = prepare_dataset(paths, tokenizer=tok, seq_len=256, cache_dir=cache)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({**memory, "workers_kib": workers, "rows": len(ds.train)}))
    """
)


def measure(mode, cache, paths):
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(cache), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])},
    )
    assert out.returncode == 0, f"{mode} preparation failed:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_stays_flat_as_the_corpus_grows(tmp_path):
    small = write_shards(tmp_path / "small", n_shards=2, docs_per_shard=2000)  # ~4 MB
    large = write_shards(tmp_path / "large", n_shards=6, docs_per_shard=2000, seed=1)  # ~12 MB

    in_one = measure("whole", tmp_path / "c1", large)
    sharded_small = measure("sharded", tmp_path / "c2", small)
    sharded_large = measure("sharded", tmp_path / "c3", large)
    assert sharded_large["rows"] > 0 and in_one["rows"] > 0

    # Reading the corpus in one process grows with it (text, token lists, arrays: ~10x its
    # size); the sharded parent holds only memory maps: 3x the corpus costs it ~nothing more.
    assert in_one["growth_kib"] > 40 * 1024
    assert sharded_large["growth_kib"] < in_one["growth_kib"] / 5
    assert sharded_large["growth_kib"] < sharded_small["growth_kib"] + 20 * 1024
    # a worker holds one shard at a time: its peak does not grow with the number of shards
    assert sharded_large["workers_kib"] < sharded_small["workers_kib"] * 1.5


@pytest.mark.slow
def test_sharded_corpus_is_deterministic_and_in_file_order(tmp_path):
    paths = write_shards(tmp_path / "data", n_shards=3, docs_per_shard=200)
    tok = load_tokenizer("replayft/llama-tiny")
    kwargs = dict(tokenizer=tok, seq_len=64, seed=3)
    serial = prepare_sharded(paths, cache_dir=tmp_path / "a", workers=1, **kwargs)
    pooled = prepare_sharded(paths, cache_dir=tmp_path / "b", workers=3, **kwargs)
    again = prepare_sharded(paths, cache_dir=tmp_path / "b", workers=3, **kwargs)
    assert not pooled.from_cache and again.from_cache
    for ds in (pooled, again):
        np.testing.assert_array_equal(ds.train.tokens[:], serial.train.tokens[:])
        np.testing.assert_array_equal(ds.val.loss_mask[:], serial.val.loss_mask[:])
        np.testing.assert_array_equal(ds.train.positions[:], serial.train.positions[:])
    # rows are the shards' rows in file order
    from replay_engine.data import prepare_dataset

    first = prepare_dataset([paths[0]], cache_dir=tmp_path / "a", **kwargs)
    n0 = len(first.train)
    np.testing.assert_array_equal(serial.train.tokens[:n0], first.train.tokens[:])
    np.testing.assert_array_equal(serial.train.positions[:n0], first.train.positions[:])
    rows = np.array([n0 + 1, 0, n0 - 1])
    np.testing.assert_array_equal(serial.train.tokens[rows][1], first.train.tokens[0])


def test_concat_rows_indexing():
    a, b = np.arange(6).reshape(3, 2), np.arange(6, 10).reshape(2, 2)
    rows = ConcatRows([a, b])
    whole = np.concatenate([a, b])
    assert len(rows) == 5 and rows.shape == (5, 2)
    np.testing.assert_array_equal(rows[np.array([4, 0, 3, 2])], whole[[4, 0, 3, 2]])
    np.testing.assert_array_equal(rows[1:4], whole[1:4])
    np.testing.assert_array_equal(rows[3], whole[3])
    with pytest.raises(IndexError):
        rows[np.array([5])]


@pytest.mark.slow
def test_trainer_replays_a_sharded_corpus_deterministically(
    tmp_path, monkeypatch, gsm8k_file, cache_dir
):
    from replay_engine import streaming
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import prepare, train

    monkeypatch.setattr(streaming, "STREAM_MIN_BYTES", 0)  # these few KB count as "large"
    shards = write_shards(tmp_path / "generic", n_shards=3, docs_per_shard=60)
    spec = parse_spec(
        {
            "model": "replayft/llama-tiny",
            "training_file": str(gsm8k_file(tmp_path / "t.jsonl", n=20)),
            "replay": {"dataset": shards, "fraction": 0.5},
            "n_epochs": 0.2,
            "batch_size": 4,
            "seq_len": 64,
            "eval_sequences": 4,
            "device": "cpu",
            "cache_dir": str(cache_dir),
        }
    )
    data = prepare(spec)
    assert isinstance(data.generic.train.tokens, ConcatRows)
    assert data.plan.generic_sequences == len(data.generic.train) > 0
    runs = []
    for name in ("a", "b"):
        train(spec, tmp_path / name)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs.append(
            [r["train_loss_generic"] for r in map(json.loads, lines) if r["type"] == "train"]
        )
    assert runs[0] == runs[1] and all(x is not None for x in runs[0])
