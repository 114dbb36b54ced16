"""iLLaMA's post-softmax soft mask on fused attention kernels, exactly, with gradients, in every precision.

    out = (softmax(QK^T * scale) * M) V,    M = r + (1 - r) * tril(ones)    (r: the soft-mask rate)

With P = softmax(S) over ALL keys, L_f / L_c the log-sum-exp of the full / causal rows of S = QK^T * scale,
O_f / O_c ordinary full / causal attention outputs, G the output gradient and a_i = G_i . out_i:

    out_i = r * O_f,i + (1 - r) * O_c,i * exp(L_c,i - L_f,i)
    dS_ij = P_ij * (M_ij * G_i . v_j - a_i)
          =           P_ij * (G_i . (r v_j) - G_i . out_i)     every j: full backward, value r * V, output `out`
          + (1 - r) * [j <= i] * P_ij * G_i . v_j              causal backward, output 0, the FULL log-sum-exp
    dV    = r * P^T G + (1 - r) * tril(P)^T G

A flash backward call recomputes its weights as exp(S - lse) from the lse it is given and subtracts
G_i . out_i, so each bracket is ONE standard flash backward call: the causal one with the full row's lse (so it
uses P, not the causal softmax) and a zero output (so no a_i term), the full one with the value scaled by r
(r = 0: zeros) and the true output (so the a_i term over every key). Nothing of size N x N is kept.

Paths (`ILlamaConfig.post_softmax_path`; "auto" picks per device, dtype, sequence length and grad mode):
- "materialised": softmax(S) * M materialised; autograd keeps the N x N weights of every layer.
- "fused": two flash forward calls, two flash backward calls (the formulas above).
- "recompute": the fused forward; the backward recomputes P from Q, K and L_f one layer at a time and runs the
  materialised gradient arithmetic on it (transient N x N, nothing N x N kept between forward and backward).

Precision: the kernels take the model's dtype (bf16/fp16 inputs, fp32 accumulation and fp32 log-sum-exp);
the factor exp(L_c - L_f) and the mask arithmetic r * . + (1 - r) * . run in fp32 on (batch, heads, N, d)
tensors and are rounded once to the model's dtype. No fp32 N x N tensor is made in a bf16/fp16 run.

This file is copied next to saved weights for `trust_remote_code` (imported relatively by modeling_illama.py).
"""

import torch
import torch.nn.functional as F

from .configuration_illama import POST_SOFTMAX_PATHS


# ------------------------------------------------------------------------------------------ device kernels
def _cuda_flash_supported(query: torch.Tensor) -> bool:
    return query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] % 8 == 0 and query.shape[-1] <= 256


def fused_kernels_available(query: torch.Tensor) -> bool:
    """Whether this device/dtype has a fused attention kernel that returns the log-sum-exp (and its backward)."""
    if query.device.type == "cpu":
        return query.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    if query.device.type == "cuda":
        return _cuda_flash_supported(query)
    return False


def flash_forward(query, key, value, is_causal: bool, scaling: float):
    """(output, log-sum-exp in fp32, state for flash_backward) of one fused attention call (no dropout)."""
    if query.device.type == "cuda":
        # unverified: no GPU was available when this was written (see README, performance section)
        output, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, 0.0, is_causal, False, scale=scaling
        )
        return output, lse, (cum_q, cum_k, max_q, max_k, seed, offset)
    output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, 0.0, is_causal, scale=scaling
    )
    return output, lse, None


def flash_backward(grad, query, key, value, output, lse, is_causal: bool, scaling: float, state):
    """(dQ, dK, dV) of one fused attention call, the weights recomputed as exp(S - lse) from the given `lse`."""
    if query.device.type == "cuda":
        cum_q, cum_k, max_q, max_k, seed, offset = state
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            grad,
            query,
            key,
            value,
            output,
            lse,
            cum_q,
            cum_k,
            max_q,
            max_k,
            0.0,
            is_causal,
            seed,
            offset,
            scale=scaling,
        )
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, query, key, value, output, lse, 0.0, is_causal, scale=scaling
    )


# ------------------------------------------------------------------------------------------------- math
def _causal(num_tokens: int, device) -> torch.Tensor:
    return torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device).tril()


def soft_mask_factor(num_tokens: int, rate: float, device=None) -> torch.Tensor:
    """M = r + (1 - r) * tril(ones) in fp32 (N x N, independent of the batch)."""
    return torch.where(_causal(num_tokens, device), 1.0, float(rate)).to(torch.float32)


def _soft_mask_(weights: torch.Tensor, rate: float) -> torch.Tensor:
    """weights *= M in place, the products in fp32 (one rounding to the weights' dtype)."""
    if rate == 0.0:
        return weights.tril_()
    return weights.mul_(soft_mask_factor(weights.shape[-1], rate, weights.device))


def _soft_mask(weights: torch.Tensor, rate: float) -> torch.Tensor:
    """weights * M for autograd, in the weights' dtype (r * w computed in fp32, rounded once)."""
    if rate == 0.0:
        return weights.tril()
    return torch.where(_causal(weights.shape[-1], weights.device), weights, weights * rate)


