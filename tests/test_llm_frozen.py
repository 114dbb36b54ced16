"""Frozen LLaMA decoder layers as encoder layers (docs/DESIGN.md), on a tiny random LlamaForCausalLM saved as
sharded safetensors: the chain against plain arithmetic and transformers' own LlamaDecoderLayer, training
(adapters move, LLM weights do not, gradients reach earlier blocks), save/reload in both storage modes,
refusals, and the ViT wrapper."""

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from llama_checkpoint import read_all_tensors, save_tiny_llama
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import tiny_illama_config, tiny_vit_classifier
from transformers import (
    AutoModelForImageClassification,
    LlamaConfig,
)
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from modeling_illama import ILlamaForImageClassification, ViTWithFrozenLLMForImageClassification
from modeling_illama.llm import attach_frozen_llm, vit_with_frozen_llm


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"))  # width 96, 4 layers, 4 heads, 2 key/value heads


def tiny_illama(**overrides):
    """The tiny iLLaMA with 3 classes and the derived SwiGLU width (256), seed 0."""
    config = tiny_illama_config(**{"intermediate_size": None, "num_labels": 3, **overrides})
    torch.manual_seed(0)
    return ILlamaForImageClassification(config)


def plain_rms(x, weight, eps):
    return weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def plain_llama_layer(x, w, prefix, eps, heads=4, kv_heads=2):
    """One LLaMA decoder layer written out by hand: no rotary, no mask."""
    h = plain_rms(x, w[prefix + "input_layernorm.weight"], eps)
    q, k, v = (h @ w[prefix + f"self_attn.{n}_proj.weight"].T for n in "qkv")
    batch, tokens, _ = x.shape
    head_dim = q.shape[-1] // heads
    q = q.view(batch, tokens, heads, head_dim).transpose(1, 2)
    k = k.view(batch, tokens, kv_heads, head_dim).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    v = v.view(batch, tokens, kv_heads, head_dim).transpose(1, 2).repeat_interleave(heads // kv_heads, 1)
    attn = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1) @ v
    x = x + attn.transpose(1, 2).reshape(batch, tokens, -1) @ w[prefix + "self_attn.o_proj.weight"].T
    h = plain_rms(x, w[prefix + "post_attention_layernorm.weight"], eps)
    gate, up = h @ w[prefix + "mlp.gate_proj.weight"].T, h @ w[prefix + "mlp.up_proj.weight"].T
    return x + (F.silu(gate) * up) @ w[prefix + "mlp.down_proj.weight"].T


def test_chain_matches_plain_arithmetic_and_transformers_layer(llama_dir):
    model = tiny_illama()
    module = attach_frozen_llm(model, llama_dir, layer_indices=[1, 3])
    weights = read_all_tensors(llama_dir)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        got = module(x)
        h = x @ module.input_projection.weight.T
        for index in (1, 3):
            h = plain_llama_layer(h, weights, f"model.layers.{index}.", eps=1e-6)  # the authors' eps
        expected = plain_rms(h, torch.ones(96), 1e-6) @ module.output_projection.weight.T
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    # transformers' LlamaDecoderLayer with identity rotary (cos 1, sin 0), no mask, not causal
    config = LlamaConfig.from_pretrained(llama_dir)
    config._attn_implementation = "eager"
    config.rms_norm_eps = 1e-6
    reference = LlamaDecoderLayer(config, layer_idx=3)
    reference.load_state_dict(
        {k.removeprefix("model.layers.3."): v for k, v in weights.items() if k.startswith("model.layers.3.")}
    )
    reference.self_attn.is_causal = False
    h = torch.randn(2, 17, 96)
    identity = (torch.ones(2, 17, 24), torch.zeros(2, 17, 24))
    with torch.no_grad():
        torch.testing.assert_close(
            module.layers[1](h), reference(h, attention_mask=None, position_embeddings=identity), rtol=1e-4, atol=1e-5
        )
    # the checkpoint's own eps (1e-5) only on request
    assert module.layers[0].input_layernorm.variance_epsilon == 1e-6
    own = attach_frozen_llm(tiny_illama(), llama_dir, layer_indices=[3], rms_norm_eps=None)
    assert own.layers[0].post_attention_layernorm.variance_epsilon == 1e-5
    # bidirectional: the first token depends on the last one
    h2 = h.clone()
    h2[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(module.layers[0](h)[:, 0], module.layers[0](h2)[:, 0])


def test_frozen_llm_trains_adapters_not_llm(llama_dir):
    model = tiny_illama()
    attach_frozen_llm(model, llama_dir)  # default: the LAST layer
    assert model.config.frozen_llm.layer_indices == [3]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "frozen_llm.layers." in n}
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    assert not any(p is q for p in trainable for n, q in model.named_parameters() if n in frozen)
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if "projection" in n and "frozen" in n}
    first_block = model.illama.layers[0].self_attn.qkv_proj.weight.detach().clone()
    model.train()
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        optimizer.zero_grad()
        loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        assert model.illama.layers[0].self_attn.qkv_proj.weight.grad.abs().sum() > 0
        optimizer.step()
    params = dict(model.named_parameters())
    for name, value in frozen.items():
        assert torch.equal(params[name], value) and params[name].grad is None, name
    for name, value in adapters.items():
        assert not torch.equal(params[name], value), name
    assert not torch.equal(model.illama.layers[0].self_attn.qkv_proj.weight, first_block)


