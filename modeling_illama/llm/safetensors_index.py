"""Read single tensors from a (sharded) Hugging Face safetensors checkpoint, one at a time.

A sharded checkpoint is a folder with `model.safetensors.index.json` (whose `weight_map` says which shard
holds each tensor) and the shards; an unsharded one is a folder with `model.safetensors`. Only the
requested tensor is copied into memory: the shards are opened with `safetensors.safe_open` (pread where available), so a
7B checkpoint never has to fit in RAM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import torch
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class SafetensorsCheckpoint:
    """Lazy view of a safetensors checkpoint folder: names, shapes and dtypes come from the headers; a tensor is
    read only when `get_tensor(name)` is called.

    Use it as a context manager (or call `close()`) to release the open shards.
    """

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint folder not found: {path!r}")
        self.path = path
        index_path = os.path.join(path, INDEX_FILE)
        single_path = os.path.join(path, SINGLE_FILE)
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as handle:
                index = json.load(handle)
            if "weight_map" not in index:
                raise ValueError(f"{index_path} has no 'weight_map': not a safetensors index file.")
            self.weight_map: dict[str, str] = dict(index["weight_map"])
        elif os.path.isfile(single_path):
            with safe_open(single_path, framework="pt") as handle:
                self.weight_map = dict.fromkeys(handle.keys(), SINGLE_FILE)
        else:
            found = sorted(os.listdir(path))[:20]
            raise FileNotFoundError(
                f"{path!r} holds neither {INDEX_FILE} nor {SINGLE_FILE} (found: {found}). Save the model with "
                "save_pretrained(..., safe_serialization=True) or download its safetensors files."
            )
        self._handles: dict[str, object] = {}
        self.reads: list[str] = []  # names read so far, in order (for reports and tests)

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._handles.clear()

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def _handle(self, name: str):
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} is not in the checkpoint at {self.path!r}")
        shard = self.weight_map[name]
        if shard not in self._handles:
            shard_path = os.path.join(self.path, shard)
            if not os.path.isfile(shard_path):
                raise FileNotFoundError(f"shard {shard!r} listed for {name!r} is missing from {self.path!r}")
            self._handles[shard] = open_shard(shard_path)
        return self._handles[shard]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape from the shard header, without reading the data."""
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get_tensor(self, name: str) -> torch.Tensor:
        """Copy one tensor into memory (its stored dtype)."""
        tensor = self._handle(name).get_tensor(name)
        self.reads.append(name)
        return tensor

    def iter_tensors(self, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield `(name, tensor)` one at a time; the caller drops each before the next is read."""
        for name in names:
            yield name, self.get_tensor(name)


def open_shard(path: str):
    """`safe_open` reading with pread (safetensors >= 0.8) rather than mmap, so the bytes of tensors already read
    do not stay mapped into this process; older safetensors fall back to mmap."""
    try:
        return safe_open(path, framework="pt", backend="pread")
    except TypeError:
        return safe_open(path, framework="pt")


def read_llama_config(path: str | os.PathLike) -> dict:
    """The `config.json` of a Hugging Face LLaMA checkpoint folder, as a dict."""
    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in the LLaMA checkpoint folder {os.fspath(path)!r}")
    with open(config_path, encoding="utf-8") as handle:
        return json.load(handle)


def find_layer_prefix(checkpoint: SafetensorsCheckpoint) -> str:
    """`"model.layers."` for a LlamaForCausalLM checkpoint, `"layers."` for a bare LlamaModel."""
    for prefix in ("model.layers.", "layers.", "model.language_model.layers.", "language_model.model.layers."):
        if any(name.startswith(prefix) for name in checkpoint.weight_map):
            return prefix
    sample = sorted(checkpoint.weight_map)[:5]
    raise ValueError(
        f"no decoder-layer tensors ('model.layers.N...' or 'layers.N...') in {checkpoint.path!r}; first keys: {sample}"
    )
