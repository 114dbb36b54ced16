"""Initialise an iLLaMA from a Hugging Face LLaMA checkpoint by weight selection (docs/DESIGN.md, weight selection).

LLM layer i initialises iLLaMA block i (i < depth). Per layer:

    input_layernorm          -> input_layernorm            (norm1)
    post_attention_layernorm -> post_attention_layernorm   (norm2)
    cat(q_proj, k_proj, v_proj) along rows -> self_attn.qkv_proj   (ONE matrix, sub-selected as a whole)
    o_proj                   -> self_attn.o_proj           (proj)
    gate_proj / up_proj / down_proj -> mlp.gate_proj / mlp.up_proj / mlp.down_proj   (fc1 / fc3 / fc2)

Every dimension is sub-selected independently from teacher size T to student size S: `arange(S) * (T // S)`
when S divides T, else `round(linspace(0, T - 1, S))` in torch float32 with round-half-even (torch.round).
The patch embedding, class token, position table, qkv / o_proj biases, final norm and head keep their
random init.

Only the needed tensors are read, one at a time, from (sharded) safetensors; the fused qkv is never
materialised: its selected rows are gathered from q, k and v in turn.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

from .safetensors_index import SafetensorsCheckpoint, find_layer_prefix

# student name (relative to the base model) -> LLaMA name(s) (relative to the layer prefix), per layer
LAYER_MAPPING: dict[str, tuple[str, ...]] = {
    "input_layernorm.weight": ("input_layernorm.weight",),
    "post_attention_layernorm.weight": ("post_attention_layernorm.weight",),
    "self_attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "self_attn.o_proj.weight": ("self_attn.o_proj.weight",),
    "mlp.gate_proj.weight": ("mlp.gate_proj.weight",),
    "mlp.up_proj.weight": ("mlp.up_proj.weight",),
    "mlp.down_proj.weight": ("mlp.down_proj.weight",),
}


def selection_indices(teacher_size: int, student_size: int) -> torch.Tensor:
    """Indices of the teacher entries kept along one dimension (a LongTensor of length `student_size`)."""
    if student_size > teacher_size:
        raise ValueError(
            f"cannot select {student_size} entries from a teacher dimension of size {teacher_size}: "
            "the student must not be wider than the LLM in any dimension."
        )
    if student_size < 1:
        raise ValueError(f"student dimension must be >= 1, got {student_size}")
    if teacher_size % student_size == 0:
        return torch.arange(student_size) * (teacher_size // student_size)
    return torch.round(torch.linspace(0, teacher_size - 1, student_size, dtype=torch.float32)).long()


def select_along_dims(tensor: torch.Tensor, student_shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform element selection of `tensor` down to `student_shape`, one dimension after the other."""
    if tensor.dim() != len(student_shape):
        raise ValueError(f"teacher tensor has shape {tuple(tensor.shape)}, student expects {tuple(student_shape)}")
    for dim, size in enumerate(student_shape):
        tensor = tensor.index_select(dim, selection_indices(tensor.shape[dim], size))
    return tensor


@dataclass
class SelectedParameter:
    """Where one student parameter came from."""

    name: str
    sources: list[str]
    teacher_shape: tuple[int, ...]
    student_shape: tuple[int, ...]
    branches: list[str]  # per dimension: "stride" (T % S == 0) or "linspace"
    source_dtype: str = ""


@dataclass
class WeightSelectionReport:
    """Which student parameters were initialised from the LLM, and which kept their random init."""

    llama_path: str
    source_dtype: str | None = None
    from_llm: list[SelectedParameter] = field(default_factory=list)
    kept_random: list[str] = field(default_factory=list)
    tensors_read: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "llama_path": self.llama_path,
            "source_dtype": self.source_dtype,
            "from_llm": [
                {
                    "name": item.name,
                    "sources": item.sources,
                    "teacher_shape": list(item.teacher_shape),
                    "student_shape": list(item.student_shape),
                    "branches": item.branches,
                }
                for item in self.from_llm
            ],
            "kept_random": self.kept_random,
            "tensors_read": self.tensors_read,
        }

    def summary(self) -> str:
        numel = sum(int(torch.Size(item.student_shape).numel()) for item in self.from_llm)
        kept = sorted({re.sub(r"\.\d+\.", ".*.", name) for name in self.kept_random})
        return (
            f"{len(self.from_llm)} tensors ({numel:,} values) selected from {self.llama_path} "
            f"({len(self.tensors_read)} LLM tensors read, dtype {self.source_dtype}); "
            f"{len(self.kept_random)} tensors kept their random init: {', '.join(kept)}"
        )