@pytest.mark.parametrize("store_weights", [True, False])
def test_save_reload_identical(llama_dir, tmp_path, store_weights):
    source = tmp_path / "llama"
    shutil.copytree(llama_dir, source)
    model = tiny_illama()
    attach_frozen_llm(model, source, store_weights=store_weights).input_projection.weight.data.mul_(3)
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as handle:
        saved = list(handle.keys())
    assert sum("frozen_llm.layers." in key for key in saved) == (9 if store_weights else 0)
    assert "illama.frozen_llm.input_projection.weight" in saved

    reloaded = ILlamaForImageClassification.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, expected, rtol=0, atol=0)
    for name, param in reloaded.named_parameters():
        assert param.requires_grad == ("frozen_llm.layers." not in name), name
    assert reloaded.illama.frozen_llm.output_norm.weight.eq(1).all()

    if store_weights:  # self-contained: the LLaMA folder is not needed any more
        shutil.rmtree(source)
        again = ILlamaForImageClassification.from_pretrained(tmp_path / "saved")
        with torch.no_grad():
            torch.testing.assert_close(again(pixel_values=pixels).logits, expected, rtol=0, atol=0)
    else:  # reference only: a changed source is refused by its checksum, a missing one by its path
        changed = False
        for shard in os.listdir(source):
            if not shard.endswith(".safetensors"):
                continue
            tensors = load_file(source / shard)
            for key in tensors:
                if key.startswith("model.layers.3."):
                    tensors[key] = tensors[key] + 1e-3
                    changed = True
            save_file(tensors, source / shard, metadata={"format": "pt"})
        assert changed
        with pytest.raises(ValueError, match="checksum"):
            ILlamaForImageClassification.from_pretrained(tmp_path / "saved")
        shutil.rmtree(source)
        with pytest.raises(FileNotFoundError, match="source_path"):
            ILlamaForImageClassification.from_pretrained(tmp_path / "saved")


