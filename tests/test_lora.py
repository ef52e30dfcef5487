"""LoRA through peft on the tiny preset: adapters learn, only they get gradients, both exports
load the way their docs say, and a resumed LoRA run matches an uninterrupted one."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from replay_engine import lora
from replay_engine.models import load_model
from replay_engine.spec import SpecError, parse_spec
from replay_engine.trainer import train

LORA = {"type": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}


@pytest.fixture(scope="module")
def spec_data(tmp_path_factory, shared_data, gsm8k_file):
    root = tmp_path_factory.mktemp("lora")
    target = gsm8k_file(root / "target.jsonl", n=40)
    return {
        "model": "replayft/llama-tiny",
        "training_file": str(target),
        "n_epochs": 0.5,
        "batch_size": 8,
        "seq_len": 64,
        "learning_rate": 1e-2,
        "eval_sequences": 8,
        "checkpoint_interval": 3,
        "keep_checkpoints": 10,
        "device": "cpu",
        "cache_dir": str(root / "cache"),
    }


def train_losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["train_loss"] for r in map(json.loads, lines) if r["type"] == "train"]


@pytest.fixture(scope="module")
def merged_run(spec_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "run"
    result = train(parse_spec({**spec_data, "method": LORA}), out)
    return out, result


def test_only_adapters_train_and_the_loss_falls(spec_data, merged_run):
    spec = parse_spec({**spec_data, "method": LORA})
    model = lora.build_model(spec, torch.device("cpu"), None)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert len(trainable) == 4 * 2 * 2  # 4 layers x (q, v) x (A, B)
    ids = torch.randint(0, 8000, (2, 16))
    model(input_ids=ids).logits.float().mean().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())

    out, _ = merged_run
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 0.3


def test_merged_export_is_a_plain_model_with_the_adapter_folded_in(spec_data, merged_run):
    _, result = merged_run
    folder = result.final_checkpoint
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    base = load_model("replayft/llama-tiny", seed=0)
    with_adapter = PeftModel.from_pretrained(base, folder / lora.ADAPTER_DIR).eval()
    ids = torch.randint(0, 8000, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        untrained = load_model("replayft/llama-tiny", seed=0)(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (expected - untrained).abs().max() > 1e-2  # the adapter did change the model


def test_adapter_export_loads_with_peft_and_resume_matches(spec_data, tmp_path):
    spec = parse_spec({**spec_data, "method": {**LORA, "export": "adapter"}})
    full = train(spec, tmp_path / "full")
    folder = full.final_checkpoint
    assert (folder / "adapter_config.json").is_file() and not (folder / "config.json").exists()
    model = PeftModel.from_pretrained(load_model("replayft/llama-tiny", seed=0), folder)
    assert (
        sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 4 * 2 * 2 * 4 * 128
    )

    # resume from the step-3 checkpoint: same losses as the uninterrupted run
    (tmp_path / "resumed/checkpoints").mkdir(parents=True)
    shutil.copytree(folder.parent / "step-3", tmp_path / "resumed/checkpoints/step-3")
    shutil.copy(tmp_path / "full/metrics.jsonl", tmp_path / "resumed/metrics.jsonl")
    train(spec, tmp_path / "resumed")
    assert train_losses(tmp_path / "resumed") == pytest.approx(
        train_losses(tmp_path / "full"), rel=1e-6
    )


def test_lora_spec_errors(spec_data):
    with pytest.raises(SpecError) as err:
        parse_spec({**spec_data, "method": {"type": "lora", "lora": {"r": 0}}})
    assert err.value.param == "method.lora.r"
    with pytest.raises(SpecError) as err:
        parse_spec({**spec_data, "method": {"type": "dora"}})
    assert err.value.param == "method.type"
    with pytest.raises(SpecError, match="adapter only") as err:  # at parse time, on any machine
        parse_spec({**spec_data, "method": {"type": "qlora"}})
    assert err.value.param == "method.export"
    if not torch.cuda.is_available():
        spec = parse_spec({**spec_data, "method": {"type": "qlora", "export": "adapter"}})
        with pytest.raises(SpecError, match="qlora needs a CUDA GPU"):
            lora.build_model(spec, torch.device("cpu"), None)
