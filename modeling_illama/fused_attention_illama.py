"""iLLaMA's soft mask M and the post-softmax attention on fused kernels, exact, with gradients.

    out = (softmax(S) * M) V,  S = QK^T * scale,  M = r + (1 - r) * tril(ones)  (r: the soft-mask rate)
    out_i = r * O_f,i + (1 - r) * O_c,i * exp(L_c,i - L_f,i)
    dS_ij = P_ij * (G_i . (r v_j) - G_i . out_i) + (1 - r) * [j <= i] * P_ij * G_i . v_j

O_f / O_c: plain full / causal attention, L_f / L_c their rows' log-sum-exp, P = softmax(S), G the output
gradient. A flash backward call recomputes P as exp(S - lse) from the lse it is given, so dS is two of them:
value r * V with the true output, and causal with the FULL lse and a zero output. Nothing N x N is kept.
Paths (`config.post_softmax_path`): "materialised" (autograd keeps softmax(S) * M), "fused" (the identities
above), "recompute" (the backward recomputes P), "auto" (`AUTO_PATH_RULES`). Kernels run in the model's dtype;
exp(L_c - L_f) and the r-weighted sums in fp32, rounded once.
"""

import torch
import torch.nn.functional as F

from .configuration_illama import POST_SOFTMAX_PATHS


def soft_attention_mask(num_tokens: int, rate: float, style: str, dtype: torch.dtype, device=None):
    """THE mask arithmetic of iLLaMA. M = r * ones + (1 - r) * tril(ones): query i sees keys j <= i.

    "post_softmax": M itself (it multiplies softmax(QK^T)); "renormalized": log M, added to the scores before
    the softmax (-inf where M = 0). None when M is all ones (r = 1)."""
    if rate >= 1.0:
        return None
    mask = torch.ones(num_tokens, num_tokens, dtype=torch.float32, device=device).tril_().clamp_(min=float(rate))
    return (mask if style == "post_softmax" else mask.log_()).to(dtype)


def fused_kernels_available(query: torch.Tensor) -> bool:
    """Whether this device/dtype has a fused attention kernel that returns the log-sum-exp (and its backward)."""
    if query.device.type == "cpu":
        return query.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    head_dim = query.shape[-1]
    cuda_flash = query.dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256
    return query.device.type == "cuda" and cuda_flash


def flash_forward(query, key, value, is_causal: bool, scaling: float):
    """(output, log-sum-exp in fp32, state for flash_backward) of one fused attention call (no dropout)."""
    if query.device.type == "cuda":
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, 0.0, is_causal, False, scale=scaling
        )
        return out[0], out[1], out[2:8]
    output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, is_causal, scale=scaling
    )
    return output, lse, None


def flash_backward(grad, query, key, value, output, lse, is_causal: bool, scaling: float, state):
    """(dQ, dK, dV) of one fused attention call, the weights recomputed as exp(S - lse) from the given `lse`."""
    if query.device.type == "cuda":
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            grad, query, key, value, output, lse, *state[:4], 0.0, is_causal, *state[4:], scale=scaling
        )
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, query, key, value, output, lse, 0.0, is_causal, scale=scaling
    )


def _soft_mask_(weights: torch.Tensor, rate: float) -> torch.Tensor:
    """weights *= M in place, the products in fp32 (one rounding to the weights' dtype)."""
    if rate >= 1.0:
        return weights
    if rate == 0.0:
        return weights.tril_()
    return weights.mul_(soft_attention_mask(weights.shape[-1], rate, "post_softmax", torch.float32, weights.device))


def _fused_forward(query, key, value, rate: float, scaling: float):
    """(out (batch, heads, N, d) in the input dtype, L_f, flash state) by the log-sum-exp identity."""
    full_out, full_lse, state = flash_forward(query, key, value, False, scaling)
    if rate >= 1.0:
        return full_out, full_lse, state
    causal_out, causal_lse, _ = flash_forward(query, key, value, True, scaling)
    causal_factor = (causal_lse - full_lse).exp_().unsqueeze(-1)  # fp32, <= 1
    if rate == 0.0:
        out = causal_out * causal_factor
    else:
        out = torch.addcmul(full_out.float().mul_(rate), causal_out.float(), causal_factor, value=1.0 - rate)
    return out.to(query.dtype), full_lse, state


def _scores(query, key, scaling):
    """QK^T * scale with the scale folded into Q (exact when the scale is a power of two, as for head_dim 64)."""
    return torch.matmul(query * scaling, key.transpose(-2, -1))


def _materialised_forward_(query, key, value, rate: float, scaling: float) -> torch.Tensor:
    """(softmax(QK^T * scale) * M) V without autograd, masking in place, the softmax in the input dtype."""
    return torch.matmul(_soft_mask_(F.softmax(_scores(query, key, scaling), dim=-1), rate), value)


def _recompute_backward(grad, query, key, value, rate, scaling):
    """dQ, dK, dV of the materialised arithmetic, its weights recomputed here (transient N x N, input dtype)."""
    weights = F.softmax(_scores(query, key, scaling), dim=-1)
    grad_weights = _soft_mask_(torch.matmul(grad, value.transpose(-2, -1)), rate)
    grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
    del grad_weights
    grad_value = torch.matmul(_soft_mask_(weights, rate).transpose(-2, -1), grad)
    del weights
    grad_query = torch.matmul(grad_scores, key).mul_(scaling)
    return grad_query, torch.matmul(grad_scores.transpose(-2, -1), query).mul_(scaling), grad_value


