"""Per-document attention in packed sequences (`packing_attention`).

The packer records each token's position within its document; given those as position ids (and
no attention mask), transformers keeps attention inside documents. The claims: a packed A|EOS|B
scores every token as A|EOS and B|EOS scored alone (plain, LoRA, DDP and FSDP2 models), the
positions are exactly the documents' (rows that start mid-document, rows that end at an EOS, an
EOS inside a document), and a training run is deterministic and differs between the settings.
"""

import json

import numpy as np
import pytest
import torch

from replay_engine import lora
from replay_engine.checkpoint import upgrade_meta
from replay_engine.data import prepare_dataset
from replay_engine.models import load_base, load_model, load_tokenizer
from replay_engine.spec import JobSpec, SpecError, parse_spec, upgrade_spec_data
from replay_engine.trainer import token_losses, train

TINY = "replayft/llama-tiny"
EOS = 0  # the bundled tokenizer's <|endoftext|>
LEN_A, LEN_B = 12, 9


def _documents() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A|EOS, B|EOS, and both packed into one row with the packer's positions."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(1, 4000, (LEN_A,), generator=g)
    b = torch.randint(1, 4000, (LEN_B,), generator=g)
    eos = torch.tensor([EOS])
    doc_a, doc_b = torch.cat([a, eos]), torch.cat([b, eos])
    packed = torch.cat([doc_a, doc_b])
    positions = torch.cat([torch.arange(len(doc_a)), torch.arange(len(doc_b))])
    return doc_a[None], doc_b[None], packed[None], positions[None]


