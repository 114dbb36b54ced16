"""Test helpers: a tiny random LlamaForCausalLM saved as sharded safetensors, and a plain reader of it."""

import os

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

TINY_LLAMA = {
    "hidden_size": 96,
    "intermediate_size": 200,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "rms_norm_eps": 1e-5,
}


def save_tiny_llama(path, **config_fields) -> str:
    """Save a random LLaMA of TINY_LLAMA's fields with `config_fields` applied (seed 0) in several 150 KB shards;
    its norms are made informative (not all ones)."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config_fields}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(path, max_shard_size="150KB")
    return str(path)


def read_all_tensors(path) -> dict:
    """Every tensor of the checkpoint, read the plain way (test side only)."""
    state = {}
    for name in os.listdir(path):
        if name.endswith(".safetensors"):
            state.update(load_file(os.path.join(path, name)))
    return state
