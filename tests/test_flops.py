"""MFU: the FLOP count against a hand count, the peak table, and the per-step metric."""

import json

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from replay_engine.flops import (
    matmul_parameters,
    mfu,
    model_flops_per_token,
    peak_flops_for,
    training_flops_per_token,
)
from replay_engine.models import load_model
from replay_engine.spec import parse_spec
from replay_engine.trainer import train


def test_flops_per_token_by_hand_for_llama_tiny():
    # llama-tiny: d = 128, 4 layers, MLP 384, vocab 8192, tied head. Per layer: q, k, v, o are
    # 128 x 128 each, gate/up/down 128 x 384 each, two RMSNorm vectors of 128.
    d, layers, ff, vocab, seq = 128, 4, 384, 8192, 64
    per_layer = 4 * d * d + 3 * d * ff + 2 * d
    n = layers * per_layer + vocab * d + d  # + tied embedding/head + final norm
    assert n == 1_901_696
    hand = 6 * n + 12 * layers * d * seq
    assert hand == 11_410_176 + 393_216

    model = load_model("replayft/llama-tiny")
    assert matmul_parameters(model) == n
    assert model_flops_per_token(model, seq) == hand == training_flops_per_token(n, layers, d, seq)


def test_untied_input_embedding_costs_no_flops():
    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    assert matmul_parameters(model) == total - 1000 * 64  # the head (1000 x 64) still counts


def test_peak_table_and_mfu():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for("NVIDIA H200") == 989e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("NVIDIA L4") == 121e12
    assert peak_flops_for("Tesla T4") is None
    # 2 devices at 1e12 FLOP/s each, 1e3 tokens/s at 5e8 FLOPs per token = 25%
    assert mfu(1e3, 5e8, 1e12, devices=2) == pytest.approx(0.25)
    assert mfu(1e3, 5e8, None, devices=1) is None


def tiny_runner(tmp_path, gsm8k_file, cache_dir):
    """run(name, **spec overrides) -> (TrainResult, train records) of a few llama-tiny steps."""
    target = gsm8k_file(tmp_path / "t.jsonl", n=20)
    base = {
        "model": "replayft/llama-tiny",
        "training_file": str(target),
        "n_epochs": 0.15,
        "batch_size": 4,
        "seq_len": 64,
        "eval_sequences": 4,
        "device": "cpu",
        "cache_dir": str(cache_dir),
    }

    def run(name, **extra):
        result = train(parse_spec({**base, **extra}), tmp_path / name)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return result, [r for r in map(json.loads, lines) if r["type"] == "train"]

    return run


@pytest.mark.slow
def test_mfu_metric_and_activation_checkpointing(tmp_path, gsm8k_file, cache_dir):
    run = tiny_runner(tmp_path, gsm8k_file, cache_dir)
    _, plain = run("plain")
    assert all(r["mfu"] is None for r in plain)  # CPU and no peak given: no MFU
    _, with_peak = run("peak", peak_flops=1e12, activation_checkpointing=True)
    per_token = 6 * 1_901_696 + 12 * 4 * 128 * 64
    for r in with_peak:
        assert r["mfu"] == pytest.approx(r["tokens_per_second"] * per_token / 1e12)
    # recomputing activations changes memory, not the math
    for a, b in zip(plain, with_peak, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_compiled_blocks_train_the_same_run(tmp_path, gsm8k_file, cache_dir):
    """`compile: true` (torch.compile of each transformer block, inductor on the CPU here) changes
    kernels, not the math, and leaves parameter names (so checkpoints) as they were."""
    from safetensors import safe_open

    run = tiny_runner(tmp_path, gsm8k_file, cache_dir)
    plain, plain_rows = run("plain")
    compiled, compiled_rows = run("compiled", compile=True)
    assert len(compiled_rows) == len(plain_rows) >= 2
    for a, b in zip(plain_rows, compiled_rows, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    names = sorted(p.name for p in compiled.final_checkpoint.iterdir())
    assert names == sorted(p.name for p in plain.final_checkpoint.iterdir())

    def keys(folder):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            return sorted(f.keys())

    assert keys(compiled.final_checkpoint) == keys(plain.final_checkpoint)
