"""RMSNorm and SwiGLU as autograd functions that keep less for backward, and their no-gradient paths in place.

Outputs and gradients are bit-identical to the plain expressions (tests/test_fast_paths.py):
`weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype)` (Hugging Face's LlamaRMSNorm arithmetic: the
per-token statistics of a bf16 input are taken in fp32, as the authors' code does) and `silu(gate) * up`.
Training memory: RMSNorm keeps its input and the per-token rsqrt (not a normalised copy), SwiGLU keeps gate and up
(not silu(gate)); the dropped tensors are recomputed in backward (benchmarks/results/training_memory_profile.md).
"""

import torch
import torch.nn.functional as F


def rms_normalise(hidden_states: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x * rsqrt(mean(x^2) + eps) in float32, rsqrt(...)): LlamaRMSNorm's float32 arithmetic, one fp32 buffer."""
    normed = hidden_states.to(torch.float32)
    rstd = torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    if normed is hidden_states:
        return normed * rstd, rstd
    return normed.mul_(rstd), rstd  # the fp32 copy of a bf16/fp16 input is ours to scale in place


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm keeping only its input and the per-token rsqrt for backward (autograd on the plain ops keeps
    a full-size normalised copy too); the normalised values are recomputed there, the gradients are the
    same formulas: dx = rstd * (g w - n * mean(g w * n)), dw = sum(g * n)."""

    @staticmethod
    def forward(ctx, hidden_states, weight, eps):
        normed, rstd = rms_normalise(hidden_states, eps)
        ctx.save_for_backward(hidden_states, weight, rstd)
        return weight * normed.to(hidden_states.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        hidden_states, weight, rstd = ctx.saved_tensors
        normed = hidden_states.to(torch.float32) * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_output * normed.to(hidden_states.dtype)).sum_to_size(weight.shape)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_normed = (grad_output * weight).to(torch.float32)
            mean_term = (grad_normed * normed).mean(-1, keepdim=True)
            grad_input = (grad_normed - normed * mean_term).mul_(rstd).to(hidden_states.dtype)
        return grad_input, grad_weight, None


def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`weight * normalised(x)`; with gradients through `RMSNormFunction`, without them scaled in place."""
    if torch.is_grad_enabled() and (hidden_states.requires_grad or weight.requires_grad):
        return RMSNormFunction.apply(hidden_states, weight, eps)
    normed, _ = rms_normalise(hidden_states, eps)
    normed = normed.to(hidden_states.dtype)
    if normed.dtype == torch.promote_types(normed.dtype, weight.dtype):
        return normed.mul_(weight)  # a fresh buffer: scaled in place (same products as weight * normed)
    return weight * normed


class SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up keeping only gate and up for backward: silu(gate) is recomputed there, so the gradients
    are autograd's own (silu_backward, the two products) with one full-width activation fewer held per block."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_output):
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad_output * up, gate)
        if ctx.needs_input_grad[1]:
            grad_up = grad_output * F.silu(gate)
        return grad_gate, grad_up


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up`; with gradients through `SwiGLUFunction`, without them the product in place on silu's
    output (one full-width temporary fewer; never on gate: a hook may hold the projection's output)."""
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return SwiGLUFunction.apply(gate, up)
    if gate.dtype == torch.promote_types(gate.dtype, up.dtype):
        return F.silu(gate).mul_(up)
    return F.silu(gate) * up