def _assert_per_document(model) -> None:
    doc_a, doc_b, packed, positions = _documents()
    with torch.no_grad():
        alone_a = token_losses(model, doc_a)[0]
        alone_b = token_losses(model, doc_b)[0]
        per_document = token_losses(model, packed, positions)[0]
        causal = token_losses(model, packed)[0]
    n_a = doc_a.shape[1]  # losses[i] predicts token i + 1; losses[n_a - 1] predicts B's first
    torch.testing.assert_close(per_document[: n_a - 1], alone_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(per_document[n_a:], alone_b, rtol=0, atol=1e-5)
    # across documents, B's tokens see A: the same tokens score differently
    torch.testing.assert_close(causal[: n_a - 1], alone_a, rtol=0, atol=1e-5)
    assert (causal[n_a:] - alone_b).abs().max() > 1e-2


def test_packed_documents_score_as_if_alone():
    model = load_model(TINY, seed=0).eval()
    _assert_per_document(model)


def test_packed_documents_score_as_if_alone_under_lora():
    spec = parse_spec({"model": TINY, "training_file": "t", "method": {"type": "lora"}})
    model = lora.build_model(spec, load_base(spec, torch.device("cpu")), None).eval()
    assert type(model).__name__.startswith("Peft")  # the kwargs go through peft's forward
    # peft starts adapters at zero (B = 0); random ones make the wrapper change the outputs
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    _assert_per_document(model)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_packed_documents_score_as_if_alone_under_wrappers(strategy, tmp_path):
    # wrap_model leaves a 1-process model bare, so wrap as it does for several processes
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    from replay_engine.distributed import transformer_blocks

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        model = load_model(TINY, seed=0)
        if strategy == "ddp":
            model = DistributedDataParallel(model)
        else:
            for block in transformer_blocks(model):
                fully_shard(block)
            fully_shard(model)
            assert type(model).__name__ == "FSDPLlamaForCausalLM"
        _assert_per_document(model.eval())
    finally:
        torch.distributed.destroy_process_group()


def test_positions_restart_at_each_document_and_each_row(tmp_path):
    tokenizer = load_tokenizer(TINY)
    ims = "<|im_start|>"  # a special token: exactly one id, so the lengths below are exact
    assert tokenizer(ims * 5, add_special_tokens=False)["input_ids"] == [1] * 5
    train_file, val_file = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    docs = [
        ims * 5,  # 5 tokens + EOS: fills row 0 and runs 2 tokens into row 1
        "<|im_end|>",  # 1 + EOS: ends exactly at the end of row 1
        ims + "<|endoftext|>",  # an EOS inside a document is not a boundary; + EOS, then padding
    ]
    train_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    val_file.write_text(json.dumps({"text": ims}) + "\n")
    ds = prepare_dataset(
        [train_file], tokenizer=tokenizer, seq_len=4, cache_dir=tmp_path, val_paths=[val_file]
    )
    assert np.asarray(ds.train.tokens).tolist() == [
        [1, 1, 1, 1],
        [1, EOS, 2, EOS],
        [1, EOS, EOS, EOS],  # the last EOS is padding
    ]
    expected = [
        [0, 1, 2, 3],
        [0, 1, 0, 1],  # starts mid-document: counts from the row start
        [0, 1, 2, 0],  # the padding is a document of its own
    ]
    assert np.asarray(ds.train.positions).tolist() == expected
    again = prepare_dataset(
        [train_file], tokenizer=tokenizer, seq_len=4, cache_dir=tmp_path, val_paths=[val_file]
    )
    assert again.from_cache and np.asarray(again.train.positions).tolist() == expected
    assert np.asarray(ds.val.positions).tolist() == [[0, 1, 0, 1]]  # document, then padding


def test_packing_attention_is_a_checked_spec_field():
    base = {"model": TINY, "training_file": "t"}
    assert parse_spec(base).packing_attention == "document"
    assert parse_spec({**base, "packing_attention": "causal"}).packing_attention == "causal"
    with pytest.raises(SpecError) as info:
        parse_spec({**base, "packing_attention": "bidirectional"})
    assert info.value.param == "packing_attention"
    # a job or checkpoint stored before the field existed attended across documents, and
    # keeps doing so; a stored spec that has the field keeps its value
    old = upgrade_meta({"format_version": 1, "step": 3, "spec": dict(base)})
    assert old["spec"]["packing_attention"] == "causal"
    assert JobSpec.model_validate(upgrade_spec_data(base)).packing_attention == "causal"
    stored = parse_spec(base).model_dump(mode="json")
    assert JobSpec.model_validate(upgrade_spec_data(stored)).packing_attention == "document"


@pytest.fixture(scope="module")
def run_data(tmp_path_factory, shared_data):
    """Short, fully trained text documents (GSM8K questions, ~50 tokens), so most rows of 64
    tokens hold a boundary with trained tokens after it. (In prompt/completion data, what
    follows a boundary is mostly the next masked prompt, which no setting changes.)"""
    root = tmp_path_factory.mktemp("packing-data")
    lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:60]
    target = root / "target.jsonl"
    target.write_text(
        "".join(json.dumps({"text": json.loads(x)["question"]}) + "\n" for x in lines)
    )
    generic = root / "generic.jsonl"
    lines = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:40]
    generic.write_text("\n".join(lines) + "\n")
    return {"target": str(target), "generic": str(generic)}


def _run(run_data, cache_dir, out, packing_attention):
    spec = parse_spec(
        {
            "model": TINY,
            "training_file": run_data["target"],
            "replay": {"dataset": run_data["generic"], "fraction": 0.25},
            "n_epochs": 0.1,
            "batch_size": 4,
            "seq_len": 64,
            "learning_rate": 1e-3,
            "eval_sequences": 4,
            "packing_attention": packing_attention,
            "device": "cpu",
            "cache_dir": str(cache_dir),
        }
    )
    train(spec, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [
        r.get("train_loss", r.get("val_loss_target")) for r in records if r["type"] != "summary"
    ]


@pytest.mark.slow
def test_training_is_deterministic_and_the_settings_differ(run_data, cache_dir, tmp_path):
    document = _run(run_data, cache_dir, tmp_path / "document-1", "document")
    assert _run(run_data, cache_dir, tmp_path / "document-2", "document") == document
    causal = _run(run_data, cache_dir, tmp_path / "causal-1", "causal")
    assert _run(run_data, cache_dir, tmp_path / "causal-2", "causal") == causal
    assert len(document) == len(causal) >= 4  # eval at 0, train steps, final eval
    # the same model scores the same held-out rows differently, and so it trains differently
    assert all(abs(x - y) > 1e-4 for x, y in zip(document, causal, strict=True))
