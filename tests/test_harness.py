"""`replayft eval`: EleutherAI's lm-eval harness on our models, with a task YAML of our own over a
local file (the registered tasks read from dataset hubs, unreachable here).

The harness's accuracy is checked against log-likelihoods computed here by hand with a plain
forward pass on the same tiny model, so the test fails if the harness were handed other weights,
another tokenizer, or scored something else."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from replay_engine.generation import load_for_generation  # noqa: E402
from replay_engine.harness import run_harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "replayft/llama-tiny"

DOCS = [
    {"context": "The cat sat on the", "choices": ["mat", "sky", "equation"], "label": 0},
    {"context": "Two plus two is", "choices": ["four", "green", "a river"], "label": 0},
    {"context": "Water freezes when it is", "choices": ["hot", "cold"], "label": 1},
    {"context": "The sun rises in the", "choices": ["west", "east", "kitchen"], "label": 1},
    {"context": "A week has seven", "choices": ["days", "wheels", "oceans", "hats"], "label": 0},
    {"context": "Birds can", "choices": ["fly", "read tax forms"], "label": 0},
]


def write_task(folder: Path) -> None:
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (folder / "local_mc.yaml").write_text(
        "task: replayft_local_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )


def hand_scores() -> tuple[float, float]:
    """acc and acc_norm as the harness defines them: the choice with the highest summed
    log-probability of its tokens after the context (joined by one space), raw and divided by
    the choice's length in characters."""
    loaded = load_for_generation(MODEL, device="cpu")
    tok, model = loaded.tokenizer, loaded.model
    right = right_norm = 0
    for doc in DOCS:
        context_ids = tok.encode(doc["context"])
        scores = []
        for choice in doc["choices"]:
            whole = tok.encode(doc["context"] + " " + choice)
            assert whole[: len(context_ids)] == context_ids
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scores.append(
                sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))
            )
        right += max(range(len(scores)), key=lambda i: scores[i]) == doc["label"]
        normed = [s / len(c) for s, c in zip(scores, doc["choices"], strict=True)]
        right_norm += max(range(len(normed)), key=lambda i: normed[i]) == doc["label"]
    return right / len(DOCS), right_norm / len(DOCS)


def test_harness_scores_a_local_task_like_a_hand_computed_forward_pass(tmp_path):
    write_task(tmp_path)
    result = run_harness(MODEL, ["replayft_local_mc"], include_path=tmp_path, device="cpu")
    acc, acc_norm = hand_scores()
    metrics = result.metrics()
    assert metrics["harness/replayft_local_mc/acc"] == pytest.approx(acc)
    assert metrics["harness/replayft_local_mc/acc_norm"] == pytest.approx(acc_norm)
    assert result.samples["replayft_local_mc"] == len(DOCS)


def test_replayft_eval_command_prints_and_writes_results(tmp_path):
    write_task(tmp_path)
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "replay_engine.cli", "eval", MODEL, "--tasks", "replayft_local_mc"]
    cmd += ["--include-path", str(tmp_path), "--device", "cpu", "--limit", "4", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| replayft_local_mc | acc |" in done.stdout
    report = json.loads(out.read_text())
    assert report["samples"] == {"replayft_local_mc": 4}
    assert 0 <= report["results"]["replayft_local_mc"]["acc,none"] <= 1

    # an unknown task is a clear error, not a traceback
    bad = subprocess.run(
        [sys.executable, "-m", "replay_engine.cli", "eval", MODEL, "--tasks", "no_such_task"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert bad.returncode == 2
    assert "unknown lm-eval task(s) no_such_task" in bad.stderr


def test_a_run_scores_an_lm_eval_task_at_step_0_and_the_end(tmp_path, monkeypatch, cache_dir):
    """`kind: lm_eval` on a job: the harness's task (here a local YAML, found through
    REPLAYFT_LM_EVAL_TASKS as a worker finds it) scores the trainer's own model. At step 0 that
    is the untrained preset, so it must score what `replayft eval` gives the preset."""
    from replay_engine.spec import SpecError, parse_spec
    from replay_engine.trainer import train

    write_task(tmp_path)
    monkeypatch.setenv("REPLAYFT_LM_EVAL_TASKS", str(tmp_path))
    target = tmp_path / "target.jsonl"
    target.write_text(
        "".join(json.dumps({"text": f"line {i} of a small target file."}) + "\n" for i in range(40))
    )
    base = {
        "model": MODEL,
        "training_file": str(target),
        "n_epochs": 0.3,  # 2 steps of 2 of its 13 sequences
        "checkpoint_interval": 2,
        "batch_size": 2,
        "seq_len": 32,
        "eval_sequences": 2,
        "cache_dir": str(cache_dir),
    }
    lm = {"name": "local", "kind": "lm_eval", "task": "replayft_local_mc", "generic": True}
    result = train(parse_spec({**base, "evals": [lm]}), tmp_path / "out")
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "eval/local/accuracy" in r]
    assert [r["step"] for r in scored] == [0, 2]
    acc, acc_norm = hand_scores()
    assert scored[0]["eval/local/accuracy"] == pytest.approx(acc)
    assert scored[0]["eval/local/accuracy_norm"] == pytest.approx(acc_norm)
    assert scored[0]["eval/local/total"] == len(DOCS)
    summary = result.summary["evals"]["local"]
    assert summary["kind"] == "lm_eval" and summary["initial_accuracy"] == pytest.approx(acc)

    # a task the harness does not know fails the run before training, naming the field
    with pytest.raises(SpecError, match="unknown lm-eval task"):
        train(parse_spec({**base, "evals": [{**lm, "task": "nope"}]}), tmp_path / "bad")
