"""Whether a weights or state file is complete, read from its header or zip directory without loading it."""

import fnmatch
import json
import os
import struct
import zipfile
from pathlib import Path


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a complete safetensors file (empty, truncated, bad header), or None. Reads the header."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty (0 bytes)"
    if size < 8:
        return f"{path.name} is {size} bytes: too short for a safetensors header"
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > size - 8:
            return f"{path.name} is truncated ({size} bytes; its header alone needs {length + 8})"
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return f"{path.name} has no valid safetensors header ({type(error).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has no valid safetensors header"
    ends = [entry.get("data_offsets", [0, 0])[1] for key, entry in header.items() if key != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"{path.name} is truncated ({size} bytes of {needed})"
    return None


def torch_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a readable torch.save archive (empty, truncated, not a zip), or None. Reads the zip
    directory, which sits at the end of the file, so a truncated file is found without loading it."""
    path = Path(path)
    if path.stat().st_size == 0:
        return f"{path.name} is empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return f"{path.name} is not a torch.save archive (no data.pkl)"
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"{path.name} is truncated or damaged ({error})"
    return None


def first_damaged_file(folder: str | os.PathLike, torch_patterns: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(name, problem) of the first file of `folder`, by name, that is damaged: a `*.safetensors` file
    (`safetensors_problem`) or a file matching one of `torch_patterns` (`torch_file_problem`); None when all are
    complete."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".safetensors"):
            problem = safetensors_problem(path)
        elif any(fnmatch.fnmatch(name, pattern) for pattern in torch_patterns):
            problem = torch_file_problem(path)
        else:
            continue
        if problem:
            return name, problem
    return None


__all__ = ["first_damaged_file", "safetensors_problem", "torch_file_problem"]
