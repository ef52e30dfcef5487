"""Long data preparation shows progress: `prepare_dataset` and `prepare_sharded` report their
share of the work up to 1.0, `trainer.prepare` per dataset, and `trainer.DataProgress` turns
that into messages (job events, the CLI's stderr) only for data that takes a while."""

from itertools import pairwise

import pytest
from test_streaming import write_shards

from replay_engine.data import prepare_dataset
from replay_engine.models import load_tokenizer
from replay_engine.spec import parse_spec
from replay_engine.streaming import prepare_sharded
from replay_engine.trainer import DataProgress, prepare

TINY = "replayft/llama-tiny"


def rising_to_one(shares):
    return shares[-1] == 1.0 and all(0 < a <= b for a, b in pairwise(shares))


def test_prepare_dataset_reports_the_share_tokenized(tmp_path):
    (shard,) = write_shards(tmp_path / "data", n_shards=1, docs_per_shard=800)  # ~800 KB
    tok = load_tokenizer(TINY)
    shares = []
    prepare_dataset(
        [shard], tokenizer=tok, seq_len=64, cache_dir=tmp_path / "c", progress=shares.append
    )
    assert len(shares) >= 3 and rising_to_one(shares), shares  # one per tokenizer call
    hit = []
    prepare_dataset(
        [shard], tokenizer=tok, seq_len=64, cache_dir=tmp_path / "c", progress=hit.append
    )
    assert hit == [1.0]


@pytest.mark.slow
def test_prepare_sharded_reports_shards_ready(tmp_path):
    paths = write_shards(tmp_path / "data", n_shards=3, docs_per_shard=50)
    kwargs = dict(tokenizer=load_tokenizer(TINY), seq_len=64, cache_dir=tmp_path / "c")
    shares = []
    prepare_sharded(paths[:1], workers=1, progress=shares.append, **kwargs)
    assert shares == [1.0]
    shares.clear()  # the first shard is cached now: it counts from the start
    prepare_sharded(paths, workers=2, progress=shares.append, **kwargs)
    assert shares == pytest.approx([1 / 3, 2 / 3, 1.0])
    shares.clear()
    prepare_sharded(paths, workers=2, progress=shares.append, **kwargs)
    assert shares == [1.0]


def test_trainer_prepare_reports_each_dataset(tmp_path, shared_data, gsm8k_file):
    generic = write_shards(tmp_path / "generic", n_shards=1, docs_per_shard=400)
    spec = parse_spec(
        {
            "model": TINY,
            "training_file": str(gsm8k_file(tmp_path / "t.jsonl", n=40)),
            "replay": {"dataset": generic, "fraction": 0.25},
            "seq_len": 64,
            "batch_size": 4,
            "device": "cpu",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    calls = []
    prepare(spec, lambda which, share: calls.append((which, share)))
    target = [s for w, s in calls if w == "target"]
    replay = [s for w, s in calls if w == "generic"]
    assert rising_to_one(target) and rising_to_one(replay) and len(replay) >= 2, calls
    assert calls.index(("target", 1.0)) < calls.index(("generic", replay[0]))  # in order
    calls.clear()
    prepare(spec, lambda which, share: calls.append((which, share)))
    assert calls == [("target", 1.0), ("generic", 1.0)]  # both from the cache


def test_job_events_only_for_preparation_that_takes_a_while():
    now = [0.0]
    events = []
    progress = DataProgress(events.append, every_s=10, clock=lambda: now[0])

    def at(t, which, share):
        now[0] = t
        progress(which, share)

    # quick target data: nothing at all
    at(1, "target", 0.5)
    at(2, "target", 1.0)
    # slow generic data: its share every 10 s at most, then done
    for t, share in [(5, 0.1), (11, 0.2), (15, 0.3), (22, 0.45), (32, 0.6), (38, 0.7), (40, 1.0)]:
        at(t, "generic", share)
    assert events == [
        "Tokenizing the generic data: 20%.",
        "Tokenizing the generic data: 45%.",
        "Tokenizing the generic data: 60%.",
        "Tokenized the generic data.",
    ]
