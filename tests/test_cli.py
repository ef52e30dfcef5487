"""The `replayft` command line, run as a real subprocess."""

import json
import subprocess
import sys

import pytest


def replayft(*args, cwd=None, cache_dir=None):
    env = {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    if cache_dir:
        env["REPLAYFT_CACHE_DIR"] = str(cache_dir)
    return subprocess.run(
        [sys.executable, "-m", "replay_engine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def spec_file(tmp_path, shared_data, gsm8k_file, cache_dir):
    target = gsm8k_file(tmp_path / "gsm8k.jsonl", n=30)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: replayft/llama-tiny\n"
        "training_file: gsm8k.jsonl\n"  # relative to the spec file
        f"replay:\n  dataset: {shared_data / 'c4_sample' / 'c4_demo.jsonl'}\n"
        "  fraction: 0.25\n  target_stage2_allocation: 1\n  stage2_duration: 0.5\n"
        f"n_epochs: 2\nbatch_size: 8\nseq_len: 128\neval_sequences: 8\ncache_dir: {cache_dir}\n"
    )
    assert target.exists()
    return spec


@pytest.mark.slow
def test_plan_json_and_table(spec_file):
    result = replayft("plan", str(spec_file), "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["mode"] == "midtrain" and len(plan["stages"]) == 2
    assert plan["transition_step"] == plan["total_steps"] // 2
    assert plan["stages"][0]["target_weight"] == 0 and plan["stages"][1]["target_weight"] == 0.75
    assert plan["target_epochs"] >= 2
    table = replayft("plan", str(spec_file))
    assert table.returncode == 0 and "stage" in table.stdout and "midtrain" in table.stdout


@pytest.mark.slow
def test_train_writes_metrics_and_checkpoints(spec_file, tmp_path):
    out = tmp_path / "run"
    result = replayft("train", str(spec_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["type"] == "summary" and summary["final_val_loss_target"] is not None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1] == summary
    assert (out / "checkpoints" / f"step-{summary['total_steps']}" / "model.safetensors").is_file()


def test_bad_spec_names_the_field(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "model: replayft/llama-tiny\ntraining_file: x.jsonl\nreplay:\n  dataset: g.txt\n  fraction: 1.0\n"
    )
    result = replayft("plan", str(spec))
    assert result.returncode == 2
    assert "error: replay.fraction: must be in [0, 1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_file_is_a_clear_error(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: replayft/llama-tiny\ntraining_file: nowhere.jsonl\n")
    result = replayft("plan", str(spec))
    assert (
        result.returncode == 2
        and "nowhere.jsonl" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_efficiency_reproduces_the_paper():
    finemath = "16:2.99478,8:3.16164,4:3.39593,2:3.49087,1:3.62532"
    result = replayft(
        "efficiency", "--reference", finemath, "--candidate", "3.90261", "--baseline", "3.99417"
    )
    assert result.returncode == 0 and result.stdout.startswith("1.49x")
    flan = "16:3.2712,8:3.27876,4:3.37226,2:3.41444,1:3.54749"
    result = replayft(
        "efficiency",
        "--reference",
        flan,
        "--candidate",
        "3.35773",
        "--baseline",
        "3.44407",
        "--json",
    )
    assert round(json.loads(result.stdout)["multiplier"], 2) == 2.06
    bad = replayft("efficiency", "--reference", "16:3,8", "--candidate", "3", "--baseline", "3")
    assert bad.returncode == 2 and "8" in bad.stderr


@pytest.mark.slow
def test_demo_runs_without_shared_data(tmp_path, cache_dir):
    # the README's main job: data from the Python install only, so it runs anywhere
    result = replayft(
        "demo", "--out", str(tmp_path / "demo"), "--scale", "0.2", cwd=tmp_path, cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr
    assert "midtrain" in result.stdout  # the plan is printed before training
    run = tmp_path / "demo" / "run"
    assert any(run.joinpath("checkpoints").iterdir())
    assert (run / "metrics.jsonl").read_text().count('"type": "summary"') == 1


@pytest.mark.slow
def test_train_on_two_machines(tmp_path, shared_data, gsm8k_file, cache_dir):
    """`replayft train` once per machine (here: twice on one host), meeting at node 0."""
    import socket

    gsm8k_file(tmp_path / "gsm8k.jsonl", n=30)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: replayft/llama-tiny\ntraining_file: gsm8k.jsonl\n"
        f"replay:\n  dataset: {shared_data / 'c4_sample' / 'c4_demo.jsonl'}\n  fraction: 0.25\n"
        "n_epochs: 0.1\nbatch_size: 4\nseq_len: 64\neval_sequences: 4\ndevice: cpu\n"
        f"cache_dir: {cache_dir}\ndistributed:\n  gpus_per_node: 1\n  nodes: 2\n"
    )
    out = tmp_path / "run"
    lost = replayft("train", str(spec), "--out", str(out))
    assert lost.returncode == 2 and "--node-rank K" in lost.stderr and "--master" in lost.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        master = f"127.0.0.1:{s.getsockname()[1]}"
    env = {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    machines = [
        subprocess.Popen(
            [sys.executable, "-m", "replay_engine.cli", "train", str(spec), "--out", str(out)]
            + ["--node-rank", str(rank), "--master", master, "--rendezvous-timeout", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    results = [m.communicate(timeout=600) for m in machines]
    assert [m.returncode for m in machines] == [0, 0], results
    summary = json.loads(results[0][0])  # node 0 reports; node 1 prints nothing
    assert summary["total_steps"] >= 2 and results[1][0] == ""
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in steps if r["type"] == "train"]
    assert train_steps == list(range(1, summary["total_steps"] + 1))