def _fused_backward(grad, query, key, value, out, full_lse, rate, scaling, state):
    """dQ, dK, dV with two flash backward calls (module docstring)."""
    full_value = value if rate >= 1.0 else (value * rate if rate > 0.0 else torch.zeros_like(value))
    grad_query, grad_key, grad_value = flash_backward(
        grad, query, key, full_value, out, full_lse, False, scaling, state
    )
    if rate >= 1.0:
        return grad_query, grad_key, grad_value
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
        full_lse, state = None, None
        if forward_path == "fused":
            out, full_lse, state = _fused_forward(query, key, value, rate, scaling)
        else:
            out = _materialised_forward_(query, key, value, rate, scaling)
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


def post_softmax_memory_saving_attention(
    query, key, value, rate: float, scaling: float, forward_path: str = "fused", backward_path: str = "fused"
) -> torch.Tensor:
    """Exact (softmax(QK^T * scale) * M) V, shape (batch, heads, N, d), keeping nothing N x N for the backward."""
    if forward_path not in ("fused", "materialised") or backward_path not in ("fused", "recompute"):
        raise ValueError(
            "forward_path must be 'fused' or 'materialised' and backward_path 'fused' or 'recompute', got "
            f"{forward_path!r} and {backward_path!r}."
        )
    if backward_path == "fused" and forward_path != "fused":
        raise ValueError("the fused backward needs the fused forward (it uses the full rows' log-sum-exp).")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"soft-mask rate must lie in [0, 1], got {rate}.")
    if query.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"the soft mask needs as many queries as keys, got {query.shape[-2]} queries and {key.shape[-2]} keys."
        )
    if _needs_grad(query, key, value):
        return PostSoftmaxAttentionFunction.apply(query, key, value, float(rate), scaling, forward_path, backward_path)
    if forward_path == "fused":
        return _fused_forward(query, key, value, float(rate), scaling)[0]
    return _materialised_forward_(query, key, value, float(rate), scaling)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


# The fastest exact path per case, measured by benchmarks/run_benchmark.py --attention-paths (the CPU is named in
# its results). Rows (device, dtypes, training, min_tokens, path), first match wins; training: nothing N x N kept.
# fp32 CPU inference: materialised up to 577 tokens (384 px: 1.16x fused on the AMD EPYC); above 1024 tokens the
# fused path, which holds nothing N x N (a 1024 px input materialised holds heads x 4097^2 floats per image).
_CPU_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUTO_PATH_RULES = (
    ("cuda", (torch.float16, torch.bfloat16), False, 0, "fused"),
    ("cuda", (torch.float16, torch.bfloat16), True, 0, "fused"),
    ("cpu", (torch.bfloat16, torch.float16), False, 0, "materialised"),
    ("cpu", (torch.float32, torch.float64), False, 1025, "fused"),
    ("cpu", (torch.float32, torch.float64), False, 0, "materialised"),
    ("cpu", _CPU_FLOATS, True, 0, "recompute"),
)


def choose_post_softmax_path(query: torch.Tensor, training: bool, requested: str = "auto") -> str:
    """`requested` if forced, else the first AUTO_PATH_RULES row matching the device, dtype, grad mode and N;
    where no fused kernel exists, materialised (inference) or recompute (training); "fused" forced there fails."""
    if requested not in POST_SOFTMAX_PATHS:
        raise ValueError(f"post_softmax_path must be one of {POST_SOFTMAX_PATHS}, got {requested!r}.")
    if requested == "fused" and not fused_kernels_available(query):
        raise ValueError(
            f"post_softmax_path='fused' needs a fused attention kernel returning the log-sum-exp, which "
            f"{query.device.type} has not for {query.dtype}: use 'auto', 'recompute' or 'materialised'."
        )
    if requested != "auto":
        return requested
    for device, dtypes, for_training, min_tokens, path in AUTO_PATH_RULES if fused_kernels_available(query) else ():
        if (query.device.type, training) == (device, for_training) and query.dtype in dtypes:
            if query.shape[-2] >= min_tokens:
                return path
    return "recompute" if training else "materialised"


def post_softmax_attention_paths(query, key, value, rate: float, scaling: float, path: str = "auto") -> torch.Tensor:
    """(softmax(QK^T * scale) * M) V, shape (batch, heads, N, d), on `path` ("auto" resolved here)."""
    path = choose_post_softmax_path(query, _needs_grad(query, key, value), path)
    if path == "materialised" and _needs_grad(query, key, value):
        weights = F.softmax(_scores(query, key, scaling), dim=-1)
        causal = soft_attention_mask(weights.shape[-1], 0.0, "post_softmax", torch.bool, weights.device)
        return torch.matmul(torch.where(causal, weights, weights * rate), value)  # r * w in fp32, rounded once
    if path == "fused":
        return post_softmax_memory_saving_attention(query, key, value, rate, scaling, "fused", "fused")
    inference_forward = "fused" if choose_post_softmax_path(query, False) == "fused" else "materialised"
    forward_path = "materialised" if path == "materialised" else inference_forward
    return post_softmax_memory_saving_attention(query, key, value, rate, scaling, forward_path, "recompute")