def test_refuses_missing_or_misshaped_layer_keys(llama_dir, tmp_path):
    weights = read_all_tensors(llama_dir)
    config_json = open(os.path.join(llama_dir, "config.json")).read()
    for case, change in [
        ("missing", lambda w: w.pop("model.layers.3.self_attn.k_proj.weight")),
        ("misshaped", lambda w: w.__setitem__("model.layers.3.mlp.down_proj.weight", torch.zeros(96, 100))),
    ]:
        folder = tmp_path / case
        folder.mkdir()
        (folder / "config.json").write_text(config_json)
        broken = dict(weights)
        change(broken)
        save_file(broken, folder / "model.safetensors")
        pattern = (
            r"lacks model\.layers\.3\.self_attn\.k_proj\.weight"
            if case == "missing"
            else r"model\.layers\.3\.mlp\.down_proj\.weight \(96, 100\) \(expected \(96, 200\)\)"
        )
        with pytest.raises(ValueError, match=pattern):
            attach_frozen_llm(tiny_illama(), folder)
    with pytest.raises(ValueError, match=r"out of range"):
        attach_frozen_llm(tiny_illama(), llama_dir, layer_indices=[4])
    with pytest.raises(ValueError, match="layer_indices"):
        tiny_illama(frozen_llm={"llm_config": {}})


def test_vit_wrapper_auto_class_and_reload(llama_dir, tmp_path):
    vit = tiny_vit_classifier(num_labels=3)
    model = vit_with_frozen_llm(vit, llama_dir, layer_indices=[2]).eval()
    assert isinstance(model, ViTWithFrozenLLMForImageClassification)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        last_block = vit(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        chain = model.vit.frozen_llm(last_block)
        expected = vit.classifier(vit.vit.layernorm(chain)[:, 0])
        got = model(pixel_values=pixels).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, vit(pixel_values=pixels).logits)

    model.save_pretrained(tmp_path / "vit")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "vit")
    assert isinstance(reloaded, ViTWithFrozenLLMForImageClassification)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, got, rtol=0, atol=0)
    assert not any(p.requires_grad for n, p in reloaded.named_parameters() if "frozen_llm.layers." in n)
    assert all(p.requires_grad for n, p in reloaded.named_parameters() if "frozen_llm.layers." not in n)


def test_remote_code_files_are_standalone_and_load(llama_dir, tmp_path):
    """The copied modeling files import only the standard library, torch, transformers, safetensors and
    huggingface_hub (plus single-dot siblings), and a saved folder loads through trust_remote_code."""
    import ast

    import modeling_illama

    allowed = {"hashlib", "json", "os", "torch", "transformers", "safetensors", "huggingface_hub"}
    for file in ("modeling_frozen_llm.py", "modeling_vit_frozen_llm.py"):
        tree = ast.parse(open(os.path.join(os.path.dirname(modeling_illama.__file__), file)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in allowed for alias in node.names), (file, ast.dump(node))
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 1 or node.module.split(".")[0] in allowed, (file, node.module)

    model = tiny_illama()
    attach_frozen_llm(model, llama_dir, store_weights=False)
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "modeling_frozen_llm.py").is_file()
    # the copied code, not this package (which the Auto classes would prefer in this process)
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote_class = get_class_from_dynamic_module(
        "modeling_illama.ILlamaForImageClassification", str(tmp_path / "saved")
    )
    assert remote_class.__module__.startswith("transformers_modules")
    remote = remote_class.from_pretrained(tmp_path / "saved")
    assert not any(p.requires_grad for n, p in remote.named_parameters() if "frozen_llm.layers." in n)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(remote.eval()(pixel_values=pixels).logits, model.eval()(pixel_values=pixels).logits)


def test_attach_cli_on_a_vit_folder(llama_dir, tmp_path):
    from modeling_illama.cli.attach_frozen_llm import main as attach_main

    tiny_vit_classifier(num_labels=3).save_pretrained(tmp_path / "vit")
    code = attach_main(
        [
            "--llama",
            llama_dir,
            "--model",
            str(tmp_path / "vit"),
            "--output-dir",
            str(tmp_path / "out"),
            "--layers",
            "0",
            "3",
            "--reference-only",
        ]
    )
    assert code == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert isinstance(model, ViTWithFrozenLLMForImageClassification)
    assert model.config.frozen_llm.layer_indices == [0, 3] and not model.config.frozen_llm.store_weights
    weights = read_all_tensors(llama_dir)
    assert torch.equal(model.vit.frozen_llm.layers[1].mlp.up_proj.weight, weights["model.layers.3.mlp.up_proj.weight"])
    assert (
        attach_main(["--llama", str(tmp_path), "--model", str(tmp_path / "vit"), "--output-dir", str(tmp_path / "x")])
        == 2
    )