def _fused_forward(query, key, value, rate: float, scaling: float):
    """(out (batch, heads, N, d) in the input dtype, L_f, flash state) by the log-sum-exp identity."""
    full_out, full_lse, state = flash_forward(query, key, value, False, scaling)
    if rate >= 1.0:
        return full_out, full_lse, state
    causal_out, causal_lse, _ = flash_forward(query, key, value, True, scaling)
    causal_factor = (causal_lse - full_lse).exp_().unsqueeze(-1)  # fp32, <= 1
    if rate == 0.0:
        out = causal_out * causal_factor  # the product in fp32, one rounding below
    else:
        out = torch.addcmul(full_out.float().mul_(rate), causal_out.float(), causal_factor, value=1.0 - rate)
    return out.to(query.dtype), full_lse, state


def _scores(query, key, scaling):
    """QK^T * scale with the scale folded into Q (an N x d product instead of an N x N pass; exact when the
    scale is a power of two, as for head_dim 64)."""
    return torch.matmul(query * scaling, key.transpose(-2, -1))


def _materialised_forward_(query, key, value, rate: float, scaling: float) -> torch.Tensor:
    """(softmax(QK^T * scale) * M) V without autograd, masking in place. The softmax runs in the input dtype
    (fp32 accumulation inside the kernel, one rounding): no fp32 N x N copy in a bf16 run."""
    weights = F.softmax(_scores(query, key, scaling), dim=-1)
    return torch.matmul(_soft_mask_(weights, rate), value)


def post_softmax_materialised_attention(query, key, value, rate: float, scaling: float) -> torch.Tensor:
    """The eager arithmetic with autograd keeping the N x N weights (in the input dtype), or in place without
    gradients. Shape (batch, heads, N, d)."""
    if not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)):
        return _materialised_forward_(query, key, value, rate, scaling)
    weights = F.softmax(_scores(query, key, scaling), dim=-1)
    return torch.matmul(_soft_mask(weights, rate), value)


def _recompute_backward(grad, query, key, value, rate, scaling):
    """dQ, dK, dV of the materialised arithmetic, its weights recomputed here (transient N x N, input dtype).
    softmax's backward, P * (g - sum_j g_j P_j) with g = M * (G V^T), is exactly dS_ij = P_ij (M_ij G_i.v_j - a_i)."""
    weights = F.softmax(_scores(query, key, scaling), dim=-1)
    grad_weights = _soft_mask_(torch.matmul(grad, value.transpose(-2, -1)), rate)
    grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
    del grad_weights
    grad_value = torch.matmul(_soft_mask_(weights, rate).transpose(-2, -1), grad)
    del weights
    grad_query = torch.matmul(grad_scores, key).mul_(scaling)
    grad_key = torch.matmul(grad_scores.transpose(-2, -1), query).mul_(scaling)
    return grad_query, grad_key, grad_value


def _fused_backward(grad, query, key, value, out, full_lse, rate, scaling, state):
    """dQ, dK, dV with two flash backward calls (module docstring)."""
    full_value = value if rate >= 1.0 else (value * rate if rate > 0.0 else torch.zeros_like(value))
    grad_query, grad_key, grad_value = flash_backward(
        grad, query, key, full_value, out, full_lse, False, scaling, state
    )
    if rate >= 1.0:
        return grad_query, grad_key, grad_value
    causal_q, causal_k, causal_v = flash_backward(
        grad, query, key, value, torch.zeros_like(out), full_lse, True, scaling, state
    )
    grad_query = torch.add(grad_query, causal_q, alpha=1.0 - rate)
    grad_key = torch.add(grad_key, causal_k, alpha=1.0 - rate)
    if rate == 0.0:
        grad_value = causal_v
    else:
        grad_value = torch.add(grad_value.float().mul_(rate), causal_v.float(), alpha=1.0 - rate).to(value.dtype)
    return grad_query, grad_key, grad_value


class PostSoftmaxAttentionFunction(torch.autograd.Function):
    """(softmax(QK^T * scale) * M) V keeping only Q, K, V and the output (+ the full rows' log-sum-exp) for the
    backward. forward_path: "fused" or "materialised" (in place, nothing kept); backward_path: "fused" (two
    flash backward calls, needs the fused forward's log-sum-exp) or "recompute" (the weights recomputed)."""

    @staticmethod
    def forward(ctx, query, key, value, rate: float, scaling: float, forward_path: str, backward_path: str):
        full_lse, state = None, None
        if forward_path == "fused":
            out, full_lse, state = _fused_forward(query, key, value, rate, scaling)
        else:
            out = _materialised_forward_(query, key, value, rate, scaling)
        if backward_path == "fused":
            ctx.save_for_backward(query, key, value, out, full_lse)
        else:
            ctx.save_for_backward(query, key, value)
        ctx.rate, ctx.scaling, ctx.backward_path, ctx.state = rate, scaling, backward_path, state
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if ctx.backward_path == "fused":
            query, key, value, out, full_lse = ctx.saved_tensors
            grads = _fused_backward(grad, query, key, value, out, full_lse, ctx.rate, ctx.scaling, ctx.state)
        else:
            query, key, value = ctx.saved_tensors
            grads = _recompute_backward(grad, query, key, value, ctx.rate, ctx.scaling)
        return (*grads, None, None, None, None)


