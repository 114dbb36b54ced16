"""Experiment-only iLLaMA variant with the class token FIRST (the paper's "attention collapse" row, Table 17).

The released model appends the class token at the END of the sequence (PS [cls]): under the causal mask the last
token sees every patch. Here the class token is PREPENDED and the pooled output is token 0, the ViT layout the
paper starts from. Under the causal mask (r = 0) row 0 attends only to itself, so the class token never sees a
patch. Nothing in `modeling_illama` is changed: this subclass swaps the embedding module and the pooling only.
"""

import torch
from transformers.modeling_outputs import ImageClassifierOutput

from modeling_illama import ILlamaForImageClassification
from modeling_illama.modeling_illama import ILlamaEmbeddings


class ILlamaClassFirstEmbeddings(ILlamaEmbeddings):
    """Class token, then the patch tokens; position row 0 belongs to the class token (trained from scratch)."""

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        if interpolate_pos_encoding:
            raise ValueError("the class-first experiment variant trains and evaluates at one resolution only.")
        patches = self.patch_embeddings(pixel_values)
        if tuple(patches.shape[1:2]) != (self.config.num_patches,):
            raise ValueError(
                f"expected {self.config.num_patches} patches for image_size {self.config.image_size}, "
                f"got {patches.shape[1]}"
            )
        cls_tokens = self.cls_token.expand(patches.shape[0], -1, -1)
        embeddings = torch.cat((cls_tokens, patches), dim=1)
        return self.dropout(embeddings + self.position_embeddings)


class ILlamaClassFirstForImageClassification(ILlamaForImageClassification):
    """iLLaMA classifier whose class token is the FIRST token and whose head reads token 0 (experiment only)."""

    def __init__(self, config):
        super().__init__(config)
        embeddings = ILlamaClassFirstEmbeddings(config)
        embeddings.load_state_dict(self.illama.embeddings.state_dict())  # keep the initialised weights
        self.illama.embeddings = embeddings

    def forward(self, pixel_values=None, labels=None, interpolate_pos_encoding=None, **kwargs):
        # every token is computed (the released model's last-token-only shortcut would pool the wrong token)
        outputs = self.illama(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=False, **kwargs
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0])
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
