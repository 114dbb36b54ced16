"""Frozen LLaMA layers from Meta's original format (params.json + consolidated.NN.pth), the format Pang et al. load
LLaMA-1 7B from: a tiny Meta checkpoint written here from a Hugging Face one (q/k rows un-permuted as Meta stores
them) gives the same model output as the Hugging Face folder, reads only the layer it needs, and joins
model-parallel shards."""

import json
import pickle

import pytest
import torch
from llama_checkpoint import read_all_tensors, save_tiny_llama
from tiny_models import tiny_vit_classifier

from modeling_illama.llm import MetaLlamaCheckpoint, is_meta_checkpoint, vit_with_frozen_llm

HEADS, KV_HEADS, HIDDEN, INNER, LAYERS = 4, 2, 96, 200, 4
META_NAMES = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


class NotATensor:
    """An arbitrary pickled object: torch.load(weights_only=True) must refuse it."""


def unpermute(weight, heads):
    """Inverse of the row permutation in transformers' convert_llama_weights_to_hf.py (Meta's interleaved rotary
    pairs -> half-split): HF = w.view(h, rows/h/2, 2, cols).transpose(1, 2).reshape(rows, cols)."""
    rows, cols = weight.shape
    return weight.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_state(hf_weights):
    state = {"tok_embeddings.weight": hf_weights["model.embed_tokens.weight"], "norm.weight": torch.ones(HIDDEN)}
    for layer in range(LAYERS):
        for hf_name, meta_name in META_NAMES.items():
            tensor = hf_weights[f"model.layers.{layer}.{hf_name}"]
            if hf_name.startswith("self_attn.q_proj"):
                tensor = unpermute(tensor, HEADS)
            elif hf_name.startswith("self_attn.k_proj"):
                tensor = unpermute(tensor, KV_HEADS)
            state[f"layers.{layer}.{meta_name}"] = tensor.clone()
    return state


def write_meta(folder, state, shards=1):
    folder.mkdir()
    params = {"dim": HIDDEN, "n_heads": HEADS, "n_kv_heads": KV_HEADS, "n_layers": LAYERS, "norm_eps": 1e-5}
    (folder / "params.json").write_text(json.dumps(params))
    for rank in range(shards):
        part = {}
        for name, tensor in state.items():
            if name.endswith(("attention_norm.weight", "ffn_norm.weight")) or tensor.ndim == 1:
                part[name] = tensor  # replicated
            else:  # Meta's RowParallelLinear splits the input dimension, ColumnParallelLinear the output one
                dim = 1 if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")) else 0
                part[name] = tensor.chunk(shards, dim=dim)[rank].clone()
        torch.save(part, folder / f"consolidated.{rank:02d}.pth")
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llamas")
    hf = save_tiny_llama(
        root / "hf",
        hidden_size=HIDDEN,
        intermediate_size=INNER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        vocab_size=64,
        rms_norm_eps=1e-5,
    )
    state = meta_state(read_all_tensors(hf))
    return hf, write_meta(root / "meta", state), write_meta(root / "meta-2", state, shards=2), state


def tiny_vit():
    return tiny_vit_classifier(num_labels=2)  # ViTConfig's default two labels


def test_meta_layer_gives_the_hugging_face_output(checkpoints):
    hf, meta, meta_sharded, state = checkpoints
    assert is_meta_checkpoint(meta) and not is_meta_checkpoint(hf)
    vit = tiny_vit()
    pixels = torch.randn(2, 3, 32, 32)
    models = {}
    for name, source in (("hf", hf), ("meta", meta), ("meta-2", meta_sharded)):
        torch.manual_seed(1)  # the same adapter init for all three
        models[name] = vit_with_frozen_llm(vit, source, layer_indices=[3]).eval()
    layers = {name: model.vit.frozen_llm.layers[0] for name, model in models.items()}
    # the Meta q/k rows are in Meta's order (not the HF permutation), everything else is the same tensor
    assert torch.equal(layers["meta"].self_attn.q_proj.weight, state["layers.3.attention.wq.weight"])
    assert not torch.equal(layers["meta"].self_attn.q_proj.weight, layers["hf"].self_attn.q_proj.weight)
    for name in ("self_attn.v_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight"):
        assert torch.equal(layers["meta"].get_parameter(name), layers["hf"].get_parameter(name)), name
    for name, tensor in layers["meta"].state_dict().items():  # joined shards == the single file, bit for bit
        assert torch.equal(layers["meta-2"].state_dict()[name], tensor), name
    # without rotary the permutation of q and k rows inside a head leaves every attention score unchanged
    with torch.no_grad():
        expected = models["hf"](pixel_values=pixels).logits
        torch.testing.assert_close(models["meta"](pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(models["meta-2"](pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-6)
    settings = models["meta"].config.frozen_llm
    assert settings.rms_norm_eps == 1e-6  # the authors' eps, not params.json's 1e-5
    assert settings.intermediate_size == INNER and settings.num_key_value_heads == 2
    assert settings.source_path == str(meta) and settings.checksum.startswith("sha256:")


def test_reads_only_the_requested_layer(checkpoints):
    _, meta, _, _ = checkpoints
    with MetaLlamaCheckpoint(meta) as checkpoint:
        config = checkpoint.llama_config()
        assert (config["hidden_size"], config["num_hidden_layers"], config["rms_norm_eps"]) == (HIDDEN, LAYERS, 1e-5)
        tensor = checkpoint.get_tensor(2, "mlp.up_proj.weight")
        assert tensor.shape == (INNER, HIDDEN)
        assert checkpoint.reads == ["layers.2.feed_forward.w3.weight"]
    from modeling_illama.llm.frozen import MetaLlamaLayers, load_frozen_layers

    model = vit_with_frozen_llm(tiny_vit(), meta, layer_indices=[1])
    with MetaLlamaLayers(meta) as source:
        checksum = load_frozen_layers(model.vit.frozen_llm, source)
        assert source.reads and all(name.startswith("layers.1.") for name in source.reads)
        assert len(source.reads) == 9
    assert checksum == model.config.frozen_llm.checksum


def test_meta_refusals(checkpoints, tmp_path):
    hf, meta, _, state = checkpoints
    with pytest.raises(ValueError, match="Meta's format"):
        vit_with_frozen_llm(tiny_vit(), meta, store_weights=False)
    with pytest.raises(ValueError, match="out of range"):
        vit_with_frozen_llm(tiny_vit(), meta, layer_indices=[LAYERS])
    broken = dict(state)
    broken.pop("layers.3.feed_forward.w3.weight")
    with pytest.raises(ValueError, match=r"lacks layers\.3\.mlp\.up_proj\.weight"):
        vit_with_frozen_llm(tiny_vit(), write_meta(tmp_path / "broken", broken))

    folder = write_meta(tmp_path / "pickled", {})
    torch.save({"layers.0.attention.wq.weight": NotATensor()}, folder / "consolidated.00.pth")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        vit_with_frozen_llm(tiny_vit(), folder)
    (tmp_path / "no-params").mkdir()
    torch.save({}, tmp_path / "no-params" / "consolidated.00.pth")
    with pytest.raises(FileNotFoundError, match="neither"):  # not Meta (no params.json), not HF either
        vit_with_frozen_llm(tiny_vit(), tmp_path / "no-params")
