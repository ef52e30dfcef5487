"""Per-token cross-entropy that keeps one (N, V) tensor alive instead of three.

`F.cross_entropy(logits, labels, reduction="none")` saves its log-softmax for backward (a second
(N, V) tensor next to the logits), and its backward allocates two more: the NLL gradient, mostly
zeros, and the log-softmax gradient. On GPU with bf16 autocast the fp32 upcast the loss needs adds
a fourth. With a vocabulary of 8192 and 2048 tokens per micro-batch each is 64 MiB, and they all
sit at the top of the step's memory peak, where backward starts.

`token_cross_entropy` computes the same loss (log-sum-exp minus the label's logit, in fp32) a block
of rows at a time, and saves only the logits. Its backward turns the logits into their own
gradient in place, (softmax - one_hot(label)) x grad, again a block at a time, so it allocates
nothing of full size. The logits are an intermediate no other autograd node keeps (the LM head's
backward needs its input and weight, not its output); if one did, autograd would refuse the
in-place change with its usual "modified by an inplace operation" error, not compute wrongly. The
same error stops a second backward through the same graph.
"""

from __future__ import annotations

import torch


def _row_blocks(logits: torch.Tensor) -> range:
    """Starts of blocks of rows holding about 2 MiB of fp32 on a CPU, small enough to stay in
    cache across a block's passes (the fastest size tried, against 0.5-64 MiB), and 64 MiB on a
    GPU, so a long batch with a large vocabulary still runs few kernels."""
    n_rows, vocab = logits.shape
    block_bytes = 2 * 2**20 if logits.device.type == "cpu" else 64 * 2**20
    return range(0, n_rows, max(1, block_bytes // (4 * vocab)))


class TokenCrossEntropy(torch.autograd.Function):
    """loss[i] = logsumexp(logits[i]) - logits[i, labels[i]], in fp32; see the module docstring."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        blocks = _row_blocks(logits)
        log_normalizer = torch.empty(len(logits), dtype=torch.float32, device=logits.device)
        for lo in blocks:
            rows = slice(lo, lo + blocks.step)
            log_normalizer[rows] = torch.logsumexp(logits[rows].float(), dim=-1)
        label_logits = logits.gather(1, labels.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, labels, log_normalizer)
        return log_normalizer - label_logits

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, labels, log_normalizer = ctx.saved_tensors
        blocks = _row_blocks(logits)
        grad = grad.float()
        minus_grad = grad.neg().unsqueeze(1)
        for lo in blocks:
            rows = slice(lo, lo + blocks.step)
            block = logits[rows]
            # fp32 logits: the block itself, changed in place; else an fp32 copy written back
            # once, so the gradient is rounded to the logits' dtype once, as an upcast's would be
            probs = block.float()
            probs.sub_(log_normalizer[rows, None]).exp_().mul_(grad[rows, None])
            probs.scatter_add_(1, labels[rows, None], minus_grad[rows])  # the one-hot part
            if probs is not block:
                block.copy_(probs)
        return logits, None


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row next-token loss of `logits` (N, V) against `labels` (N,), in fp32, shape (N,).

    The same values and gradient as F.cross_entropy(logits.float(), labels, reduction="none")
    (to fp32 rounding), in a third of its memory. Backward consumes the logits (see above)."""
    return TokenCrossEntropy.apply(logits, labels)
