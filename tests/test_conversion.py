"""Authors' checkpoints -> Hugging Face folders and back, on random authors'-layout state dicts.

Logits are checked against `plain_logits`, a float64 re-derivation of the authors' forward pass written here
from the facts in docs/DESIGN.md (no code shared with the package).
"""

import argparse
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from design_sizes import DESIGN_SIZES
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline

from modeling_illama.cli.convert import main as convert_main
from modeling_illama.cli.export_official import main as export_main
from modeling_illama.conversion import (
    RELEASED_VARIANTS,
    CheckpointError,
    UnsafeCheckpointError,
    VerificationError,
    convert_checkpoint,
    count_parameters,
    detect_config,
    export_official,
    render_card,
)
from modeling_illama.conversion import convert as convert_module

REPO_ROOT = Path(__file__).resolve().parent.parent
DIM, DEPTH, PATCH, MLP, CLASSES = 128, 2, 16, 384, 10  # MLP deliberately not the 8D/3 rule: read from shapes


def authors_state_dict(dim=DIM, depth=DEPTH, patch=PATCH, image=32, mlp=MLP, classes=CLASSES, seed=0, factory=None):
    """The authors' keys and shapes (docs/DESIGN.md, released checkpoints), random values (or `factory(shape)`)."""
    generator = torch.Generator().manual_seed(seed)
    make = factory or (lambda *shape: torch.randn(*shape, generator=generator) * 0.1)
    sd = {
        "cls_token": make(1, 1, dim),
        "pos_embed": make(1, (image // patch) ** 2 + 1, dim),
        "patch_embed.proj.weight": make(dim, 3, patch, patch),
        "patch_embed.proj.bias": make(dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = make(dim) + 1 if factory is None else make(dim)
        sd[b + "attn.qkv.weight"] = make(3 * dim, dim)
        sd[b + "attn.qkv.bias"] = make(3 * dim)
        sd[b + "attn.proj.weight"] = make(dim, dim)
        sd[b + "attn.proj.bias"] = make(dim)
        sd[b + "norm2.weight"] = make(dim) + 1 if factory is None else make(dim)
        sd[b + "mlp.fc1.weight"] = make(mlp, dim)
        sd[b + "mlp.fc2.weight"] = make(dim, mlp)
        sd[b + "mlp.fc3.weight"] = make(mlp, dim)
    sd["norm.weight"] = make(dim) + 1 if factory is None else make(dim)
    sd["head.weight"] = make(classes, dim)
    sd["head.bias"] = make(classes)
    return sd


def plain_logits(sd, pixels, heads):
    """float64 forward of the authors' model at soft-mask rate 0 (causal, mask applied after the softmax)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = pixels.double()
    batch = x.shape[0]
    weight = sd["patch_embed.proj.weight"]
    dim, channels, patch, _ = weight.shape
    tiles = x.unfold(2, patch, patch).unfold(3, patch, patch)  # B, C, rows, cols, p, p
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(batch, -1, channels * patch * patch)  # raster order
    tokens = tiles @ weight.reshape(dim, -1).T + sd["patch_embed.proj.bias"]
    tokens = torch.cat([tokens, sd["cls_token"].expand(batch, 1, dim)], dim=1) + sd["pos_embed"]
    n = tokens.shape[1]
    d = dim // heads

    def rms(t, w):
        return w * t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-6)

    def rope(t):  # pairs (2i, 2i+1) rotate by position * 10000^(-2i/d)
        angle = torch.arange(n, dtype=torch.float64)[:, None] * 10000.0 ** (-torch.arange(0, d, 2).double() / d)
        even, odd = t[..., 0::2], t[..., 1::2]
        return torch.stack(
            [even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], -1
        ).flatten(-2)

    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        h = rms(tokens, sd[b + "norm1.weight"])
        qkv = h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]
        q, k, v = (qkv[..., j * dim : (j + 1) * dim].reshape(batch, n, heads, d).transpose(1, 2) for j in range(3))
        probs = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = (probs * torch.ones(n, n).tril().double()) @ v
        tokens = (
            tokens
            + out.transpose(1, 2).reshape(batch, n, dim) @ sd[b + "attn.proj.weight"].T
            + sd[b + "attn.proj.bias"]
        )
        h = rms(tokens, sd[b + "norm2.weight"])
        gate, up = h @ sd[b + "mlp.fc1.weight"].T, h @ sd[b + "mlp.fc3.weight"].T
        tokens = tokens + (gate * torch.sigmoid(gate) * up) @ sd[b + "mlp.fc2.weight"].T
    return rms(tokens, sd["norm.weight"])[:, -1] @ sd["head.weight"].T + sd["head.bias"]


def hf_logits(folder, pixels, implementation):
    model = AutoModelForImageClassification.from_pretrained(
        folder, trust_remote_code=True, attn_implementation=implementation, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return model(pixel_values=pixels).logits.double()


def assert_no_leftovers(parent: Path, keep: set[str]):
    assert {p.name for p in parent.iterdir()} == keep, "a temp or partial folder was left behind"


def test_bare_state_dict_converts_and_matches_plain_forward(tmp_path):
    sd = authors_state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    out = convert_checkpoint(tmp_path / "bare.pth", tmp_path / "converted")
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "configuration_illama.py",
        "modeling_illama.py",
    } <= files
    assert_no_leftovers(tmp_path, {"bare.pth", "converted"})
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (DIM, DEPTH, 2, MLP)
    assert (c.patch_size, c.image_size, c.num_labels) == (PATCH, 32, CLASSES)
    assert "auto_map" in (out / "config.json").read_text()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = plain_logits(sd, pixels, heads=2)
    for implementation in ("eager", "sdpa"):
        torch.testing.assert_close(hf_logits(out, pixels, implementation), expected, atol=2e-5, rtol=0)


def test_training_dict_with_namespace_and_bigger_grid(tmp_path):
    """The authors' training dict (args Namespace, epoch "best", optimizer) with a 384-like longer pos_embed."""
    sd = authors_state_dict(image=64, seed=2)  # 4x4 grid: 17 positions, as 384 px gives 24x24 after 14x14
    checkpoint = {
        "model": sd,
        "args": argparse.Namespace(model="illama_tiny", input_size=64, lr=4e-3),
        "epoch": "best",
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
    }
    torch.save(checkpoint, tmp_path / "wrapped.pth")
    out = convert_checkpoint(tmp_path / "wrapped.pth", tmp_path / "converted")
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    assert model.config.image_size == 64
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(hf_logits(out, pixels, "sdpa"), plain_logits(sd, pixels, heads=2), atol=2e-5, rtol=0)
    # an image size that contradicts pos_embed is refused with the numbers
    with pytest.raises(CheckpointError, match=r"16 patches"):
        convert_checkpoint(tmp_path / "wrapped.pth", tmp_path / "wrong", image_size=32)
    assert not (tmp_path / "wrong").exists()


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": authors_state_dict(), "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"system.*Nothing from the file was executed"):
        convert_checkpoint(tmp_path / "evil.pth", tmp_path / "converted")
    assert convert_main(["--checkpoint", str(tmp_path / "evil.pth"), "--output-dir", str(tmp_path / "converted")]) == 2
    assert not marker.exists(), "the pickled payload ran"
    assert_no_leftovers(tmp_path, {"evil.pth"})


@pytest.mark.parametrize(
    "edit, names",
    [
        (lambda sd: sd.pop("blocks.1.mlp.fc3.weight"), ["missing keys", "blocks.1.mlp.fc3.weight"]),
        (
            lambda sd: sd.__setitem__("blocks.0.attn.extra.weight", torch.zeros(2)),
            ["unexpected keys", "blocks.0.attn.extra.weight"],
        ),
        (
            lambda sd: sd.__setitem__("norm.weight", torch.zeros(DIM + 1)),
            ["mis-shaped", "norm.weight: found (129,), expected (128,)"],
        ),
        (
            lambda sd: sd.__setitem__("blocks.1.attn.qkv.weight", torch.zeros(DIM, DIM)),
            ["blocks.1.attn.qkv.weight: found (128, 128), expected (384, 128)"],
        ),
    ],
    ids=["missing", "unexpected", "misshaped-norm", "misshaped-qkv"],
)
def test_wrong_keys_and_shapes_are_named(tmp_path, capsys, edit, names):
    sd = authors_state_dict()
    edit(sd)
    save_file(sd, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint(tmp_path / "broken.safetensors", tmp_path / "converted")
    for name in names:
        assert name in str(error.value)
    assert (
        convert_main(
            ["--checkpoint", str(tmp_path / "broken.safetensors"), "--output-dir", str(tmp_path / "converted")]
        )
        == 2
    )
    assert names[-1] in capsys.readouterr().err
    assert_no_leftovers(tmp_path, {"broken.safetensors"})


def test_unknown_layout_and_module_prefix(tmp_path):
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout.*\['epoch', 'weights'\]"):
        convert_checkpoint(tmp_path / "odd.pth", tmp_path / "converted")
    sd = authors_state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    out = convert_checkpoint(tmp_path / "ddp.pth", tmp_path / "converted")
    assert torch.equal(load_file(str(out / "model.safetensors"))["classifier.weight"], sd["head.weight"])


def test_verify_prints_differences_and_fails_on_mismatch(tmp_path, capsys, monkeypatch):
    sd = authors_state_dict(seed=4)
    torch.save(sd, tmp_path / "bare.pth")
    assert (
        convert_main(["--checkpoint", str(tmp_path / "bare.pth"), "--output-dir", str(tmp_path / "ok"), "--verify"])
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("verify")]
    assert [line.split("]")[0] for line in lines] == ["verify [eager", "verify [sdpa"]
    assert all(float(line.split("= ")[1].split()[0]) < 1e-4 for line in lines)

    real = convert_module.reference_forward
    monkeypatch.setattr(convert_module, "reference_forward", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(VerificationError, match="max abs logit difference"):
        convert_checkpoint(tmp_path / "bare.pth", tmp_path / "bad", verify=True)
    assert_no_leftovers(tmp_path, {"bare.pth", "ok"})


def test_num_heads_override(tmp_path):
    sd = authors_state_dict(seed=5)
    torch.save(sd, tmp_path / "bare.pth")
    out = convert_checkpoint(tmp_path / "bare.pth", tmp_path / "converted", num_heads=4)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(hf_logits(out, pixels, "eager"), plain_logits(sd, pixels, heads=4), atol=2e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_round_trip_is_bit_exact(tmp_path, dtype):
    sd = {key: tensor.to(dtype) for key, tensor in authors_state_dict(seed=7).items()}
    torch.save(sd, tmp_path / "original.pth")
    out = convert_checkpoint(tmp_path / "original.pth", tmp_path / "converted")
    assert export_main(["--model", str(out), "--output", str(tmp_path / "back.pth")]) == 0
    export_official(out, tmp_path / "back.safetensors")
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    export_official(model, tmp_path / "from_model.pth")  # e.g. after fine-tuning, straight from memory
    assert list(torch.load(tmp_path / "back.pth", weights_only=True)) == list(sd)  # the authors' key order too
    for exported in (
        torch.load(tmp_path / "back.pth", weights_only=True),
        load_file(str(tmp_path / "back.safetensors")),
        torch.load(tmp_path / "from_model.pth", weights_only=True),
    ):
        assert type(exported) is dict and sorted(exported) == sorted(sd)
        for key, tensor in sd.items():
            assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key


@pytest.mark.parametrize("preset", sorted(DESIGN_SIZES))
def test_full_size_shapes_map_to_presets(preset):
    """Shapes only (meta tensors, no memory): every released size is recognised with its exact parameter count."""
    dim, depth, _, mlp, image, params = DESIGN_SIZES[preset]
    sd = authors_state_dict(
        dim=dim,
        depth=depth,
        image=image,
        mlp=mlp,
        classes=1000,
        factory=lambda *shape: torch.empty(*shape, device="meta"),
    )
    config, name = detect_config(sd)
    assert name == preset
    assert (config.hidden_size, config.num_attention_heads, config.image_size) == (dim, dim // 64, image)
    assert count_parameters(sd) == params
    assert config.id2label[0] == "tench" and config.id2label[999] == "toilet tissue"


def test_convert_all_full_tiny_fills_its_card(tmp_path):
    """A full-size tiny checkpoint under its released name: converted, verified, card numbers filled."""
    src = tmp_path / "downloads"
    (src / "checkpoints").mkdir(parents=True)
    sd = authors_state_dict(dim=192, depth=12, image=224, mlp=512, classes=1000, seed=8)
    torch.save(
        {"model": sd, "epoch": "best"}, src / "checkpoints" / "illama-tiny-in1k-75.0.pth"
    )  # found below SRC_DIR
    (src / "notes.txt").write_text("not a checkpoint")
    assert convert_main(["--all", str(src), str(tmp_path / "hub"), "--verify"]) == 0
    assert [p.name for p in (tmp_path / "hub").iterdir()] == ["illama-tiny-224-in1k"]
    out = tmp_path / "hub" / "illama-tiny-224-in1k"
    card = (out / "README.md").read_text()
    assert "| illama-tiny-224-in1k | 75.0 | 5,701,096 | 1.3G | 224 | ImageNet-1K |" in card
    assert card == render_card("illama-tiny-224-in1k", RELEASED_VARIANTS[0])
    config = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True).config
    assert config.id2label[0] == "tench" and config.id2label[1] == "goldfish" and config.label2id["tench"] == 0
    assert len(set(config.id2label.values())) == 1000  # the two repeated WordNet names are disambiguated
    preprocessor = (out / "preprocessor_config.json").read_text()
    assert '"shortest_edge": 224' in preprocessor and '"crop_pct": 0.875' in preprocessor


def test_pipeline_prediction_with_imagenet_labels(tmp_path):
    sd = authors_state_dict(image=32, classes=1000, seed=9)
    torch.save(sd, tmp_path / "bare.pth")
    out = convert_checkpoint(tmp_path / "bare.pth", tmp_path / "converted")
    rng = torch.Generator().manual_seed(10)
    image = Image.fromarray((torch.rand(48, 40, 3, generator=rng) * 255).to(torch.uint8).numpy())
    classifier = pipeline("image-classification", model=str(out), trust_remote_code=True)
    predictions = classifier(image, top_k=3)
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    logits = plain_logits(sd, pixels, heads=2)[0]
    from modeling_illama.conversion import imagenet_id2label

    assert [p["label"] for p in predictions] == [imagenet_id2label()[i] for i in logits.topk(3).indices.tolist()]


def test_committed_model_cards_match_the_generator():
    cards = sorted((REPO_ROOT / "model_cards").glob("*.md"))
    assert [p.stem for p in cards] == sorted(v.name for v in RELEASED_VARIANTS)
    for variant in RELEASED_VARIANTS:
        text = (REPO_ROOT / "model_cards" / f"{variant.name}.md").read_text()
        assert text == render_card(variant.name, variant), f"model_cards/{variant.name}.md is stale"
        meta = yaml.safe_load(text.split("---")[1])
        assert meta["license"] == "unknown" and meta["library_name"] == "transformers"
        assert "not stated by the authors" in text  # the authors name no licence for the weights
        assert meta["pipeline_tag"] == "image-classification" and meta["metrics"] == ["accuracy"]
        assert "imagenet-1k" in meta["datasets"] and ("imagenet-21k" in meta["datasets"]) == bool(variant.pretraining)
        assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == variant.top1
        assert f"{variant.num_parameters:,}" in text and variant.macs in text and "trust_remote_code=True" in text
        assert "AutoModelForImageClassification" in text and "@article{wang2024illama" in text
