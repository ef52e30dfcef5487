"""bench/gpu_mfu.py runs once per GPU session with no second try, so its whole path (the
SmolLM2-shaped model it builds there, both engines, the MFU arithmetic, the JSON) is run here on
the CPU at toy size. The numbers mean nothing; that the script gets to them does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_mfu_script_runs_end_to_end_on_cpu(tmp_path, shared_data):
    out = tmp_path / "mfu.json"
    cmd = [sys.executable, str(REPO / "bench" / "gpu_mfu.py"), "--device", "cpu"]
    cmd += ["--models", "smollm2", "--fresh-smollm2", "--no-compile", "--batch-size", "1"]
    # 256 tokens: a shorter sequence can be all prompt (no trained token, loss 0 / NaN)
    cmd += ["--seq-len", "256", "--steps", "1", "--warmup", "1", "--peak-flops", "1e12"]
    cmd += ["--eval-sequences", "1"]  # the untimed evals: 135M-parameter forwards on a CPU
    cmd += ["--attention", "causal", "--data-dir", str(shared_data), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "| SmolLM2-135M | ReplayFT |" in done.stdout
        and "| SmolLM2-135M | HF Trainer |" in done.stdout
    )

    result = json.loads(out.read_text())
    assert result["device"] == "CPU" and result["peak"] == 1e12
    ours, hf = result["rows"]
    assert (ours["engine"], hf["engine"]) == ("ReplayFT", "HF Trainer")
    for row in (ours, hf):
        assert row["tokens_per_s"] > 0
        assert row["mfu"] == pytest.approx(row["tokens_per_s"] * row["flops_per_token"] / 1e12)
    # 134.5M parameters: 6N + 12*L*d*T is ~0.83 GFLOP per token at T = 256 (1.02 at T = 1024)
    assert 0.8e9 < ours["flops_per_token"] < 0.87e9
    # same fresh model, same first batch: the engines start from the same loss, near ln(49152)
    assert 9 < ours["first_loss"] < 12
    assert ours["first_loss"] == pytest.approx(hf["first_loss"], rel=1e-4)
