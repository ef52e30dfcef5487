"""Trainer units on a tiny preset: optimizer groups, accumulation, determinism, failures, hooks."""

import json
import shutil

import pytest
import torch

from replay_engine import distributed, lora
from replay_engine.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from replay_engine.data import DataFormatError
from replay_engine.models import load_model
from replay_engine.spec import parse_spec
from replay_engine.trainer import (
    TrainingDiverged,
    build_optimizer,
    prepare,
    token_losses,
    train,
)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, shared_data, gsm8k_file):
    root = tmp_path_factory.mktemp("small-data")
    generic = root / "generic.jsonl"
    generic.write_text(
        "\n".join((shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:60])
        + "\n"
    )
    target = gsm8k_file(root / "target.jsonl", n=40)
    return {"target": str(target), "generic": str(generic)}


def small_spec(small_data, cache_dir, **overrides):
    data = {
        "model": "replayft/llama-tiny",
        "training_file": small_data["target"],
        "replay": {"dataset": small_data["generic"], "fraction": 0.25},
        "n_epochs": 0.1,
        "batch_size": 8,
        "seq_len": 64,
        "learning_rate": 1e-3,
        "eval_sequences": 8,
        "cache_dir": str(cache_dir),
    }
    data.update(overrides)
    return parse_spec(data)


