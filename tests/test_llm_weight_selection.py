"""Weight selection from a LLaMA checkpoint (docs/DESIGN.md), checked against an index computation written here
from docs/DESIGN.md (exact rational arithmetic, plain Python loops) on a tiny random LlamaForCausalLM saved as
sharded safetensors."""

import json
import os
import weakref
from fractions import Fraction

import numpy as np
import pytest
import torch
from llama_checkpoint import read_all_tensors, save_tiny_llama
from safetensors.torch import save_file
from tiny_models import tiny_illama_config

from modeling_illama import ILlamaConfig, ILlamaForImageClassification
from modeling_illama.cli.select_weights import main as select_weights_main
from modeling_illama.llm import safetensors_index, select_weights_from_llama, selection_indices
from modeling_illama.llm.weight_selection import init_model_from_llama

LLAMA_LAYER_NAMES = [
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
]


def tiny_student_config(**overrides) -> ILlamaConfig:
    # D 88 -> 64 and qkv rows 264 -> 192: linspace branch; MLP 200 -> 100: the T % S == 0 branch
    return tiny_illama_config(**{"intermediate_size": 100, **overrides})


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    # the tiny LLaMA at width 88 with 4 key/value heads and LlamaConfig's own norm eps
    return save_tiny_llama(tmp_path_factory.mktemp("llama"), hidden_size=88, num_key_value_heads=4, rms_norm_eps=1e-6)