def _student_layer_shapes(config) -> dict[str, tuple[int, ...]]:
    hidden, inner = config.hidden_size, config.intermediate_size
    return {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.qkv_proj.weight": (3 * hidden, hidden),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (inner, hidden),
        "mlp.up_proj.weight": (inner, hidden),
        "mlp.down_proj.weight": (hidden, inner),
    }


def check_llama_checkpoint(checkpoint: SafetensorsCheckpoint, config) -> str:
    """Refuse a checkpoint that lacks a needed tensor or whose shapes cannot feed the student, naming every
    offending tensor; return the layer prefix ("model.layers." or "layers.")."""
    prefix = find_layer_prefix(checkpoint)
    shapes = _student_layer_shapes(config)
    missing, bad_shape = [], []
    for layer in range(config.num_hidden_layers):
        for target, sources in LAYER_MAPPING.items():
            names = [f"{prefix}{layer}.{source}" for source in sources]
            absent = [name for name in names if name not in checkpoint]
            if absent:
                missing.extend(absent)
                continue
            teacher = [checkpoint.shape(name) for name in names]
            student = shapes[target]
            if any(len(shape) != len(student) for shape in teacher) or len({shape[1:] for shape in teacher}) > 1:
                bad_shape.append(
                    f"{', '.join(f'{n} {s}' for n, s in zip(names, teacher))} (expected {len(student)}-D)"
                )
                continue
            fused = (sum(shape[0] for shape in teacher), *teacher[0][1:])
            if any(t < s for t, s in zip(fused, student)):
                bad_shape.append(
                    f"{', '.join(f'{n} {s}' for n, s in zip(names, teacher))} smaller than the student's "
                    f"layers.{layer}.{target} {student}"
                )
    if missing:
        layers = sorted(
            {key[len(prefix) :].split(".")[0] for key in checkpoint.keys() if key.startswith(prefix)}, key=int
        )
        raise ValueError(
            f"the LLaMA checkpoint at {checkpoint.path!r} lacks {len(missing)} tensor(s) needed for a "
            f"{config.num_hidden_layers}-block iLLaMA (it has {len(layers)} layers); missing: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    if bad_shape:
        raise ValueError(f"mis-shaped tensors in the LLaMA checkpoint at {checkpoint.path!r}: {'; '.join(bad_shape)}")
    return prefix


def _select_fused_rows(checkpoint: SafetensorsCheckpoint, names: tuple[str, ...], student_shape) -> torch.Tensor:
    """Sub-select cat(q, k, v) along rows as ONE matrix without building the concatenation: the selected row
    indices over the concatenated rows are split by source, and each source is read and indexed in turn."""
    row_counts = [checkpoint.shape(name)[0] for name in names]
    columns = checkpoint.shape(names[0])[1]
    row_index = selection_indices(sum(row_counts), student_shape[0])
    column_index = selection_indices(columns, student_shape[1])
    pieces, start = [], 0
    for name, rows in zip(names, row_counts):
        local = row_index[(row_index >= start) & (row_index < start + rows)] - start
        source = checkpoint.get_tensor(name)
        pieces.append(source.index_select(0, local).index_select(1, column_index))
        del source
        start += rows
    return torch.cat(pieces, dim=0)


def iter_selected_tensors(checkpoint: SafetensorsCheckpoint, config, prefix: str):
    """Yield `(student name relative to the base model, tensor in the LLM's dtype, SelectedParameter)`, reading
    one LLM tensor at a time."""
    shapes = _student_layer_shapes(config)
    for layer in range(config.num_hidden_layers):
        for target, sources in LAYER_MAPPING.items():
            names = tuple(f"{prefix}{layer}.{source}" for source in sources)
            student_shape = shapes[target]
            if len(names) > 1:
                teacher_shape = (sum(checkpoint.shape(n)[0] for n in names), checkpoint.shape(names[0])[1])
                selected = _select_fused_rows(checkpoint, names, student_shape)
            else:
                teacher_shape = checkpoint.shape(names[0])
                source = checkpoint.get_tensor(names[0])
                selected = select_along_dims(source, student_shape)
                del source
            branches = ["stride" if t % s == 0 else "linspace" for t, s in zip(teacher_shape, student_shape)]
            record = SelectedParameter(
                f"layers.{layer}.{target}",
                list(names),
                teacher_shape,
                student_shape,
                branches,
                str(selected.dtype).removeprefix("torch."),
            )
            yield record.name, selected, record


def student_parameter_names(config) -> list[str]:
    """Parameter names of an `ILlamaModel` for `config`, found by building it on the meta device (no memory)."""
    from ..modeling_illama import ILlamaModel

    with torch.device("meta"):
        model = ILlamaModel(config)
    return [name for name, _ in model.named_parameters()]


def select_weights_from_llama(
    llama_dir: str | os.PathLike, config
) -> tuple[dict[str, torch.Tensor], WeightSelectionReport]:
    """Selected tensors for an `ILlamaConfig`, keyed relative to the base model (`layers.{i}....`, as in
    `ILlamaModel.state_dict()`), in the LLM's dtype, with the report. Non-selected parameters are not included."""
    report = WeightSelectionReport(llama_path=os.fspath(llama_dir))
    state_dict: dict[str, torch.Tensor] = {}
    with SafetensorsCheckpoint(llama_dir) as checkpoint:
        prefix = check_llama_checkpoint(checkpoint, config)
        for name, tensor, record in iter_selected_tensors(checkpoint, config, prefix):
            state_dict[name] = tensor.contiguous()
            report.from_llm.append(record)
            report.source_dtype = record.source_dtype
        report.tensors_read = list(checkpoint.reads)
    report.kept_random = [name for name in student_parameter_names(config) if name not in state_dict]
    return state_dict, report


@torch.no_grad()
def init_model_from_llama(model, llama_dir: str | os.PathLike) -> WeightSelectionReport:
    """Overwrite the selected parameters of an iLLaMA model (ILlamaModel or ILlamaForImageClassification) in place;
    every other parameter keeps its current (random) init. Each selected tensor is copied into the model as soon
    as it is computed, so memory stays near one LLM tensor plus the model."""
    base = model.base_model
    base_prefix = "" if base is model else f"{model.base_model_prefix}."
    parameters = dict(base.named_parameters())
    report = WeightSelectionReport(llama_path=os.fspath(llama_dir))
    selected_names = set()
    with SafetensorsCheckpoint(llama_dir) as checkpoint:
        prefix = check_llama_checkpoint(checkpoint, model.config)
        for name, tensor, record in iter_selected_tensors(checkpoint, model.config, prefix):
            if name not in parameters:
                raise KeyError(f"the model has no parameter {base_prefix}{name} to receive {record.sources}")
            target = parameters[name]
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{base_prefix}{name}: model shape {tuple(target.shape)} != selected {tuple(tensor.shape)}"
                )
            target.copy_(tensor.to(dtype=target.dtype, device=target.device))
            del tensor
            record.name = base_prefix + name
            report.from_llm.append(record)
            report.source_dtype = record.source_dtype
            selected_names.add(record.name)
        report.tensors_read = list(checkpoint.reads)
    report.kept_random = [
        name for name, _ in model.named_parameters() if name not in selected_names and "frozen_llm.layers." not in name
    ]
    return report