def losses(out):
    return [
        json.loads(line)["train_loss"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "train"
    ]


def test_no_weight_decay_on_norms_embeddings_and_biases():
    model = load_model("replayft/llama-tiny")
    spec = parse_spec({"model": "replayft/llama-tiny", "training_file": "t"})
    decay, no_decay = build_optimizer(model, spec, torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-8
    assert "model.embed_tokens.weight" in kept  # also the tied head
    assert all("norm" in n or "embed" in n for n in kept)
    assert all(n.endswith("proj.weight") for n in decayed)
    assert len(decayed) + len(kept) == len(list(model.parameters()))


@pytest.mark.slow
def test_same_seed_same_losses_and_accumulation_is_exact(small_data, cache_dir, tmp_path):
    base = small_spec(small_data, cache_dir, total_steps=6)
    train(base, tmp_path / "a")
    train(base, tmp_path / "b")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    accumulated = small_spec(small_data, cache_dir, total_steps=6, micro_batch_size=2)
    train(accumulated, tmp_path / "c")
    assert losses(tmp_path / "c") == pytest.approx(losses(tmp_path / "a"), abs=1e-5)
    other_seed = small_spec(small_data, cache_dir, total_steps=6, seed=1)
    train(other_seed, tmp_path / "d")
    assert losses(tmp_path / "d") != losses(tmp_path / "a")


@pytest.mark.slow
def test_divergence_stops_with_a_clear_error(small_data, cache_dir, tmp_path):
    spec = small_spec(
        small_data,
        cache_dir,
        learning_rate=1e30,
        grad_clip=0.0,
        lr_scheduler={"type": "constant", "warmup_ratio": 0},
    )
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        train(spec, tmp_path)


def test_seq_len_above_model_maximum(small_data, cache_dir):
    with pytest.raises(Exception) as info:
        prepare(small_spec(small_data, cache_dir, seq_len=4096))
    assert info.value.param == "seq_len" and "1024" in str(info.value)


def test_bad_data_line_is_reported(tmp_path, small_data, cache_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    with pytest.raises(DataFormatError) as info:
        prepare(small_spec(small_data, cache_dir, training_file=str(bad)))
    assert info.value.line == 2


@pytest.mark.slow
def test_half_written_checkpoints_are_never_resumed(small_data, cache_dir, tmp_path):
    spec = small_spec(
        small_data, cache_dir, total_steps=4, checkpoint_interval=2, keep_checkpoints=5
    )
    train(spec, tmp_path)
    root = tmp_path / "checkpoints"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    # a write killed before its rename, and a folder that lost its meta.json
    shutil.copytree(root / "step-4", root / ".tmp-step-6-999")
    shutil.copytree(root / "step-4", root / "step-8")
    (root / "step-8" / "meta.json").unlink()
    assert latest_checkpoint(tmp_path) == root / "step-4"
    train(spec, tmp_path)  # already complete: resumes at the end, cleans the temp folder
    assert not (root / ".tmp-step-6-999").exists()


@pytest.mark.slow
def test_resume_refuses_a_different_spec(small_data, cache_dir, tmp_path):
    train(small_spec(small_data, cache_dir, total_steps=3), tmp_path)
    with pytest.raises(Exception) as info:
        train(small_spec(small_data, cache_dir, total_steps=3, learning_rate=5e-4), tmp_path)
    assert info.value.param == "spec"


@pytest.mark.slow
def test_hooks_see_metrics_checkpoints_and_can_stop(small_data, cache_dir, tmp_path):
    class Recorder:
        def __init__(self):
            self.records, self.checkpoints = [], []

        def on_metrics(self, record):
            self.records.append(record)

        def on_checkpoint(self, path, step):
            self.checkpoints.append((path.name, step))

        def should_stop(self, step):
            return step == 3

    hooks = Recorder()
    result = train(
        small_spec(small_data, cache_dir, total_steps=8, checkpoint_interval=2), tmp_path, hooks
    )
    assert result.stopped and result.steps_completed == 3
    assert hooks.checkpoints == [("step-2", 2), ("step-3", 3)]
    assert [r["step"] for r in hooks.records if r["type"] == "train"] == [1, 2, 3]


@pytest.mark.slow
def test_optimizer_state_carry(small_data, cache_dir, tmp_path):
    first = train(small_spec(small_data, cache_dir, total_steps=3), tmp_path / "first")
    ckpt = str(first.final_checkpoint)
    with pytest.raises(Exception) as info:
        train(
            small_spec(small_data, cache_dir, total_steps=3, optimizer_state="carry"),
            tmp_path / "x",
        )
    assert info.value.param == "optimizer_state"
    carried = small_spec(small_data, cache_dir, model=ckpt, total_steps=3, optimizer_state="carry")
    reset = small_spec(small_data, cache_dir, model=ckpt, total_steps=3, optimizer_state="reset")
    train(carried, tmp_path / "carry")
    train(reset, tmp_path / "reset")
    carry_losses, reset_losses = losses(tmp_path / "carry"), losses(tmp_path / "reset")
    assert carry_losses[0] == pytest.approx(reset_losses[0])  # same weights, same first batch
    assert carry_losses[1] != pytest.approx(reset_losses[1])  # different update from the moments
    meta_step = torch.load(
        tmp_path / "carry" / "checkpoints" / "step-3" / "optimizer.pt", weights_only=True
    )
    assert int(next(iter(meta_step["state"].values()))["step"]) == 6  # 3 carried + 3 new


def test_save_checkpoint_replaces_existing_step(tmp_path):
    model = load_model("replayft/llama-tiny")
    from replay_engine.models import load_tokenizer

    tok = load_tokenizer("replayft/llama-tiny")
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, 5, model=model, tokenizer=tok, optimizer=opt, meta={"note": "a"})
    path = save_checkpoint(
        tmp_path, 5, model=model, tokenizer=tok, optimizer=opt, meta={"note": "b"}
    )
    assert json.loads((path / "meta.json").read_text())["note"] == "b"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-5"]


@pytest.mark.slow
def test_resume_accepts_a_checkpoint_from_before_new_spec_fields(small_data, cache_dir, tmp_path):
    spec = small_spec(small_data, cache_dir, checkpoint_interval=1, total_steps=3)
    train(spec, tmp_path)
    last = latest_checkpoint(tmp_path)
    meta = json.loads((last / "meta.json").read_text())
    for key in ("distributed", "method", "compile", "activation_checkpointing", "peak_flops"):
        del meta["spec"][key]  # as written before these fields existed
    (last / "meta.json").write_text(json.dumps(meta))
    result = train(spec, tmp_path)  # resumes (at the end: nothing left to do) instead of refusing
    assert result.steps_completed == 3 and result.final_checkpoint == last


@pytest.mark.parametrize("method", ["full", "lora"])
def test_label_mask_runs_the_head_on_counted_tokens_only(method):
    spec = parse_spec(
        {"model": "replayft/llama-tiny", "training_file": "t", "method": {"type": method}}
    )
    model = load_model("replayft/llama-tiny", seed=0)
    if method == "lora":
        model = lora.build_model(spec, model, None)
        with torch.no_grad():  # peft starts B at zero, which leaves A without a gradient
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
    trainable = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 4000, (3, 24), generator=g)
    positions = torch.cat([torch.arange(10), torch.arange(14)]).repeat(3, 1)  # two documents
    mask = torch.rand(3, 23, generator=g) < 0.6
    mask[1] = False  # a row of prompt only
    head_rows = []
    head = distributed.unwrap(model).get_output_embeddings()
    seen = head.register_forward_hook(lambda _m, _a, out: head_rows.append(out.shape[:-1]))

    def losses_and_grads(label_mask):
        model.zero_grad(set_to_none=True)
        losses = token_losses(model, ids, positions, label_mask)
        if label_mask is None:
            losses = losses * mask
        losses.sum().backward()
        return losses.detach(), [p.grad.clone() for p in trainable]

    full, full_grads = losses_and_grads(None)
    counted, counted_grads = losses_and_grads(mask)
    seen.remove()
    assert head_rows == [(3, 24), (int(mask.sum()),)]  # the head ran on counted tokens only
    assert (counted[~mask] == 0).all() and (counted[mask] > 0).all()
    torch.testing.assert_close(counted, full, rtol=0, atol=1e-5)
    for a, b in zip(counted_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
