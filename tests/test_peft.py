"""LoRA fine-tuning from a recipe (training/peft.py through training/run.train): an adapter trained on a tiny
iLLaMA, saved with its card, reloaded through Transformers' PEFT integration (pipeline and
AutoModelForImageClassification), merged with the same logits, and resumed from a checkpoint."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

pytest.importorskip("peft")

from modeling_illama import ILlamaForImageClassification, build_image_processor  # noqa: E402
from modeling_illama.training.output_dir import (
    MERGED_FOLDER,  # noqa: E402
    is_run_card,  # noqa: E402
)
from modeling_illama.training.peft import (  # noqa: E402
    adapter_labels,
    lora_config,
)
from modeling_illama.training.peft_settings import check_peft_settings  # noqa: E402
from modeling_illama.training.recipes import recipe_from_dict  # noqa: E402
from modeling_illama.training.run import train  # noqa: E402
from tests.tiny_data import TINY_RUN_FIELDS, write_tiny_image_splits  # noqa: E402

BASE = dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
SEG_BACKBONE = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2)


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory):
    """A saved 5-class tiny iLLaMA (the base) and 3-class data: the adapter learns a new label set."""
    from modeling_illama import ILlamaConfig

    root = tmp_path_factory.mktemp("peft")
    torch.manual_seed(0)
    base = ILlamaForImageClassification(ILlamaConfig(**BASE, intermediate_size=64, num_labels=5))
    base.save_pretrained(root / "base")
    processor = build_image_processor(16)
    processor.crop_pct = TINY_RUN_FIELDS["eval_crop_pct"]  # pipeline(adapter) preprocesses as the base does
    processor.save_pretrained(root / "base")
    return root, root / "base", write_tiny_image_splits(root / "data")


def lora_recipe(base, data, output_dir, **changes):
    fields = dict(
        TINY_RUN_FIELDS,
        model=str(base),
        dataset=str(data),
        output_dir=str(output_dir),
        crop_scale=[0.5, 1.0],
        mixup=0.0,
        cutmix=0.0,
        num_train_epochs=2,
        learning_rate=5e-3,
        soft_mask="none",
        save_strategy="epoch",
        peft={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "save_merged": True},
        seed=0,
    )
    fields.update(changes)
    return recipe_from_dict(fields)


@pytest.fixture(scope="module")
def lora_run(base_and_data):
    root, base, data = base_and_data
    out = root / "lora"
    run = train(lora_recipe(base, data, out))
    return run, out


def image_batch():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]


def test_the_adapter_folder_holds_the_adapter_the_labels_and_a_card_naming_the_base(lora_run, base_and_data):
    run, out = lora_run
    _, base, _ = base_and_data
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base.resolve()) and config["r"] == 4
    assert json.loads((out / "labels.json").read_text())["id2label"] == {"0": "a", "1": "b", "2": "c"}
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "- lora" in card and f"of the base model `{base.resolve()}`" in card
    assert is_run_card(out / "README.md")  # the next run into the folder may replace it (training/output_dir.py)
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # trained: B starts at zero
    assert any("qkv_proj" in k for k in weights) and any("o_proj" in k for k in weights)
    assert any(k.endswith("classifier.weight") for k in weights)  # the new head, trained in full
    assert not any("gate_proj" in k or "down_proj" in k for k in weights)  # MLP untouched by default
    assert run.extras["metrics"]["train_loss"] > 0 and "eval_top1" in run.extras["metrics"]


def test_only_the_adapter_and_the_head_train_and_the_base_weights_stay(lora_run, base_and_data):
    run, _ = lora_run
    _, base, _ = base_and_data
    wrapped = run.trainer.model
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    saved = load_file(base / "model.safetensors")
    now = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in wrapped.state_dict().items()}
    for key, value in saved.items():
        if not key.startswith("classifier"):
            torch.testing.assert_close(now[key], value, rtol=0, atol=0)


def test_pipeline_and_auto_class_load_the_adapter_folder_and_the_merged_model_gives_the_same_logits(lora_run):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    run, out = lora_run
    processor = AutoImageProcessor.from_pretrained(out)
    pixels = processor(images=image_batch(), return_tensors="pt")["pixel_values"]
    wrapped = run.trainer.model.eval()
    with torch.no_grad():
        expected = wrapped(pixel_values=pixels).logits
        loaded = AutoModelForImageClassification.from_pretrained(out, **adapter_labels(out)).eval()
        assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
        torch.testing.assert_close(loaded(pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-5)
        merged = AutoModelForImageClassification.from_pretrained(out / MERGED_FOLDER).eval()
        assert not any("lora" in name for name, _ in merged.named_parameters())
        torch.testing.assert_close(merged(pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-5)

    classifier = pipeline("image-classification", model=str(out), model_kwargs=adapter_labels(out), top_k=3)
    scores = classifier(image_batch()[0])
    probabilities = expected[0].softmax(-1)
    assert {s["label"]: round(s["score"], 5) for s in scores} == {
        name: round(float(probabilities[i]), 5) for i, name in enumerate("abc")
    }


def test_resume_with_an_adapter_continues_the_same_run(base_and_data):
    root, base, data = base_and_data
    out = root / "resumed"
    straight = train(lora_recipe(base, data, out, peft={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}))
    final = {k: v.clone() for k, v in straight.trainer.model.state_dict().items() if "lora_" in k}
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) >= 1 and (checkpoints[0] / "adapter_model.safetensors").is_file()
    first, total = checkpoints[0], straight.trainer.state.global_step
    for path in checkpoints[1:]:
        shutil.rmtree(path)  # as if killed after the first epoch's checkpoint
    resumed = train(lora_recipe(base, data, out, peft={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}), resume=True)
    assert f"resuming from {first}" in (out / "train.log").read_text()
    assert resumed.trainer.state.global_step == total
    again = {k: v for k, v in resumed.trainer.model.state_dict().items() if "lora_" in k}
    assert again.keys() == final.keys()
    for key in final:
        torch.testing.assert_close(again[key], final[key], rtol=1e-5, atol=1e-6)


def test_mlp_targets_and_segmentation_heads_and_bad_settings():
    model = ILlamaForImageClassification(__import__("modeling_illama").ILlamaConfig(**BASE, num_labels=3))
    config = lora_config(model, check_peft_settings({"mlp": True}, "image-classification"))
    import re

    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    targeted = [n for n in linears if re.fullmatch(config.target_modules, n)]
    assert targeted == [n for n in linears if n != "classifier"]  # every block linear, not the head
    attention_only = lora_config(model, check_peft_settings({}, "image-classification"))
    targeted = {n.rsplit(".", 1)[1] for n in linears if re.fullmatch(attention_only.target_modules, n)}
    assert targeted == {"qkv_proj", "o_proj"}
    assert check_peft_settings({}, "semantic-segmentation")["modules_to_save"] == ["decode_head", "auxiliary_head"]
    with pytest.raises(ValueError, match=r"unknown peft setting\(s\) \['lora_alpah'\].*did you mean 'lora_alpha'"):
        check_peft_settings({"lora_alpah": 8}, "image-classification")
    with pytest.raises(ValueError, match="peft.r .* positive integer, got 0"):
        check_peft_settings({"r": 0}, "image-classification")
    with pytest.raises(ValueError, match="match no linear layer"):
        lora_config(model, check_peft_settings({"target_modules": ["q_proj"]}, "image-classification"))


def test_segmentation_trains_lora_on_the_backbone_and_saves_the_merged_upernet(tmp_path):
    from transformers import UperNetForSemanticSegmentation

    from modeling_illama import ILlamaConfig
    from modeling_illama.training.recipes import load_recipe

    camvid = Path(__file__).resolve().parent / "data" / "camvid-tiny"
    torch.manual_seed(0)
    backbone = ILlamaForImageClassification(ILlamaConfig(**SEG_BACKBONE, num_labels=3))
    backbone.save_pretrained(tmp_path / "classifier")
    overrides = {
        "dataset": str(camvid),
        "backbone": str(tmp_path / "classifier"),
        "max_steps": 2,
        "warmup_epochs": 0,
        "global_batch_size": 2,
        "per_device_train_batch_size": 2,
        "save_strategy": "no",
        "segmentation": {
            "crop_size": 64,
            "eval_size": [48, 64],
            "decoder_hidden_size": 16,
            "out_indices": [1, 2, 3, 4],
        },
        "peft": {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0},
    }
    run = train(load_recipe("camvid-mini", overrides, output_dir=str(tmp_path / "seg")), plot=False)
    wrapped = run.trainer.model.eval()
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_" in n and "qkv_proj" in n for n in trainable)
    assert all("lora_" in n or "decode_head" in n or "auxiliary_head" in n for n in trainable)
    merged = UperNetForSemanticSegmentation.from_pretrained(tmp_path / "seg" / MERGED_FOLDER).eval()
    pixels = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=pixels).logits, wrapped(pixel_values=pixels).logits)
