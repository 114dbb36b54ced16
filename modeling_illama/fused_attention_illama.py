"""iLLaMA's soft mask M and the post-softmax attention on fused kernels, exact, with gradients.

    out = (softmax(S) * M) V,  S = QK^T * scale,  M = r + (1 - r) * tril(ones)  (r: the soft-mask rate)
    out_i = r * O_f,i + (1 - r) * O_c,i * exp(L_c,i - L_f,i)
    dS_ij = P_ij * (G_i . (r v_j) - G_i . out_i) + (1 - r) * [j <= i] * P_ij * G_i . v_j

O_f / O_c: plain full / causal attention, L_f / L_c their rows' log-sum-exp, P = softmax(S), G the output
gradient. A flash backward call recomputes P as exp(S - lse) from the lse it is given, so dS is two of them:
value r * V with the true output, and causal with the FULL lse and a zero output. Nothing N x N is kept.
Paths: "materialised" (autograd keeps softmax(S) * M), "fused" (the identities above), "recompute" (the
backward recomputes P). Kernels run in the model's dtype; exp(L_c - L_f) and r-weighted sums in fp32.
"""

import torch
import torch.nn.functional as F

from .configuration_illama import POST_SOFTMAX_PATHS

aten = torch.ops.aten

_kept_masks = {}  # (N, style, dtype, device) -> (r, M): the last mask of each kind


def soft_attention_mask(num_tokens: int, rate: float, style: str, dtype: torch.dtype, device=None, keep=True):
    """THE mask arithmetic of iLLaMA: M = r * ones + (1 - r) * tril(ones) ("post_softmax": it multiplies the
    softmax) or log M ("renormalized": added to the scores); None when r = 1. With `keep`, kept until r changes or
    `release_soft_attention_masks` drops it; traced graphs (torch.compile, export) build it in the graph."""
    if rate >= 1.0:
        return None
    slot, rate = (num_tokens, style, dtype, device), float(rate)
    keep = keep and not torch.compiler.is_compiling()
    kept = _kept_masks.get(slot) if keep else None
    if kept is not None and kept[0] == rate:
        return kept[1]
    with torch.inference_mode(False):  # a mask kept from an inference_mode call also serves training
        mask = torch.ones(num_tokens, num_tokens, dtype=torch.float32, device=device).tril_().clamp_(min=rate)
        mask = (mask if style == "post_softmax" else mask.log_()).to(dtype)
    if keep:
        _kept_masks[slot] = (rate, mask)
    return mask


def release_soft_attention_masks(keep_tokens: int = 0):
    """Drop the kept masks of more than `keep_tokens` tokens (ILlamaModel keeps those of its own resolution)."""
    if not torch.compiler.is_compiling():
        for slot in [slot for slot in list(_kept_masks) if slot[0] > keep_tokens]:  # list(): atomic
            _kept_masks.pop(slot, None)


def flash_forward(query, key, value, is_causal: bool, scaling: float):
    """(output, log-sum-exp in fp32, state for flash_backward) of one fused attention call (no dropout)."""
    if query.device.type == "cuda":
        out = aten._scaled_dot_product_flash_attention(query, key, value, 0.0, is_causal, False, scale=scaling)
        return out[0], out[1], out[2:8]
    output, lse = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, is_causal, scale=scaling)
    return output, lse, None


def flash_backward(grad, query, key, value, output, lse, is_causal: bool, scaling: float, state):
    """(dQ, dK, dV) of one fused attention call, the weights recomputed as exp(S - lse) from the given `lse`."""
    if query.device.type == "cuda":
        return aten._scaled_dot_product_flash_attention_backward(
            grad, query, key, value, output, lse, *state[:4], 0.0, is_causal, *state[4:], scale=scaling
        )
    return aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, query, key, value, output, lse, 0.0, is_causal, scale=scaling
    )