def test_frozen_llm_sub_config_is_saved_typed_and_the_old_dict_form_still_loads(llama_dir, tmp_path):
    import json

    from modeling_illama.configuration_frozen_llm import LLAMA_LAYER_FIELDS, ILlamaFrozenLLMConfig

    model = tiny_illama()
    attach_frozen_llm(model, llama_dir, layer_indices=[1, 3], store_weights=False)
    model.eval().save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())["frozen_llm"]
    # every field written out, the LLaMA layer's own norm epsilon included (so a later default cannot change it)
    assert saved["model_type"] == "illama_frozen_llm" and saved["rms_norm_eps"] == 1e-6  # the authors' default
    assert saved["layer_indices"] == [1, 3] and saved["checksum"].startswith("sha256:")
    assert saved["num_key_value_heads"] == 2 and saved["head_dim"] == 24 and saved["store_weights"] is False
    # the older untyped form of the same settings, as earlier versions wrote it
    old = {key: saved[key] for key in ("layer_indices", "source_path", "source_prefix", "checksum", "store_weights")}
    old.update(llm_config={key: saved[key] for key in LLAMA_LAYER_FIELDS}, output_norm_eps=saved["output_norm_eps"])
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config["frozen_llm"] = old
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    new, legacy = (ILlamaForImageClassification.from_pretrained(tmp_path / name).eval() for name in ("new", "old"))
    assert type(legacy.config.frozen_llm) is ILlamaFrozenLLMConfig
    assert legacy.config.frozen_llm.to_dict() == new.config.frozen_llm.to_dict()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(legacy(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
        torch.testing.assert_close(new(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    with pytest.raises(ValueError, match=r"unknown config.frozen_llm keys \['colour'\]"):
        tiny_illama(frozen_llm={**old, "colour": 1})
    with pytest.raises(ValueError, match=r"lacks \['rms_norm_eps'\]"):
        tiny_illama(
            frozen_llm={**old, "llm_config": {k: v for k, v in old["llm_config"].items() if k != "rms_norm_eps"}}
        )


def test_switching_the_attention_backend_of_a_frozen_llm_model_is_silent_and_exact(llama_dir, caplog):
    model = tiny_illama(mask_style="renormalized").eval()
    attach_frozen_llm(model, llama_dir)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sdpa = model(pixel_values=pixels).logits
        with caplog.at_level("WARNING"):
            model.set_attn_implementation("eager")
        eager = model(pixel_values=pixels).logits
    assert model.config._attn_implementation == "eager"
    assert not [record for record in caplog.records if "sub-config" in record.getMessage()]
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=0)


def test_one_rms_norm_arithmetic_serves_the_vision_blocks_and_the_frozen_llm(llama_dir):
    """The vision blocks use ILlamaRMSNorm, the frozen LLaMA layers Transformers' LlamaRMSNorm (the class of the
    checkpoint they come from): the same arithmetic, so either computes what the other does."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from modeling_illama.modeling_illama import ILlamaRMSNorm

    model = tiny_illama()
    attach_frozen_llm(model, llama_dir)
    norms = {name: module for name, module in model.named_modules() if "norm" in type(module).__name__.lower()}
    assert norms and all(type(module) in (ILlamaRMSNorm, LlamaRMSNorm) for module in norms.values())
    assert "illama.frozen_llm.layers.0.input_layernorm" in norms and "illama.frozen_llm.output_norm" in norms
    assert "frozen_llm.output_norm.weight" not in model.illama.state_dict()  # a constant, never saved
    ours, theirs = ILlamaRMSNorm(96, eps=1e-5), LlamaRMSNorm(96, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 5, 96, generator=torch.Generator().manual_seed(3)).to(dtype)
        assert torch.equal(ours.to(dtype)(x), theirs.to(dtype)(x))
