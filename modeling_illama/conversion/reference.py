"""A plain functional forward pass of iLLaMA on the authors' state-dict layout.

Written straight from the reference code (docs/DESIGN.md, the network) and independent of the modeling
file: `--verify` compares the converted model against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate_interleaved(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Meta-style RoPE: dims (2i, 2i+1) of each head rotate by t * theta^(-2i/d); x is (B, H, N, d)."""
    _, _, length, head_dim = x.shape
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)
    rotation = torch.polar(torch.ones_like(angles), angles)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], head_dim // 2, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def _attention(x, sd, prefix, num_heads, soft_mask_rate, theta):
    batch, length, dim = x.shape
    qkv = F.linear(x, sd[prefix + "qkv.weight"], sd.get(prefix + "qkv.bias"))
    q, k, v = qkv.reshape(batch, length, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    q, k = _rotate_interleaved(q, theta), _rotate_interleaved(k, theta)
    scores = (q @ k.transpose(-2, -1)) * (dim // num_heads) ** -0.5
    ones = torch.ones(length, length, dtype=x.dtype)
    mask = soft_mask_rate * ones + (1 - soft_mask_rate) * torch.tril(ones)
    out = (scores.softmax(dim=-1) * mask) @ v  # post-softmax mask, no renormalisation
    return F.linear(
        out.transpose(1, 2).reshape(batch, length, dim), sd[prefix + "proj.weight"], sd.get(prefix + "proj.bias")
    )


@torch.no_grad()
def reference_forward(
    state_dict: dict[str, torch.Tensor],
    pixel_values: torch.Tensor,
    num_heads: int,
    soft_mask_rate: float = 0.0,
    eps: float = 1e-6,
    theta: float = 10000.0,
) -> torch.Tensor:
    """Logits of the authors' model for `pixel_values` (B, C, H, W), in the state dict's dtype."""
    sd = state_dict
    patch = sd["patch_embed.proj.weight"]
    x = F.conv2d(pixel_values.to(patch.dtype), patch, sd["patch_embed.proj.bias"], stride=patch.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([x, sd["cls_token"].expand(x.shape[0], -1, -1)], dim=1) + sd["pos_embed"]
    depth = len({key.split(".")[1] for key in sd if key.startswith("blocks.")})
    for i in range(depth):
        block = f"blocks.{i}."
        x = x + _attention(
            _rms_norm(x, sd[block + "norm1.weight"], eps), sd, block + "attn.", num_heads, soft_mask_rate, theta
        )
        h = _rms_norm(x, sd[block + "norm2.weight"], eps)
        x = x + F.linear(
            F.silu(F.linear(h, sd[block + "mlp.fc1.weight"])) * F.linear(h, sd[block + "mlp.fc3.weight"]),
            sd[block + "mlp.fc2.weight"],
        )
    x = _rms_norm(x, sd["norm.weight"], eps)
    return F.linear(x[:, -1], sd["head.weight"], sd["head.bias"])
