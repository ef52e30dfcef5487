"""Tokenizing in bounded batches. Upload validation (`worker.runner.file_stats`) streams: the
same stats as reading the whole file, on real data of every format, with memory that does not
grow with the file. Training-time packing (`data.prepare_dataset`) holds the documents, but its
tokenizer calls stay bounded however long the documents are."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from replay_engine.data import TOKENIZE_BATCH, read_documents
from replay_engine.models import load_tokenizer
from worker.runner import file_stats

TOKENIZER = "replayft/llama-tiny"  # the settings' default_tokenizer_model
REPO = Path(__file__).resolve().parents[1]


def stats_reading_everything(path) -> dict:
    """The stats as file_stats computed them before it streamed: every document in memory."""
    tokenizer = load_tokenizer(TOKENIZER)
    fmt, docs = read_documents(path, tokenizer)
    texts = [segment.text for doc in docs for segment in doc]
    tokens = 0
    for start in range(0, len(texts), TOKENIZE_BATCH):
        batch = tokenizer(texts[start : start + TOKENIZE_BATCH], add_special_tokens=False)
        tokens += sum(len(ids) for ids in batch["input_ids"])
    return {
        "format": fmt,
        "examples": len(docs),
        "tokens": tokens + len(docs),
        "tokenizer": TOKENIZER,
    }


def chat_file(shared_data, out, n):
    """Dolly open QA as chat JSONL, so chat rendering goes through the stats too."""
    lines = (shared_data / "dolly_open_qa" / "dolly_open_qa.jsonl").read_text().splitlines()[:n]
    with open(out, "w") as f:
        for line in lines:
            row = json.loads(line)
            messages = [
                {"role": "user", "content": row["instruction"]},
                {"role": "assistant", "content": row["response"]},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return out


@pytest.mark.slow
def test_streamed_stats_equal_reading_the_whole_file(shared_data, gsm8k_file, tmp_path):
    files = {
        "text": shared_data / "c4_sample" / "c4_demo.jsonl",
        "txt": shared_data / "tinyshakespeare" / "input.txt",  # paragraphs
        "prompt_completion": gsm8k_file(tmp_path / "gsm8k.jsonl", 1000),
        "chat": chat_file(shared_data, tmp_path / "chat.jsonl", 1000),
    }
    for fmt, path in files.items():
        stats = file_stats(str(path))
        assert stats == stats_reading_everything(path), path
        assert stats["format"] == fmt and stats["examples"] > 100, stats
        assert stats["tokens"] > stats["examples"] * 10, stats


def test_a_bad_line_deep_in_a_file_is_reported_by_its_number(shared_data, tmp_path):
    from replay_engine.data import DataFormatError

    path = tmp_path / "c4.jsonl"
    lines = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()
    path.write_text("\n".join([*lines, '{"text": 7}', *lines[:3]]) + "\n")
    with pytest.raises(DataFormatError) as err:
        file_stats(str(path))
    assert err.value.line == len(lines) + 1 and "'text' must be a string" in err.value.reason


# A fresh interpreter per file (tests/memory_probe.py samples the peak). A first call on a
# small file loads the code paths and warms the tokenizer and the allocator.
MEASURE = textwrap.dedent(
    """
    import json, sys
    from memory_probe import peak_growth_kib
    from worker.runner import file_stats
    warmup, path = sys.argv[1], sys.argv[2]
    file_stats(warmup)
    with peak_growth_kib() as memory:
        stats = file_stats(path)
    print(json.dumps({**memory, **stats}))
    """
)


def measure(warmup, path, tmp_path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(warmup), str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            **os.environ,
            "REPLAYFT_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]),
        },
        timeout=300,
    )
    assert out.returncode == 0, f"validating {path} failed:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_text_jsonl(path, megabytes: int, seed: int = 0) -> int:
    """JSONL text records of ~2 KB made of long words, which the tokenizer takes at its fastest
    (its per-word cache) so 100 MB validates in seconds; returns the number of records."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=200)) for _ in range(64)]
    records = [
        json.dumps({"text": " ".join(rng.choice(words, size=10)) + f" {i}"}) + "\n"
        for i in range(1000)
    ]
    block = "".join(records).encode()
    repeats = megabytes * 2**20 // len(block) + 1
    with open(path, "wb") as f:
        for _ in range(repeats):
            f.write(block)
    return repeats * len(records)


@pytest.mark.slow
def test_validation_memory_stays_flat_as_the_file_grows(tmp_path):
    warmup, small, large = tmp_path / "w.jsonl", tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_text_jsonl(warmup, 1)
    n_small = write_text_jsonl(small, 10)
    n_large = write_text_jsonl(large, 100)
    got_small = measure(warmup, small, tmp_path)
    got_large = measure(warmup, large, tmp_path)
    assert (got_small["examples"], got_large["examples"]) == (n_small, n_large)
    assert got_large["tokens"] > 50_000_000, got_large

    # Holding the documents alone would take more than the file's size (>100 MiB of text);
    # streamed, ten times the file costs next to nothing more.
    mib = 1024
    assert got_large["growth_kib"] < 48 * mib, (got_small, got_large)
    assert got_large["growth_kib"] < got_small["growth_kib"] + 16 * mib, (got_small, got_large)


PACK = textwrap.dedent(
    """
    import json, sys
    from memory_probe import peak_growth_kib
    from replay_engine.data import prepare_dataset
    from replay_engine.models import load_tokenizer
    warmup, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    tokenizer = load_tokenizer("replayft/llama-tiny")
    prepare_dataset([warmup], tokenizer=tokenizer, seq_len=512, cache_dir=cache + "/warmup")
    with peak_growth_kib() as memory:
        data = prepare_dataset([path], tokenizer=tokenizer, seq_len=512, cache_dir=cache + "/run")
    print(json.dumps({**memory, "tokens": data.train.n_tokens + data.val.n_tokens}))
    """
)


@pytest.mark.slow
def test_packing_long_documents_costs_no_more_than_short_ones(tmp_path):
    """The same ~8 MB of text as 4K short documents (~2 KB each) and as 40 long ones
    (~200 KB each): tokenizer calls capped by characters cost the same either way. Capped by
    count alone, the long documents went through in one call holding ~100 bytes per token
    (measured at 15 MB: 1.4 GB of growth against 0.5 GB for the short ones)."""
    short, long_, warmup = tmp_path / "short.jsonl", tmp_path / "long.jsonl", tmp_path / "w.jsonl"
    write_text_jsonl(short, 8)
    write_text_jsonl(warmup, 1)
    with open(short) as src, open(long_, "w") as dst:
        texts = [json.loads(line)["text"] for line in src]
        for i in range(0, len(texts), 100):
            dst.write(json.dumps({"text": " ".join(texts[i : i + 100])}) + "\n")

    def measure_pack(path) -> dict:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                PACK,
                str(warmup),
                str(path),
                str(tmp_path / f"cache-{path.stem}"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])},
            timeout=300,
        )
        assert out.returncode == 0, f"packing {path} failed:\n{out.stderr[-3000:]}"
        return json.loads(out.stdout.strip().splitlines()[-1])

    got_short, got_long = measure_pack(short), measure_pack(long_)
    assert got_long["tokens"] > 1_300_000, got_long
    mib = 1024
    assert got_long["growth_kib"] < got_short["growth_kib"] * 1.25 + 32 * mib, (got_short, got_long)
