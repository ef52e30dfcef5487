"""Model FLOPs utilisation (MFU): achieved training FLOP/s as a share of the hardware's peak.

Training FLOPs per token (the PaLM appendix-B convention, also nanoGPT's):

    6 * N  +  12 * n_layers * d_model * seq_len

- 6 N: every weight in a matmul does one multiply-add (2 FLOPs) per token forward and twice that
  backward. N counts the parameters that take part in matmuls: all of them except an input
  embedding table that is *not* tied to the output head (a lookup costs no FLOPs; a tied table
  is the head's matmul and counts once). Norm weights are included; they are ~0.01% of N.
- 12 L d T: attention scores (Q K^T) and the weighted sum (A V) are 2 * T * d FLOPs each per token
  per layer forward, times 3 for forward + backward. Counted for the full T x T square, not the
  causal half, as the convention does, so MFU is comparable with published numbers.

Activation checkpointing recomputes the forward, but MFU deliberately ignores that (it counts the
model's FLOPs, not the hardware's): recomputation shows up as lower MFU, as it should.

Peak FLOP/s: dense bf16 tensor-core numbers from the vendors' data sheets, looked up by
`torch.cuda.get_device_name()`; `peak_flops` in the spec overrides (and is the only way to get an
MFU on CPU).
"""

from __future__ import annotations

import torch

# (substring of the device name, dense bf16 FLOP/s); the first match wins, so specific names first
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM and NVL
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]


def peak_flops_for(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def device_peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: the override, else the table for CUDA devices, else None."""
    if override is not None:
        return override
    if device.type == "cuda":
        return peak_flops_for(torch.cuda.get_device_name(device))
    return None


def matmul_parameters(model: torch.nn.Module) -> int:
    """N of the formula: unique parameters, less an input embedding that is not the head."""
    total = sum(p.numel() for p in model.parameters())
    get_in, get_out = (
        getattr(model, n, None) for n in ("get_input_embeddings", "get_output_embeddings")
    )
    if get_in is None or get_out is None:
        return total
    emb, head = get_in(), get_out()
    if emb is None or (head is not None and head.weight is emb.weight):
        return total
    return total - emb.weight.numel()


def training_flops_per_token(n_params: int, n_layers: int, d_model: int, seq_len: int) -> int:
    return 6 * n_params + 12 * n_layers * d_model * seq_len


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> int:
    config = model.config
    return training_flops_per_token(
        matmul_parameters(model), config.num_hidden_layers, config.hidden_size, seq_len
    )


def mfu(
    tokens_per_second: float, flops_per_token: int, peak: float | None, devices: int
) -> float | None:
    """Share of `devices` x `peak` FLOP/s achieved; None when the peak is unknown."""
    if peak is None or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak * devices)