def reference_indices(teacher: int, student: int) -> list[int]:
    """The authors' rule (docs/DESIGN.md "Weight selection"), written independently: stride when S divides T, else round-half-even of the exact
    points i * (T - 1) / (S - 1) (equal to torch float32 for these sizes: no point is within float error of .5)."""
    if teacher % student == 0:
        return [i * (teacher // student) for i in range(student)]
    return [round(Fraction(i * (teacher - 1), student - 1)) for i in range(student)]


def reference_select(matrix: torch.Tensor, shape) -> torch.Tensor:
    if len(shape) == 1:
        return torch.stack([matrix[i] for i in reference_indices(matrix.shape[0], shape[0])])
    rows = reference_indices(matrix.shape[0], shape[0])
    cols = reference_indices(matrix.shape[1], shape[1])
    return torch.tensor([[matrix[r, c].item() for c in cols] for r in rows], dtype=matrix.dtype)


def test_checkpoint_is_sharded(llama_dir):
    index = json.load(open(os.path.join(llama_dir, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 4


def test_index_rule_both_branches():
    assert selection_indices(200, 100).tolist() == list(range(0, 200, 2))
    assert selection_indices(88, 64).tolist() == reference_indices(88, 64)
    assert selection_indices(264, 192).tolist() == reference_indices(264, 192)
    # every tiny/small/base case of LLaMA-2-7B takes the linspace branch ...
    for teacher, student in [(4096, 192), (12288, 576), (11008, 512), (4096, 768), (12288, 2304), (11008, 2048)]:
        assert teacher % student != 0
        assert (
            selection_indices(teacher, student).tolist()
            == torch.round(torch.linspace(0, teacher - 1, student, dtype=torch.float32)).long().tolist()
        )
    # ... and float64 numpy would pick a different index in exactly two places (small and base fused qkv)
    for teacher, student, where in [(12288, 1152, [774]), (12288, 2304, [1860])]:
        float64 = np.round(np.linspace(0, teacher - 1, student)).astype(int)
        assert np.nonzero(selection_indices(teacher, student).numpy() != float64)[0].tolist() == where
    for teacher, student in [(4096, 192), (4096, 384), (12288, 576), (11008, 512), (11008, 1024), (11008, 2048)]:
        float64 = np.round(np.linspace(0, teacher - 1, student)).astype(int)
        assert (selection_indices(teacher, student).numpy() == float64).all()
    with pytest.raises(ValueError, match="wider than the LLM"):
        selection_indices(64, 96)


def test_selected_tensors_equal_independent_indexing(llama_dir):
    config = tiny_student_config()
    state, report = select_weights_from_llama(llama_dir, config)
    llama = read_all_tensors(llama_dir)
    D, H = config.hidden_size, config.intermediate_size
    for layer in range(config.num_hidden_layers):
        src = {name: llama[f"model.layers.{layer}.{name}"] for name in LLAMA_LAYER_NAMES}
        fused = torch.cat(
            [src["self_attn.q_proj.weight"], src["self_attn.k_proj.weight"], src["self_attn.v_proj.weight"]]
        )
        expected = {
            "input_layernorm.weight": reference_select(src["input_layernorm.weight"], (D,)),
            "post_attention_layernorm.weight": reference_select(src["post_attention_layernorm.weight"], (D,)),
            "self_attn.qkv_proj.weight": reference_select(fused, (3 * D, D)),
            "self_attn.o_proj.weight": reference_select(src["self_attn.o_proj.weight"], (D, D)),
            "mlp.gate_proj.weight": reference_select(src["mlp.gate_proj.weight"], (H, D)),
            "mlp.up_proj.weight": reference_select(src["mlp.up_proj.weight"], (H, D)),
            "mlp.down_proj.weight": reference_select(src["mlp.down_proj.weight"], (D, H)),
        }
        for name, value in expected.items():
            assert torch.equal(state[f"layers.{layer}.{name}"], value), name
    assert len(state) == 7 * config.num_hidden_layers
    # the fused matrix is selected as ONE matrix, which is not the same as selecting q, k and v apart
    fused_rows = reference_indices(3 * 88, 3 * D)
    per_part_rows = [part * 88 + row for part in range(3) for row in reference_indices(88, D)]
    assert fused_rows != per_part_rows
    qkv = next(r for r in report.from_llm if r.name == "layers.0.self_attn.qkv_proj.weight")
    assert qkv.teacher_shape == (264, 88) and qkv.branches == ["linspace", "linspace"]
    gate = next(r for r in report.from_llm if r.name == "layers.0.mlp.gate_proj.weight")
    assert gate.branches == ["stride", "linspace"]
    assert sorted(report.kept_random) == sorted(
        [
            "embeddings.cls_token",
            "embeddings.position_embeddings",
            "embeddings.patch_embeddings.projection.weight",
            "embeddings.patch_embeddings.projection.bias",
            "norm.weight",
        ]
        + [f"layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in ("qkv", "o")]
    )


def test_reads_only_needed_tensors_one_at_a_time(llama_dir, monkeypatch):
    """Wrap safe_open: record each tensor read and how many earlier source tensors are still alive at that
    moment (weak references): peak memory is one LLM tensor plus the student."""
    reads, alive_at_read, live = [], [], []
    real_safe_open = safetensors_index.safe_open

    class RecordingHandle:
        def __init__(self, handle):
            self.handle = handle

        def get_slice(self, name):
            return self.handle.get_slice(name)

        def keys(self):
            return self.handle.keys()

        def get_tensor(self, name):
            alive_at_read.append(sum(ref() is not None for ref in live))
            tensor = self.handle.get_tensor(name)
            reads.append(name)
            live.append(weakref.ref(tensor))
            return tensor

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    monkeypatch.setattr(safetensors_index, "safe_open", lambda *a, **k: RecordingHandle(real_safe_open(*a, **k)))
    config = tiny_student_config()
    torch.manual_seed(1)
    model = ILlamaForImageClassification(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = init_model_from_llama(model, llama_dir)

    expected = {f"model.layers.{i}.{name}" for i in range(2) for name in LLAMA_LAYER_NAMES}
    assert sorted(reads) == sorted(expected) and len(reads) == len(expected)  # no embeddings, head, layers 2-3
    assert max(alive_at_read) == 0
    state, _ = select_weights_from_llama(llama_dir, config)
    params = dict(model.named_parameters())
    for name, value in state.items():
        assert torch.equal(params[f"illama.{name}"], value)
    for name in report.kept_random:
        assert torch.equal(params[name], before[name]), name
    assert "classifier.weight" in report.kept_random and len(report.from_llm) == 14


def test_cli_output_loads_with_from_pretrained(llama_dir, tmp_path):
    config_path = tmp_path / "student"
    tiny_student_config().save_pretrained(config_path)
    out = tmp_path / "out"
    code = select_weights_main(
        ["--llama", llama_dir, "--model", str(config_path), "--output-dir", str(out), "--num-labels", "3"]
    )
    assert code == 0
    model = ILlamaForImageClassification.from_pretrained(out)
    assert model.config.num_labels == 3
    state, _ = select_weights_from_llama(llama_dir, tiny_student_config())
    for name, value in state.items():
        assert torch.equal(model.state_dict()[f"illama.{name}"], value)
    report = json.loads((out / "weight_selection_report.json").read_text())
    assert len(report["from_llm"]) == 14 and "classifier.weight" in report["kept_random"]
    assert (
        select_weights_main(["--llama", llama_dir, "--model", "no-such-preset", "--output-dir", str(tmp_path / "x")])
        == 2
    )


def test_refuses_missing_or_misshaped_keys_with_names(llama_dir, tmp_path):
    state = read_all_tensors(llama_dir)
    config_json = open(os.path.join(llama_dir, "config.json")).read()

    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text(config_json)
    save_file(
        {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}, missing / "model.safetensors"
    )
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        select_weights_from_llama(missing, tiny_student_config())

    small = tmp_path / "small"
    small.mkdir()
    (small / "config.json").write_text(config_json)
    bad = dict(state)
    bad["model.layers.0.self_attn.o_proj.weight"] = torch.zeros(88, 40)
    save_file(bad, small / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.o_proj\.weight \(88, 40\)"):
        select_weights_from_llama(small, tiny_student_config())

    with pytest.raises(ValueError, match=r"model\.layers\.4\."):  # the LLM has 4 layers, the student 5
        select_weights_from_llama(llama_dir, tiny_student_config(num_hidden_layers=5))
    with pytest.raises(FileNotFoundError, match="neither"):
        select_weights_from_llama(tmp_path, tiny_student_config())
