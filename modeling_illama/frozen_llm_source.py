"""Reading the frozen LLaMA layers' tensors from their source checkpoint, with their sha256 checksum.

The only disk reads of the remote code: a folder saved with `frozen_llm.store_weights=False` holds no frozen
tensors, so loading it (also through `trust_remote_code`, without this package) must read them from
`frozen_llm.source_path`. This file is copied next to saved weights with `modeling_frozen_llm.py`; it imports only
torch, transformers and safetensors (a dependency of transformers).
"""

import hashlib
import json
import os

import torch
from safetensors import safe_open
from transformers import initialization as init


def _open_source(source_path: str):
    """{tensor name: shard file} of a safetensors checkpoint folder (sharded via its index json, or single)."""
    index_path = os.path.join(source_path, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as handle:
            return {name: os.path.join(source_path, shard) for name, shard in json.load(handle)["weight_map"].items()}
    single = os.path.join(source_path, "model.safetensors")
    if os.path.isfile(single):
        with safe_open(single, framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single)
    raise FileNotFoundError(f"no model.safetensors(.index.json) in the frozen-LLM source folder {source_path!r}")


def iter_source_tensors(source_path: str, names: list[str]):
    """Yield `(name, tensor)` for each name, reading one tensor at a time from the (sharded) checkpoint."""
    if not source_path or not os.path.isdir(source_path):
        raise FileNotFoundError(
            f"frozen-LLM source folder {source_path!r} not found. The frozen LLaMA weights of this model are not "
            "stored with it (frozen_llm.store_weights=False): point config.frozen_llm.source_path at the LLaMA "
            "checkpoint, or save the model with store_weights=True."
        )
    files = _open_source(source_path)
    absent = [name for name in names if name not in files]
    if absent:
        raise KeyError(f"the LLaMA checkpoint at {source_path!r} lacks {absent}")
    handles = {}
    for name in names:
        if files[name] not in handles:
            try:  # pread (safetensors >= 0.8) keeps the bytes read out of this process's mappings
                handles[files[name]] = safe_open(files[name], framework="pt", backend="pread")
            except TypeError:
                handles[files[name]] = safe_open(files[name], framework="pt")
        yield name, handles[files[name]].get_tensor(name)


def update_checksum(digest, name: str, tensor: torch.Tensor) -> None:
    """Feed one tensor (name, dtype, shape, raw bytes) into a sha256 digest."""
    digest.update(f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
    digest.update(memoryview(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))


@torch.no_grad()
def copy_source_tensors(
    parameters: dict[str, torch.nn.Parameter],
    names: dict[str, str],
    source_path: str,
    prefix: str,
    expected_checksum: str | None = None,
    only_uninitialized: bool = False,
) -> str:
    """Copy the tensors `names` = {parameter name: name in the checkpoint} from `source_path` into `parameters`
    (cast to their dtype and device), one at a time; return their checksum "sha256:..." over (name without
    `prefix`, dtype, shape, bytes). A given `expected_checksum` must match. With `only_uninitialized`, parameters
    that `from_pretrained` already loaded are left alone."""
    shapes_wrong, digest = [], hashlib.sha256()
    for (local_name, source_name), (_, tensor) in zip(
        names.items(), iter_source_tensors(source_path, list(names.values()))
    ):
        target = parameters[local_name]
        if tuple(tensor.shape) != tuple(target.shape):
            shapes_wrong.append(f"{source_name} {tuple(tensor.shape)} (expected {tuple(target.shape)})")
            continue
        update_checksum(digest, source_name.removeprefix(prefix), tensor)
        value = tensor.to(dtype=target.dtype, device=target.device)
        if only_uninitialized:
            init.copy_(target, value)
        else:
            target.copy_(value)
    if shapes_wrong:
        raise ValueError(f"mis-shaped frozen-LLM tensors in {source_path!r}: {'; '.join(shapes_wrong)}")
    checksum = "sha256:" + digest.hexdigest()
    if expected_checksum and checksum != expected_checksum:
        raise ValueError(
            f"the frozen-LLM tensors read from {source_path!r} have checksum {checksum}, but the model was built "
            f"with {expected_checksum}: the checkpoint at that path is not the one this model was trained with."
        )
    return checksum