def post_softmax_memory_saving_attention(
    query, key, value, rate: float, scaling: float, forward_path: str = "fused", backward_path: str = "fused"
) -> torch.Tensor:
    """Exact (softmax(QK^T * scale) * M) V, shape (batch, heads, N, d), keeping nothing N x N for the backward.

    query, key, value: (batch, heads, N, d); rate in [0, 1]. The fused forward/backward need a device/dtype
    where `fused_kernels_available`."""
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
    rate, scaling = float(rate), float(scaling)
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return PostSoftmaxAttentionFunction.apply(query, key, value, rate, scaling, forward_path, backward_path)
    if forward_path == "fused":
        return _fused_forward(query, key, value, rate, scaling)[0]
    return _materialised_forward_(query, key, value, rate, scaling)


# --------------------------------------------------------------------------------------- path choice
# The fastest exact path per case, from benchmarks/run_benchmark.py --attention-paths on the CPU named in
# benchmarks/results/attention_paths_cpu.md (re-run it on another CPU: the result differs, e.g. with AMX).
# Rows (device, dtypes, training, min_tokens, path); the first matching row wins. In training "auto" picks
# among the paths that keep nothing N x N between forward and backward (the memory target, see the README).
_CPU_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
AUTO_PATH_RULES = (
    ("cuda", (torch.float16, torch.bfloat16), False, 0, "fused"),
    ("cuda", (torch.float16, torch.bfloat16), True, 0, "fused"),
    ("cpu", (torch.bfloat16, torch.float16), False, 0, "materialised"),
    ("cpu", (torch.float32, torch.float64), False, 256, "fused"),
    ("cpu", (torch.float32, torch.float64), False, 0, "materialised"),
    ("cpu", _CPU_FLOATS, True, 0, "recompute"),
)


def choose_post_softmax_path(query: torch.Tensor, training: bool, requested: str = "auto") -> str:
    """The path that runs: `requested` if forced, else the first AUTO_PATH_RULES row that matches the device,
    dtype, grad mode and sequence length. The materialised path where no fused kernel exists (another device,
    fp32 on CUDA); "fused" forced there is an error."""
    if requested not in POST_SOFTMAX_PATHS:
        raise ValueError(f"post_softmax_path must be one of {POST_SOFTMAX_PATHS}, got {requested!r}.")
    if requested == "fused" and not fused_kernels_available(query):
        raise ValueError(
            f"post_softmax_path='fused' needs a fused attention kernel returning the log-sum-exp, which "
            f"{query.device.type} has not for {query.dtype}: use 'auto', 'recompute' or 'materialised'."
        )
    if requested != "auto":
        return requested
    if not fused_kernels_available(query):
        return "recompute" if training else "materialised"
    for device, dtypes, for_training, min_tokens, path in AUTO_PATH_RULES:
        if query.device.type == device and query.dtype in dtypes and training == for_training:
            if query.shape[-2] >= min_tokens:
                return path
    return "recompute" if training else "materialised"


def post_softmax_attention_paths(query, key, value, rate: float, scaling: float, path: str = "auto") -> torch.Tensor:
    """(softmax(QK^T * scale) * M) V, shape (batch, heads, N, d), on `path` ("auto" resolved here)."""
    training = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
    path = choose_post_softmax_path(query, training, path)
    if path == "materialised":
        return post_softmax_materialised_attention(query, key, value, rate, scaling)
    if path == "fused":
        return post_softmax_memory_saving_attention(query, key, value, rate, scaling, "fused", "fused")
    forward_path = choose_post_softmax_path(query, False)  # "recompute": the faster inference forward
    forward_path = "fused" if forward_path == "fused" else "materialised"
    return post_softmax_memory_saving_attention(query, key, value, rate, scaling, forward_path, "recompute")


def post_softmax_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    soft_mask_rate: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The "sdpa" backend of mask_style="post_softmax": output (batch, tokens, heads, head_dim), no weights.

    Without a mask (r = 1, or the class-token-only query of the last block) this is plain SDPA. Otherwise the
    path is `module.config.post_softmax_path` ("auto": `choose_post_softmax_path`); M is rebuilt from the rate
    (in fp32), so `attention_mask` only says whether there is one."""
    if attention_mask is None:
        return F.scaled_dot_product_attention(query, key, value, scale=scaling).transpose(1, 2).contiguous(), None
    if soft_mask_rate is None:
        raise ValueError("the post-softmax attention needs the soft-mask rate the mask was built with.")
    path = getattr(module.config, "post_softmax_path", "auto")
    out = post_softmax_attention_paths(query, key, value, soft_mask_rate, scaling, path)
    return out.transpose(1, 2).contiguous(), None
