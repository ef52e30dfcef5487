"""replay_engine.loss.token_cross_entropy against F.cross_entropy: values, gradients, dtypes."""

import pytest
import torch
import torch.nn.functional as F

from replay_engine.loss import token_cross_entropy


def losses_and_grad(loss_fn, raw, labels, weights):
    """Per-row losses and d(sum(weights * loss))/d(logits). The logits are computed from a leaf
    (as a model's are), so the in-place backward cannot touch `raw`."""
    leaf = raw.clone().requires_grad_(True)
    logits = leaf * 1.0
    losses = loss_fn(logits, labels)
    (losses * weights).sum().backward()
    return losses.detach(), leaf.grad


def reference(logits, labels):
    return F.cross_entropy(logits.float(), labels, reduction="none")


@pytest.mark.parametrize("n_rows, vocab", [(300, 8192), (7, 50), (1, 3)])
def test_matches_cross_entropy_with_masked_rows(n_rows, vocab):
    """Several row blocks with a partial last one (300 x 8192), one block, one row; every third
    row masked (weight 0, as the trainer's loss mask makes them), the rest weighted unevenly."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(n_rows, vocab, generator=gen) * 4  # peaked rows as well as flat ones
    labels = torch.randint(0, vocab, (n_rows,), generator=gen)
    weights = torch.rand(n_rows, generator=gen) + 0.1
    weights[1::3] = 0.0

    ours, ours_grad = losses_and_grad(token_cross_entropy, raw, labels, weights)
    ref, ref_grad = losses_and_grad(reference, raw, labels, weights)

    assert ours.dtype == torch.float32 and ours.shape == (n_rows,)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-5, atol=1e-6)
    masked = weights == 0
    assert torch.all(ours_grad[masked] == 0)  # masked tokens give no gradient at all
    assert torch.all(ours_grad[~masked].abs().sum(dim=1) > 0)


def test_bf16_logits_match_the_fp32_upcast():
    """bf16 logits (a GPU under autocast): the loss is computed in fp32, and the gradient is the
    fp32 one rounded once to bf16, as with F.cross_entropy(logits.float())."""
    gen = torch.Generator().manual_seed(1)
    raw = (torch.randn(64, 1000, generator=gen) * 3).bfloat16()
    labels = torch.randint(0, 1000, (64,), generator=gen)
    weights = torch.rand(64, generator=gen)

    ours, ours_grad = losses_and_grad(token_cross_entropy, raw, labels, weights)
    ref, ref_grad = losses_and_grad(reference, raw, labels, weights)

    assert ours.dtype == torch.float32 and ours_grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours_grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-4)


def test_a_second_backward_is_refused():
    """Backward turns the saved logits into the gradient, so a retained graph cannot be reused:
    autograd's version check says so instead of returning a wrong gradient."""
    leaf = torch.randn(4, 10, requires_grad=True)
    losses = token_cross_entropy(leaf * 1.0, torch.tensor([1, 2, 3, 4]))
    losses.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        losses.sum().backward()
