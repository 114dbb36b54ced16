"""Load the authors' checkpoints without ever executing pickled code.

`.pth` files go through `torch.load(weights_only=True)`, whose restricted unpickler only rebuilds tensors
and plain containers; the one extra class allowed is `argparse.Namespace` (the "args" entry of the
authors' training dicts). Anything else in the file stops the load before it can run.
`.safetensors` files hold tensors only and are read with `safetensors`.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

ALLOWED_PICKLE_GLOBALS = (argparse.Namespace,)
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
MODULE_PREFIX = "module."
# torch's weights-only unpickler errors that mean "not a pickle" (random bytes, a truncated file)
NOT_A_PICKLE = re.compile(
    r"Unsupported operand \d+|invalid load key[^\n]*|pickle data was truncated|could not find MARK"
)


class CheckpointError(ValueError):
    """A checkpoint could not be turned into the authors' state-dict layout."""


class UnsafeCheckpointError(CheckpointError):
    """The file carries a pickled object that is not a tensor, a plain container or an argparse.Namespace."""


def load_checkpoint_file(path: str | Path) -> dict:
    """Read `path` (.pth/.pt/.bin or .safetensors) into a Python object, refusing unknown pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy?")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as error:
            raise CheckpointError(
                f"{path} is not a valid safetensors file ({error}): truncated, corrupted, or another format "
                "saved under a .safetensors name"
            ) from None
    try:
        with torch.serialization.safe_globals(list(ALLOWED_PICKLE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if NOT_A_PICKLE.search(str(error)):  # the bytes are not a pickle at all: nothing was refused
            raise CheckpointError(f"{path} is not a PyTorch checkpoint: {_unpickler_reason(error)}") from None
        found = re.search(r"GLOBAL \S+", str(error))
        what = found.group(0).rstrip(".,") if found else _unpickler_reason(error)
        raise UnsafeCheckpointError(
            f"refused to load {path}: it contains a pickled object that is not a tensor, a plain container or an "
            f"argparse.Namespace ({what}). Nothing from the file was executed. If you trust its origin, re-save "
            "only its state dict (a dict of tensors) with torch.save or safetensors and convert that file."
        ) from None
    except (RuntimeError, EOFError, ValueError, LookupError, TypeError, AttributeError, OverflowError) as error:
        # not a zip archive, a truncated archive, or bytes the unpickler misreads (a text file's first byte)
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (torch.save's zip archive or pickle): {_first_line(error)}"
        ) from None


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only error that says what was wrong (its first line is a generic preamble)."""
    text = str(error)
    found = NOT_A_PICKLE.search(text) or re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found is None:
        return _first_line(error)
    return (found.group(1) if found.re.groups else found.group(0)).strip()


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no details'}"


def _is_tensor_dict(value) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value.values())


def extract_state_dict(checkpoint, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict]:
    """Return `(state_dict, extras)` from a bare state dict or an authors' training dict.

    A training dict keeps the weights under "model"; its other entries (epoch, args, ...) come back in
    `extras`. A "module." prefix left by DistributedDataParallel is stripped when every key has it.
    """
    if _is_tensor_dict(checkpoint):
        state_dict, extras = dict(checkpoint), {}
    elif isinstance(checkpoint, Mapping) and _is_tensor_dict(checkpoint.get("model")):
        state_dict = dict(checkpoint["model"])
        extras = {key: value for key, value in checkpoint.items() if key != "model"}
    else:
        if isinstance(checkpoint, Mapping):
            described = f"a dict with keys {sorted(map(str, checkpoint))[:20]}"
            if "model" in checkpoint:
                described += (
                    f" whose 'model' entry is a {type(checkpoint['model']).__name__} that is not a dict of tensors"
                )
        else:
            described = f"a {type(checkpoint).__name__}"
        raise CheckpointError(
            f"unknown checkpoint layout in {source}: found {described}. Expected either a state dict (a dict "
            "whose values are all tensors) or a training dict whose 'model' entry is such a state dict."
        )
    non_string = [key for key in state_dict if not isinstance(key, str)]
    if non_string:
        raise CheckpointError(f"state dict in {source} has non-string keys: {non_string[:10]}")
    if all(key.startswith(MODULE_PREFIX) for key in state_dict):
        state_dict = {key[len(MODULE_PREFIX) :]: value for key, value in state_dict.items()}
    return state_dict, extras


def load_official_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Safely load an authors' checkpoint file and return `(state_dict, extras)`."""
    return extract_state_dict(load_checkpoint_file(path), source=str(path))