def _soft_mask_(weights: torch.Tensor, rate: float) -> torch.Tensor:
    """weights *= M in place, the products in fp32 (one rounding to the weights' dtype)."""
    if rate >= 1.0:
        return weights
    if rate == 0.0:
        return weights.tril_()
    mask = soft_attention_mask(weights.shape[-1], rate, "post_softmax", torch.float32, weights.device, keep=False)
    return weights.mul_(mask)  # not kept: the recompute backward runs after the forward released large masks


def _softmax_scores(query, key, scaling):
    """softmax(QK^T * scale) in the input dtype, the scale folded into Q (exact for a power of two, as d = 64)."""
    return F.softmax(torch.matmul(query * scaling, key.transpose(-2, -1)), dim=-1)


def _fused_forward(query, key, value, rate: float, scaling: float):
    """(out (batch, heads, N, d) in the input dtype, L_f, flash state) by the log-sum-exp identity."""
    full_out, full_lse, state = flash_forward(query, key, value, False, scaling)
    causal_out, causal_lse, _ = flash_forward(query, key, value, True, scaling)
    causal_factor = (causal_lse - full_lse).exp_().unsqueeze(-1)  # fp32, <= 1
    if rate == 0.0:
        out = causal_out * causal_factor
    else:
        out = torch.addcmul(full_out.float().mul_(rate), causal_out.float(), causal_factor, value=1.0 - rate)
    return out.to(query.dtype), full_lse, state


def _recompute_backward(grad, query, key, value, rate, scaling):
    """dQ, dK, dV of the materialised arithmetic, its weights recomputed here (transient N x N, input dtype)."""
    weights = _softmax_scores(query, key, scaling)
    grad_weights = _soft_mask_(torch.matmul(grad, value.transpose(-2, -1)), rate)
    grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
    del grad_weights
    grad_value = torch.matmul(_soft_mask_(weights, rate).transpose(-2, -1), grad)
    del weights
    grad_query = torch.matmul(grad_scores, key).mul_(scaling)
    return grad_query, torch.matmul(grad_scores.transpose(-2, -1), query).mul_(scaling), grad_value


def _fused_backward(grad, query, key, value, out, full_lse, rate, scaling, state):
    """dQ, dK, dV with two flash backward calls (module docstring)."""
    full_value = value * rate if rate > 0.0 else torch.zeros_like(value)
    grad_query, grad_key, grad_value = flash_backward(
        grad, query, key, full_value, out, full_lse, False, scaling, state
    )
    zeros = torch.zeros_like(out)
    causal_q, causal_k, causal_v = flash_backward(grad, query, key, value, zeros, full_lse, True, scaling, state)
    grad_query = torch.add(grad_query, causal_q, alpha=1.0 - rate)
    grad_key = torch.add(grad_key, causal_k, alpha=1.0 - rate)
    if rate != 0.0:
        causal_v = torch.add(grad_value.float().mul_(rate), causal_v.float(), alpha=1.0 - rate).to(value.dtype)
    return grad_query, grad_key, causal_v


class PostSoftmaxAttentionFunction(torch.autograd.Function):
    """Keeps only Q, K, V (+ the output and the full rows' log-sum-exp for the fused backward)."""

    @staticmethod
    def forward(ctx, query, key, value, rate: float, scaling: float, forward_path: str, backward_path: str):
        if backward_path == "fused" and forward_path != "fused":
            raise ValueError("the fused backward needs the fused forward (it uses the full rows' log-sum-exp).")
        out, full_lse, state = _forward(query, key, value, rate, scaling, forward_path)
        saved = (query, key, value, out, full_lse) if backward_path == "fused" else (query, key, value)
        ctx.save_for_backward(*saved)
        ctx.rate, ctx.scaling, ctx.backward_path, ctx.state = rate, scaling, backward_path, state
        return out

    @staticmethod
    def backward(ctx, grad):
        grad, arguments = grad.contiguous(), (*ctx.saved_tensors, ctx.rate, ctx.scaling)
        if ctx.backward_path == "fused":
            return (*_fused_backward(grad, *arguments, ctx.state), None, None, None, None)
        return (*_recompute_backward(grad, *arguments), None, None, None, None)


