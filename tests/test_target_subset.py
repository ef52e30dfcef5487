"""`target_subset_fraction`: nested, seeded subsets of the target documents (the reference runs
of a data-efficiency sweep), validated on the same held-out documents whatever the fraction."""

import json

import numpy as np
import pytest

from replay_engine.data import nested_subset, prepare_dataset
from replay_engine.models import load_tokenizer
from replay_engine.spec import SpecError, parse_spec
from replay_engine.trainer import prepare, train

FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("replayft/llama-tiny")


def _docs(tok, split) -> list[str]:
    """The documents of a packed split, decoded (EOS separates them)."""
    tokens = np.asarray(split.tokens).reshape(-1)[: split.n_tokens]
    ends = np.flatnonzero(tokens == tok.eos_token_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


def test_nested_subset_is_nested_seeded_and_keeps_file_order():
    docs = list(range(100))
    subsets = [nested_subset(docs, f, seed=5) for f in FRACTIONS]
    assert [len(s) for s in subsets] == [6, 12, 25, 50, 100]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert set(smaller) < set(larger)
    assert all(s == sorted(s) for s in subsets)  # file order, not the draw order
    assert nested_subset(docs, 0.25, seed=5) == subsets[2]  # same seed, same documents
    assert nested_subset(docs, 0.25, seed=6) != subsets[2]
    assert subsets[2] != docs[:25]  # a random share, not the head of the file
    assert nested_subset(docs[:3], 0.01, seed=0) and len(nested_subset(docs[:3], 0.01, 0)) == 1


def test_prepare_dataset_subsets_after_the_holdout(tmp_path, tok):
    path = tmp_path / "docs.jsonl"
    texts = [f"document number {i} says hello" for i in range(80)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    def packed(fraction):
        return prepare_dataset(
            [str(path)],
            tokenizer=tok,
            seq_len=16,
            cache_dir=tmp_path / "cache",
            val_fraction=0.1,
            seed=3,
            subset_fraction=fraction,
        )

    runs = {f: packed(f) for f in FRACTIONS}
    val = _docs(tok, runs[1].val)
    assert len(val) == 8
    for fraction, ds in runs.items():
        # the same held-out documents, byte for byte, whatever share is trained on
        assert np.array_equal(ds.val.tokens, runs[1].val.tokens), fraction
        assert not set(_docs(tok, ds.train)) & set(val)
        assert ds.train.n_documents == max(1, round(fraction * 72))
    trains = [set(_docs(tok, runs[f].train)) for f in FRACTIONS]
    for smaller, larger in zip(trains, trains[1:], strict=False):
        assert smaller < larger
    # each fraction is its own cache entry, and a second call is a hit
    assert len({ds.cache_key for ds in runs.values()}) == len(FRACTIONS)
    assert packed(0.25).from_cache and _docs(tok, packed(0.25).train) == _docs(
        tok, runs[0.25].train
    )
    with pytest.raises(ValueError, match="subset_fraction"):
        packed(0.0)


def test_spec_checks_the_fraction():
    base = {"model": "replayft/llama-tiny", "training_file": "t.jsonl"}
    assert parse_spec(base).target_subset_fraction == 1.0
    for bad in (0, 1.5, -0.1):
        with pytest.raises(SpecError) as info:
            parse_spec({**base, "target_subset_fraction": bad})
        assert info.value.param == "target_subset_fraction"


@pytest.mark.slow
def test_reference_runs_train_on_fewer_steps_and_share_the_validation(
    tmp_path, shared_data, gsm8k_file, cache_dir
):
    target = gsm8k_file(tmp_path / "target.jsonl", n=40)
    spec = {
        "model": "replayft/llama-tiny",
        "training_file": str(target),
        "n_epochs": 1,
        "batch_size": 4,
        "seq_len": 64,
        "eval_sequences": 4,
        "cache_dir": str(cache_dir),
    }
    full = prepare(parse_spec(spec))
    half_spec = parse_spec({**spec, "target_subset_fraction": 0.5})
    half = prepare(half_spec)
    assert np.array_equal(full.target.val.tokens, half.target.val.tokens)
    assert 0.35 < len(half.target.train) / len(full.target.train) < 0.65
    assert half.plan.total_steps < full.plan.total_steps
    assert half.plan.target_sequences == len(half.target.train)

    result = train(half_spec, tmp_path / "run", data=half)
    assert result.steps_completed == half.plan.total_steps
    assert result.summary["final_val_loss_target"] is not None
