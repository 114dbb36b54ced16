"""Read single decoder layers from a LLaMA checkpoint in Meta's original format.

Meta's release (LLaMA-1, LLaMA-2, Llama 3) is a folder with `params.json` and one `consolidated.NN.pth` per
model-parallel rank (one file for 7B/8B). Pang et al. (arXiv 2310.12973) take layer 31 of LLaMA-1 7B from
`consolidated.00.pth`. The files are opened with `torch.load(weights_only=True, mmap=True)`: the tensors stay on
disk until touched, and only the requested layer's tensors are copied into memory.

Key names are translated to those of transformers' `LlamaDecoderLayer`:

    attention.wq / wk / wv / wo    ->  self_attn.q_proj / k_proj / v_proj / o_proj
    feed_forward.w1 / w3 / w2      ->  mlp.gate_proj / up_proj / down_proj
    attention_norm / ffn_norm      ->  input_layernorm / post_attention_layernorm

Hugging Face's conversion script also permutes the rows of wq and wk inside every head (Meta's interleaved rotary
pairs -> transformers' half-split layout). The frozen layer is applied WITHOUT rotary embedding, and the same
permutation of the q and k rows of a head leaves every q.k product unchanged, so the Meta tensors are used as
they are (tests/test_llm_meta_checkpoint.py checks that both formats give the same output).

Model-parallel shards are joined as Meta's `ColumnParallelLinear` / `RowParallelLinear` split them: wq, wk, wv,
w1, w3 along rows, wo, w2 along columns; the norms are replicated.
"""

from __future__ import annotations

import json
import os
import re

import torch

PARAMS_FILE = "params.json"
META_TO_HF = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
HF_TO_META = {hf: meta for meta, hf in META_TO_HF.items()}
ROW_PARALLEL = ("attention.wo.weight", "feed_forward.w2.weight")  # split along dim 1 across shards
REPLICATED = ("attention_norm.weight", "ffn_norm.weight")
SHARD_PATTERN = re.compile(r"consolidated\.(\d+)\.pth$")


def is_meta_checkpoint(path: str | os.PathLike) -> bool:
    """A folder with `params.json` and at least one `consolidated.NN.pth`."""
    path = os.fspath(path)
    return (
        os.path.isdir(path)
        and os.path.isfile(os.path.join(path, PARAMS_FILE))
        and any(SHARD_PATTERN.match(name) for name in os.listdir(path))
    )


class MetaLlamaCheckpoint:
    """Lazy view of a Meta-format LLaMA folder; `get_tensor(layer, hf_name)` copies one (joined) tensor."""

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        if not is_meta_checkpoint(path):
            found = sorted(os.listdir(path))[:20] if os.path.isdir(path) else "no such folder"
            raise FileNotFoundError(
                f"{path!r} is not a Meta-format LLaMA checkpoint (expected params.json and consolidated.00.pth; "
                f"found: {found})"
            )
        self.path = path
        with open(os.path.join(path, PARAMS_FILE), encoding="utf-8") as handle:
            self.params = json.load(handle)
        missing = [key for key in ("dim", "n_heads", "n_layers") if key not in self.params]
        if missing:
            raise ValueError(f"{path}/{PARAMS_FILE} lacks {missing}: not the params.json of a Meta LLaMA release")
        shards = sorted(
            (int(match.group(1)), name) for name in os.listdir(path) if (match := SHARD_PATTERN.match(name))
        )
        if [rank for rank, _ in shards] != list(range(len(shards))):
            raise ValueError(f"{path!r}: model-parallel shards must be consolidated.00.pth .. NN without gaps")
        self.shard_files = [os.path.join(path, name) for _, name in shards]
        self._states: list[dict] | None = None
        self.reads: list[str] = []  # Meta names read so far (for reports and tests)

    def __enter__(self) -> MetaLlamaCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._states = None

    def _shards(self) -> list[dict]:
        if self._states is None:
            self._states = [
                torch.load(file, map_location="cpu", weights_only=True, mmap=True) for file in self.shard_files
            ]
        return self._states

    @property
    def num_layers(self) -> int:
        return int(self.params["n_layers"])

    @staticmethod
    def meta_name(layer: int, hf_name: str) -> str:
        if hf_name not in HF_TO_META:
            raise KeyError(f"{hf_name!r} is not a tensor of a Meta LLaMA decoder layer (no biases in that format)")
        return f"layers.{layer}.{HF_TO_META[hf_name]}"

    def __contains__(self, key: tuple[int, str]) -> bool:
        layer, hf_name = key
        return hf_name in HF_TO_META and all(self.meta_name(layer, hf_name) in state for state in self._shards())

    def _join(self, name: str, parts: list[torch.Tensor]) -> torch.Tensor:
        suffix = name.split(".", 2)[2]
        if len(parts) == 1 or suffix in REPLICATED:
            return parts[0]
        return torch.cat(parts, dim=1 if suffix in ROW_PARALLEL else 0)

    def shape(self, layer: int, hf_name: str) -> tuple[int, ...]:
        name = self.meta_name(layer, hf_name)
        parts = [state[name] for state in self._shards()]
        if len(parts) == 1 or name.split(".", 2)[2] in REPLICATED:
            return tuple(parts[0].shape)
        dim = 1 if name.split(".", 2)[2] in ROW_PARALLEL else 0
        shape = list(parts[0].shape)
        shape[dim] = sum(part.shape[dim] for part in parts)
        return tuple(shape)

    def get_tensor(self, layer: int, hf_name: str) -> torch.Tensor:
        """One tensor of one layer, joined across shards, copied out of the mapped files."""
        name = self.meta_name(layer, hf_name)
        absent = [file for file, state in zip(self.shard_files, self._shards()) if name not in state]
        if absent:
            raise KeyError(f"{name!r} is missing from {absent}")
        self.reads.append(name)
        return self._join(name, [state[name] for state in self._shards()]).clone()

    def llama_config(self) -> dict:
        """The `config.json` fields of this model as transformers' LlamaConfig names them (the MLP width is read
        from the stored w1 tensor rather than re-derived from multiple_of / ffn_dim_multiplier)."""
        params = self.params
        heads = int(params["n_heads"])
        return {
            "hidden_size": int(params["dim"]),
            "intermediate_size": self.shape(0, "mlp.gate_proj.weight")[0],
            "num_attention_heads": heads,
            "num_key_value_heads": int(params.get("n_kv_heads") or heads),
            "num_hidden_layers": self.num_layers,
            "rms_norm_eps": float(params.get("norm_eps", 1e-6)),
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
        }


__all__ = ["MetaLlamaCheckpoint", "is_meta_checkpoint"]
