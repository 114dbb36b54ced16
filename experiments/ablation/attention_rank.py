"""Attention-map rank per layer: the paper's measure (Sec. "attention map rank", arXiv 2404.06773).

For one head's attention matrix A (N x N, the mask applied as the model applies it, eager attention) the rank
is the number of singular values needed for their normalised cumulative sum to reach 0.8. The paper reports
about 129 (iLLaMA-T, causal) vs about 81 (ViT-T) for layer 1, head 1 at 224 px (N = 197).
"""

import torch

from modeling_illama.analysis.attention_rank import cumulative_singular_values, rank_at


def effective_rank(attention: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """(..., N, N) attention matrices -> (...) counts k: sum of the k largest singular values / total >= threshold
    (the package's analysis tool, `modeling_illama.analysis.attention_rank`)."""
    return rank_at(cumulative_singular_values(attention), threshold)


@torch.no_grad()
def attention_rank_per_layer(model, pixel_values: torch.Tensor, threshold: float = 0.8) -> list[dict]:
    """Per layer: mean and std of the rank over images and heads, and the rank of head 0 averaged over images.

    Runs the model as it is configured (its current soft-mask rate and mask style) with eager attention.
    """
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        attentions = model.eval()(pixel_values=pixel_values, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(previous)
    if not attentions:
        raise RuntimeError("the model returned no attention maps; this measure needs eager attention weights")
    layers = []
    for index, attention in enumerate(attentions):
        ranks = effective_rank(attention, threshold).float()  # (batch, heads)
        layers.append(
            {
                "layer": index,
                "mean": float(ranks.mean()),
                "std": float(ranks.std()),
                "head0_mean": float(ranks[:, 0].mean()),
                "tokens": int(attention.shape[-1]),
            }
        )
    return layers
