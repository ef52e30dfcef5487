"""Shared fixtures. Tests never reach a model hub: everything is built from presets or local files."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of waiting on an unreachable hub

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real text data not found at {SHARED_DATA} (the checkout's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session")
def gsm8k_file(shared_data):
    """Writes the first n GSM8K train examples as prompt/completion JSONL; returns the path."""
    return lambda out, n, offset=0: gsm8k_prompt_completion(shared_data, out, n, offset)


def gsm8k_prompt_completion(shared_data: Path, out: Path, n: int, offset: int = 0) -> Path:
    """GSM8K {question, answer} -> {prompt, completion} JSONL (the API's format)."""
    lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[offset : offset + n]
    with open(out, "w") as f:
        for line in lines:
            row = json.loads(line)
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question: {row['question']}\nAnswer:",
                        "completion": " " + row["answer"],
                    }
                )
                + "\n"
            )
    return out
