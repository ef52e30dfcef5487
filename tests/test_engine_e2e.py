"""End to end on CPU: pre-train replayft/llama-tiny on generic English, then fine-tune it on GSM8K
with r = 0.25; a two-stage mid-training run; resume after a stop and after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from replay_engine.checkpoint import latest_checkpoint, list_checkpoints
from replay_engine.mixture import TARGET, Mixture
from replay_engine.spec import parse_spec
from replay_engine.trainer import prepare, train

# 64-token sequences: half the compute of 128 per step, the same batch structure (8 slots)
SEQ_LEN, BATCH = 64, 8

pytestmark = pytest.mark.slow  # every test here trains a model (or reads a trained one)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_records(out: Path) -> list[dict]:
    return [r for r in read_metrics(out) if r["type"] == "train"]


@pytest.fixture(scope="module")
def generic_files(shared_data):
    return [
        str(shared_data / "c4_sample" / "c4_demo.jsonl"),
        str(shared_data / "wikipedia_sample" / "wiki_demo.txt"),
    ]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, generic_files, cache_dir):
    """A tiny model pre-trained from scratch on generic English (generic-only mode)."""
    out = tmp_path_factory.mktemp("pretrain")
    spec = parse_spec(
        {
            "model": "replayft/llama-tiny",
            "replay": {"dataset": generic_files},
            "total_steps": 40,
            "batch_size": BATCH,
            "seq_len": SEQ_LEN,
            "learning_rate": 3e-3,
            "cache_dir": str(cache_dir),
            "lr_scheduler": {"type": "wsd", "warmup_ratio": 0.1, "decay_ratio": 0.2},
            # 5 evals of 16 sequences (the defaults, every 2 steps x 64, cost more than training)
            # and one checkpoint besides the final one
            "eval_interval": 10,
            "eval_sequences": 16,
            "checkpoint_interval": 20,
        }
    )
    result = train(spec, out)
    return spec, result, out


@pytest.fixture(scope="module")
def finetune_spec(pretrained, generic_files, tmp_path_factory, gsm8k_file, cache_dir):
    data_dir = tmp_path_factory.mktemp("gsm8k")
    # 30 problems in 64-token sequences: 32 steps, a checkpoint every 10, so a stop at 13 and a
    # kill after step 10 both leave 19+ steps to resume (this run is trained three times: keep
    # it short)
    target = gsm8k_file(data_dir / "train.jsonl", n=30)
    _, result, _ = pretrained
    return {
        "model": str(result.final_checkpoint),
        "training_file": str(target),
        "replay": {"dataset": generic_files, "fraction": 0.25},
        "n_epochs": 2,
        "batch_size": BATCH,
        "seq_len": SEQ_LEN,
        "learning_rate": 1e-3,
        "lr_scheduler": {"type": "wsd", "warmup_ratio": 0.1, "decay_ratio": 0.2},
        "eval_interval": 5,
        "checkpoint_interval": 10,
        "eval_sequences": 16,
        "cache_dir": str(cache_dir),
    }


@pytest.fixture(scope="module")
def finetuned(finetune_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    spec = parse_spec(finetune_spec)
    return spec, train(spec, out), out


def test_pretraining_is_generic_only_and_learns(pretrained):
    spec, result, out = pretrained
    records = train_records(out)
    assert [r["step"] for r in records] == list(range(1, 41))
    assert all(r["target_sequences"] == 0 and r["generic_sequences"] == BATCH for r in records)
    evals = [r for r in read_metrics(out) if r["type"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 40
    assert (
        evals[-1]["val_loss_generic"] < evals[0]["val_loss_generic"] - 1.0
    )  # it learned something


def test_finetune_batches_hold_exactly_r_generic(finetuned):
    spec, result, out = finetuned
    plan = prepare(spec).plan
    records = train_records(out)
    assert len(records) == plan.total_steps == result.total_steps
    # r = 0.25 of 8 slots: exactly 6 target + 2 generic in every batch
    assert {(r["target_sequences"], r["generic_sequences"]) for r in records} == {(6, 2)}
    # the run consumed 2 epochs of the target data, cycling it in one fixed order
    mixture = Mixture(plan)
    target_rows = [
        s.index
        for step in range(plan.total_steps)
        for s in mixture.batch(step)
        if s.source == TARGET
    ]
    T = plan.target_sequences
    assert len(target_rows) >= 2 * T and target_rows[:T] == target_rows[T : 2 * T]
    assert sorted(target_rows[:T]) == list(range(T))
    assert all(
        r["train_loss_target"] is not None and r["train_loss_generic"] is not None for r in records
    )


def test_finetune_lr_curve_matches_plan(finetuned):
    spec, _, out = finetuned
    plan = prepare(spec).plan
    lrs = [r["lr"] for r in train_records(out)]
    assert lrs == [plan.lr_at(s) for s in range(plan.total_steps)]
    warmup = int(0.1 * plan.total_steps)
    assert lrs[warmup - 1] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] < 1e-3 / 5  # decayed at the end


def test_finetune_metrics_and_summary(finetuned):
    spec, result, out = finetuned
    records = read_metrics(out)
    train_keys = {
        "step",
        "stage",
        "lr",
        "tokens_seen",
        "train_loss",
        "train_loss_target",
        "train_loss_generic",
        "grad_norm",
        "tokens_per_second",
    }
    assert train_keys <= set(records[1])
    evals = [r for r in records if r["type"] == "eval"]
    assert {"val_loss_target", "val_loss_generic"} <= set(evals[-1])
    assert (
        evals[-1]["val_loss_target"] < evals[0]["val_loss_target"]
    )  # fine-tuning helps the target
    summary = records[-1]
    assert summary["type"] == "summary" and summary == result.summary
    spike = summary["loss_spike"]
    assert spike["initial_loss"] == records[1]["train_loss_target"]
    assert spike["height"] >= 0 and spike["peak_loss"] >= spike["initial_loss"]


def test_checkpoint_format(finetuned):
    spec, result, out = finetuned
    final = result.final_checkpoint
    assert final == latest_checkpoint(out) and final.name == f"step-{result.total_steps}"
    assert len(list_checkpoints(out)) <= spec.keep_checkpoints
    for name in ("config.json", "model.safetensors", "optimizer.pt", "rng.pt", "meta.json"):
        assert (final / name).is_file(), name
    meta = json.loads((final / "meta.json").read_text())
    assert meta["step"] == result.total_steps and meta["spec"]["replay"]["fraction"] == 0.25
    optimizer_state = torch.load(final / "optimizer.pt", weights_only=True)
    assert len(optimizer_state["state"]) > 0
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("Question: 2 + 3?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()

    # what `vllm serve <checkpoint>` relies on: the folder's own chat template renders a chat
    # prompt exactly as our serving process does
    from replay_engine.generation import encode_chat, load_for_generation

    assert tokenizer.chat_template, "a checkpoint carries its chat template"
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ours = encode_chat(load_for_generation(str(final), device="cpu"), messages)
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == ours


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_metrics(self, record):
        pass

    def on_checkpoint(self, path, step):
        pass

    def should_stop(self, step):
        return step == self.step


def test_stop_and_resume_matches_uninterrupted(finetuned, finetune_spec, tmp_path):
    spec, result, reference_out = finetuned
    first = train(spec, tmp_path, StopAt(13))  # between checkpoints: the stop writes one
    assert first.stopped and first.steps_completed == 13
    assert latest_checkpoint(tmp_path).name == "step-13"
    second = train(spec, tmp_path)
    assert not second.stopped
    expected = [
        (r["step"], r["train_loss"], r["train_loss_target"]) for r in train_records(reference_out)
    ]
    resumed = [
        (r["step"], r["train_loss"], r["train_loss_target"]) for r in train_records(tmp_path)
    ]
    assert [s for s, *_ in resumed] == [s for s, *_ in expected]  # no duplicated or missing steps
    for (_, loss, target), (_, ref_loss, ref_target) in zip(resumed, expected, strict=False):
        assert loss == pytest.approx(ref_loss, abs=1e-5) and target == pytest.approx(
            ref_target, abs=1e-5
        )
    assert second.summary["final_val_loss_target"] == pytest.approx(
        result.summary["final_val_loss_target"], abs=1e-5
    )


def test_sigkill_and_rerun_matches_uninterrupted(finetuned, finetune_spec, tmp_path):
    spec, result, reference_out = finetuned
    spec_path = tmp_path / "spec.json"  # JSON is valid YAML
    spec_path.write_text(json.dumps(finetune_spec))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "replay_engine.cli", "train", str(spec_path), "--out", str(out)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step-10").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # let it get into the steps after the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "step-10").exists(), "the run never reached its first checkpoint"
    assert not (out / "checkpoints" / f"step-{result.total_steps}").exists(), (
        "killed too late to test resume"
    )
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stderr
    expected = train_records(reference_out)
    resumed = train_records(out)
    assert [r["step"] for r in resumed] == [r["step"] for r in expected]
    assert resumed[-1]["train_loss"] == pytest.approx(expected[-1]["train_loss"], abs=1e-5)
    final_eval = [r for r in read_metrics(out) if r["type"] == "eval"][-1]
    ref_eval = [r for r in read_metrics(reference_out) if r["type"] == "eval"][-1]
    assert final_eval["val_loss_target"] == pytest.approx(ref_eval["val_loss_target"], abs=1e-5)


def test_midtraining_switches_stage_at_transition(tmp_path, generic_files, gsm8k_file, cache_dir):
    steps = 40
    target = gsm8k_file(tmp_path / "t.jsonl", n=30)  # in 64-token rows: as 60 were in 128
    spec = parse_spec(
        {
            "model": "replayft/llama-tiny",
            "training_file": str(target),
            "replay": {"dataset": generic_files, "fraction": 0.5, "target_stage2_allocation": 0.5},
            "total_steps": steps,
            "n_epochs": 2,
            "batch_size": BATCH,
            "seq_len": SEQ_LEN,
            "cache_dir": str(cache_dir),
            "learning_rate": 3e-3,
            "eval_interval": steps,
            "eval_sequences": 8,
        }
    )
    plan = prepare(spec).plan
    assert plan.mode == "midtrain"
    transition = plan.stages[1].start_step
    result = train(spec, tmp_path / "run")
    records = train_records(tmp_path / "run")
    stages = [r["stage"] for r in records]
    assert stages == [1] * transition + [2] * (steps - transition)
    stage2_target = {r["target_sequences"] for r in records[transition:]}
    assert stage2_target == {4}  # (1 - r) * 8
    stage1_target = sum(r["target_sequences"] for r in records[:transition])
    w1 = plan.stages[0].target_weight
    assert abs(stage1_target - w1 * BATCH * transition) <= 0.5
    assert 0 < transition < steps and result.steps_completed == steps
