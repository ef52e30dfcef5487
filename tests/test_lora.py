"""LoRA through peft on the tiny preset: adapters learn, only they get gradients, both exports
load the way their docs say, a resumed LoRA run matches an uninterrupted one, and an adapter-only
checkpoint is a base of its own (loads as base + adapter, starts a next run, chains)."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from replay_engine import lora
from replay_engine.mixture import Mixture
from replay_engine.models import build_on_meta, load_base, load_model, load_tokenizer, model_info
from replay_engine.spec import SpecError, parse_spec
from replay_engine.trainer import check_against_model, gather_batch, prepare, token_losses, train

TINY = "replayft/llama-tiny"
LORA = {"type": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
ADAPTER_ONLY = {**LORA, "export": "adapter"}
IDS = torch.randint(0, 8000, (2, 24), generator=torch.Generator().manual_seed(1))


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


def logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture(scope="module")
def adapter_run(spec_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "run"
    return out, train(parse_spec({**spec_data, "method": ADAPTER_ONLY}), out)


@pytest.fixture(scope="module")
def merged_run(spec_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "run"
    result = train(parse_spec({**spec_data, "method": LORA}), out)
    return out, result


@pytest.mark.slow
def test_only_adapters_train_and_the_loss_falls(spec_data, merged_run):
    spec = parse_spec({**spec_data, "method": LORA})
    model = lora.build_model(spec, load_base(spec, torch.device("cpu")), None)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert len(trainable) == 4 * 2 * 2  # 4 layers x (q, v) x (A, B)
    ids = torch.randint(0, 8000, (2, 16))
    model(input_ids=ids).logits.float().mean().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())

    out, _ = merged_run
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 0.3


@pytest.mark.slow
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


@pytest.mark.slow
def test_adapter_export_loads_with_peft_and_resume_matches(spec_data, adapter_run, tmp_path):
    spec = parse_spec({**spec_data, "method": ADAPTER_ONLY})
    full_out, full = adapter_run
    folder = full.final_checkpoint
    assert (folder / "adapter_config.json").is_file() and not (folder / "config.json").exists()
    model = PeftModel.from_pretrained(load_model("replayft/llama-tiny", seed=0), folder)
    assert (
        sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == 4 * 2 * 2 * 4 * 128
    )

    # resume from the step-3 checkpoint: same losses as the uninterrupted run
    (tmp_path / "resumed/checkpoints").mkdir(parents=True)
    shutil.copytree(folder.parent / "step-3", tmp_path / "resumed/checkpoints/step-3")
    shutil.copy(full_out / "metrics.jsonl", tmp_path / "resumed/metrics.jsonl")
    train(spec, tmp_path / "resumed")
    assert train_losses(tmp_path / "resumed") == pytest.approx(train_losses(full_out), rel=1e-6)


@pytest.mark.slow
def test_adapter_checkpoint_loads_as_its_base_with_the_adapter_merged(adapter_run, tmp_path):
    folder = adapter_run[1].final_checkpoint
    merged = load_model(str(folder))
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    # a next full fine-tune trains every weight, so none may stay frozen by peft
    assert all(p.requires_grad for p in merged.parameters())
    expected = logits(PeftModel.from_pretrained(load_model(TINY, seed=0), folder))
    torch.testing.assert_close(logits(merged), expected, rtol=1e-5, atol=1e-5)
    assert (expected - logits(load_model(TINY, seed=0))).abs().max() > 1e-2

    # what the API's checks and the FSDP ranks see: the base's config and architecture
    info = model_info(str(folder))
    assert info == {**model_info(TINY), "name": str(folder), "kind": "adapter"}
    assert info["max_sequence_length"] == 1024
    empty = build_on_meta(str(folder))
    assert [(n, p.shape, p.device.type) for n, p in empty.named_parameters()] == [
        (n, p.shape, "meta") for n, p in merged.named_parameters()
    ]

    # the checkpoint's own tokenizer, or the base's when the folder holds none
    bare = tmp_path / "no-tokenizer"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    assert not list(bare.glob("tokenizer*"))
    text = "Question: 12 + 30?\nAnswer: 42<|endoftext|>"
    reference = load_tokenizer(TINY)(text)["input_ids"]
    for path in (folder, bare):
        tokenizer = load_tokenizer(str(path))
        assert tokenizer(text)["input_ids"] == reference
        assert tokenizer.pad_token_id == tokenizer.eos_token_id == 0
    torch.testing.assert_close(logits(load_model(str(bare))), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_adapter_checkpoint_is_the_base_of_a_next_run_and_chains(spec_data, adapter_run, tmp_path):
    first = adapter_run[1].final_checkpoint
    spec = parse_spec({**spec_data, "model": str(first), "method": ADAPTER_ONLY, "n_epochs": 0.25})

    # the loss the next run must report for its first batch: the base + first adapter's (its
    # own new adapter starts at zero), computed with peft, not through models.py
    data = prepare(spec)
    tokens, mask, positions, _ = gather_batch(Mixture(data.plan), data, 0)
    ids, label_mask = torch.from_numpy(tokens), torch.from_numpy(mask[:, 1:])
    position_ids = torch.from_numpy(positions)  # the spec's default per-document attention

    def first_batch_loss(model):
        with torch.no_grad():
            losses = token_losses(model.eval(), ids, position_ids)
            return float((losses * label_mask).sum() / label_mask.sum())

    with_adapter = PeftModel.from_pretrained(load_model(TINY, seed=0), first)
    expected = first_batch_loss(with_adapter)
    assert abs(first_batch_loss(load_model(TINY, seed=0)) - expected) > 0.1

    second = train(spec, tmp_path / "next").final_checkpoint
    losses = train_losses(tmp_path / "next")
    assert losses[0] == pytest.approx(expected, rel=1e-5)

    # its checkpoint is adapter-only on an adapter-only base: both adapters fold in
    assert not (second / "config.json").exists()
    reference = PeftModel.from_pretrained(with_adapter.merge_and_unload(), second)
    reference_logits = logits(reference)
    torch.testing.assert_close(
        logits(load_model(str(second))), reference_logits, rtol=1e-5, atol=1e-5
    )
    assert (reference_logits - logits(load_model(str(first)))).abs().max() > 1e-3


@pytest.mark.slow
def test_adapter_without_replayft_metadata_is_an_error_naming_model(
    spec_data, adapter_run, merged_run, tmp_path
):
    foreign = tmp_path / "foreign"
    shutil.copytree(
        adapter_run[1].final_checkpoint, foreign, ignore=shutil.ignore_patterns("meta*")
    )
    # a merged export's adapter/ subfolder is such an adapter too (no meta.json, no tokenizer)
    inner = merged_run[1].final_checkpoint / lora.ADAPTER_DIR
    for path in (str(foreign), str(inner)):
        for call in (load_model, build_on_meta, model_info):
            with pytest.raises(ValueError, match="without readable ReplayFT metadata") as err:
                call(path)
            assert "`model`" in str(err.value) and "meta.json" in str(err.value)
    with pytest.raises(ValueError, match="without readable ReplayFT metadata"):
        load_tokenizer(str(inner))
    with pytest.raises(ValueError, match="without readable ReplayFT metadata"):
        train(parse_spec({**spec_data, "model": str(foreign)}), tmp_path / "run")


@pytest.mark.slow
def test_carry_from_a_lora_checkpoint_is_refused(spec_data, adapter_run, tmp_path):
    folder = adapter_run[1].final_checkpoint
    spec = parse_spec({**spec_data, "model": str(folder), "optimizer_state": "carry"})
    with pytest.raises(SpecError, match="covers only the adapter") as err:
        train(spec, tmp_path / "run")
    assert err.value.param == "optimizer_state"


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
            lora.build_model(spec, load_base(spec, torch.device("cpu")), None)


def test_target_modules_are_checked_against_the_models_layers(spec_data):
    """Entries match as in peft (a full name or its last dotted parts) and must name layers LoRA
    can wrap; a miss is a SpecError listing the model's adaptable layers, before any weights."""

    def check(targets):
        lora_spec = {"type": "lora", "lora": {"target_modules": targets}}
        check_against_model(parse_spec({**spec_data, "method": lora_spec}))

    for good in (["q_proj", "v_proj"], ["self_attn.o_proj", "mlp.down_proj"], ["embed_tokens"]):
        check(good)
    check("all-linear")
    check_against_model(parse_spec(spec_data))  # full fine-tuning: nothing to match
    for bad, named in ((["q_proj", "qkv"], "'qkv'"), (["mlp"], "'mlp'"), (["c_attn"], "'c_attn'")):
        with pytest.raises(SpecError) as err:
            check(bad)
        assert err.value.param == "method.lora.target_modules"
        message = err.value.errors[0][1]
        assert message.startswith(named + " names no layer"), message
        assert "down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj" in message, message
    with pytest.raises(SpecError, match="'qkv', 'wo' name no layers"):
        check(["qkv", "wo"])
