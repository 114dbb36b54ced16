"""CPU inference kernels for iLLaMA's post-softmax soft mask (no autograd), used by the "sdpa" backend.

With r the soft-mask rate and LSE the log-sum-exp of a row's scaled scores (docs/DESIGN.md):
    out_i = r * full_i + (1 - r) * causal_i * exp(LSE_causal_i - LSE_full_i)
so two fused passes (one causal, one full) give the exact result of (softmax(QK^T * scale) * M) V. Below
FUSED_POST_SOFTMAX_MIN_TOKENS keys one materialised pass, scaling and masking in place, is faster.

This file is copied next to saved weights for `trust_remote_code` (a relative import of modeling_illama.py).
"""

import torch
import torch.nn.functional as F

# Below this many keys one materialised pass (QK^T, softmax, mask, PV) is cheaper on CPU than the two fused
# passes. Measured (benchmarks/, 1 thread, fp32, r = 0): N = 197 (224 px), B = 32, 3 heads: 27 ms vs 38 ms;
# N = 577 (384 px), B = 8: 92 ms vs 67 ms (3 heads), 358 ms vs 259 ms (12 heads).
FUSED_POST_SOFTMAX_MIN_TOKENS = 256


def fused_attention_with_lse(query, key, value, is_causal: bool, scaling: float):
    """Fused attention returning (output, log-sum-exp of the scaled scores) - CPU kernel only."""
    output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, is_causal, scale=scaling
    )[:2]
    return output, lse


def post_softmax_inplace_attention(query, key, value, attention_mask, scaling) -> torch.Tensor:
    """The eager arithmetic, (softmax(QK^T * scale) * M) V, scaling and masking in place (no autograd)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)).mul_(scaling)
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype).mul_(attention_mask)
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous()


def post_softmax_cpu_attention(query, key, value, attention_mask, scaling: float, soft_mask_rate: float):
    """(softmax(QK^T * scale) * M) V for the mask M of rate `soft_mask_rate`, shape (batch, tokens, heads, dim).

    At r = 0 the full pass is needed only for its LSE (the CPU kernel insists on equal q/k/v head dims, so it
    cannot be run with a narrower value). r comes as a Python float, so no tensor is read back."""
    if key.shape[2] < FUSED_POST_SOFTMAX_MIN_TOKENS:
        return post_softmax_inplace_attention(query, key, value, attention_mask, scaling)
    if soft_mask_rate is None:
        raise ValueError("the fused post-softmax attention needs the soft-mask rate the mask was built with.")
    causal_out, causal_lse = fused_attention_with_lse(query, key, value, True, scaling)
    full_out, full_lse = fused_attention_with_lse(query, key, value, False, scaling)
    causal_weight = (causal_lse - full_lse).exp_().unsqueeze(-1)
    if soft_mask_rate == 0.0:
        attn_output = causal_out * causal_weight
    else:
        attn_output = torch.addcmul(
            full_out.float() * soft_mask_rate, causal_out.float(), causal_weight, value=1.0 - soft_mask_rate
        )
    return attn_output.to(query.dtype).transpose(1, 2).contiguous()