def _forward(query, key, value, rate: float, scaling: float, forward_path: str):
    """(out, L_f, flash state) of the fused forward, or (out, None, None) materialised without autograd."""
    if forward_path == "fused":
        return _fused_forward(query, key, value, rate, scaling)
    return torch.matmul(_soft_mask_(_softmax_scores(query, key, scaling), rate), value), None, None


# The fastest exact path per case, measured by benchmarks/run_benchmark.py --attention-paths (the CPU is named in
# its results). Rows (device, dtypes, training, min_tokens, path), first match wins; training: nothing N x N kept.
# fp32 CPU inference: materialised up to 577 tokens (384 px: 1.16x fused on the AMD EPYC), fused from 1025 tokens.
_CPU_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUTO_PATH_RULES = (
    ("cuda", (torch.float16, torch.bfloat16), None, 0, "fused"),  # None: inference and training
    ("cpu", (torch.bfloat16, torch.float16), False, 0, "materialised"),
    ("cpu", (torch.float32, torch.float64), False, 1025, "fused"),
    ("cpu", (torch.float32, torch.float64), False, 0, "materialised"),
    ("cpu", _CPU_FLOATS, True, 0, "recompute"),
)


def choose_post_softmax_path(query: torch.Tensor, training: bool, requested: str = "auto") -> str:
    """`requested` if forced, else the first AUTO_PATH_RULES row matching the device, dtype, grad mode and N;
    without a fused kernel (CPU floats; CUDA flash: fp16 / bf16, head_dim % 8 == 0 and <= 256), materialised
    (inference) or recompute (training), and "fused" forced fails."""
    if requested not in POST_SOFTMAX_PATHS:
        raise ValueError(f"post_softmax_path must be one of {POST_SOFTMAX_PATHS}, got {requested!r}.")
    device, dtype, head_dim = query.device.type, query.dtype, query.shape[-1]
    cuda_flash = dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256
    fused = dtype in _CPU_FLOATS if device == "cpu" else device == "cuda" and cuda_flash
    if requested == "fused" and not fused:
        raise ValueError(
            f"post_softmax_path='fused' needs a fused attention kernel returning the log-sum-exp, which "
            f"{device} has not for {dtype}: use 'auto', 'recompute' or 'materialised'."
        )
    for rule_device, dtypes, for_training, min_tokens, path in AUTO_PATH_RULES if fused else ():
        if requested == "auto" and rule_device == device and for_training in (None, training) and dtype in dtypes:
            if query.shape[-2] >= min_tokens:
                return path
    return requested if requested != "auto" else "recompute" if training else "materialised"


def post_softmax_attention_paths(query, key, value, rate: float, scaling: float, path: str = "auto") -> torch.Tensor:
    """Exact (softmax(QK^T * scale) * M) V, shape (batch, heads, N, d), on `path` ("auto" resolved here); only
    "materialised" keeps N x N tensors for the backward."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"soft-mask rate must lie in [0, 1], got {rate}.")
    if query.shape[-2] != key.shape[-2]:
        raise ValueError(f"the soft mask needs as many queries as keys, got {query.shape[-2]} and {key.shape[-2]}.")
    training, rate = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)), float(rate)
    path = choose_post_softmax_path(query, training, path)
    if path == "materialised" and training:  # autograd keeps the weights; r * w in the weights' dtype
        weights = _softmax_scores(query, key, scaling)
        causal = soft_attention_mask(weights.shape[-1], 0.0, "post_softmax", torch.bool, weights.device)
        return torch.matmul(torch.where(causal, weights, weights * rate), value)
    forward_path = choose_post_softmax_path(query, False) if path == "recompute" else path
    if training:  # backward "fused" (two flash calls) or "recompute"
        return PostSoftmaxAttentionFunction.apply(query, key, value, rate, scaling, forward_path, path)
    return _forward(query, key, value, rate, scaling, forward_path)[0]
