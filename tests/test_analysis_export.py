"""int8 quantization (torchao) and ONNX export of a tiny classifier, each checked against a re-derivation."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageClassification

import modeling_illama  # noqa: F401  (registers the Auto classes)
from modeling_illama import ILlamaForImageClassification, load_preset
from modeling_illama.analysis.quantization import (
    finish_qat,
    folder_size,
    load_quantized,
    prepare_qat,
    quantized_linear_count,
)
from modeling_illama.cli.analyze import main as analyze


def _tiny(image_size=32, patch_size=8, seed=0, num_labels=10):
    torch.manual_seed(seed)
    config = load_preset(
        "illama-tiny-224", image_size=image_size, patch_size=patch_size, num_hidden_layers=1, hidden_size=64,
        num_attention_heads=2, intermediate_size=128, num_labels=num_labels,
    )  # fmt: skip
    return ILlamaForImageClassification(config).eval()


def _int8_per_channel(weight):
    """Symmetric per-output-channel int8 round trip: scale = max|w| / 127.5 (torchao's symmetric int8 range),
    q = clamp(round(w * (1 / scale)), -128, 127)."""
    scale = weight.abs().amax(dim=1, keepdim=True) / ((127 - (-128)) / 2)
    return (weight * (1.0 / scale)).round().clamp(-128, 127) * scale


@torch.no_grad()
def test_weight_only_int8_matches_a_manual_round_trip(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path / "float")
    quantized = load_quantized(tmp_path / "float", "int8-weight-only")
    assert quantized_linear_count(quantized) == 6  # qkv, o, gate, up, down and the head
    reference = _tiny()
    quantized_linears = dict(quantized.named_modules())
    for name, module in reference.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.copy_(_int8_per_channel(module.weight))
            torch.testing.assert_close(quantized_linears[name].weight.dequantize(), module.weight, atol=0, rtol=0)
    pixel_values = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = reference(pixel_values=pixel_values).logits  # same weights, products summed in another order
    torch.testing.assert_close(quantized(pixel_values=pixel_values).logits, expected, atol=5e-4, rtol=1e-3)
    # saves (safetensors) and reloads as the same int8 model, about 4x smaller
    quantized.save_pretrained(tmp_path / "int8")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "int8")
    assert quantized_linear_count(reloaded) == quantized_linear_count(quantized)
    torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, quantized(pixel_values=pixel_values).logits)
    assert folder_size(tmp_path / "int8") < 0.5 * folder_size(tmp_path / "float")


def test_qat_fake_quantizes_then_hands_back_plain_linears():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_qat(model, "int8-weight-only")
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    fake = model(pixel_values=pixel_values).logits
    fake.sum().backward()  # gradients pass the rounding (straight-through)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    reference = _tiny()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(_int8_per_channel(module.weight))
        torch.testing.assert_close(fake, reference(pixel_values=pixel_values).logits, atol=1e-4, rtol=1e-4)
    finish_qat(model)
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.state_dict().keys() == before.keys()
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        prepare_qat(_tiny(), "int4")


@pytest.mark.parametrize("image_size", [224, 384])
def test_onnx_logits_match_pytorch(tmp_path, image_size):
    pytest.importorskip("onnxruntime")
    model = _tiny(image_size=image_size, patch_size=32)
    model.save_pretrained(tmp_path / "model")
    status = analyze(["export-onnx", "--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "out")])
    assert status == 0
    import json

    import numpy as np
    import onnxruntime

    report = json.loads((tmp_path / "out" / f"onnx_{image_size}.json").read_text())
    assert report["within_tolerance"]
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / f"model_{image_size}.onnx"))
    for batch_size in (1, 5):  # the batch dimension is dynamic
        pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(4))
        (logits,) = session.run(None, {"pixel_values": pixel_values.numpy()})
        with torch.no_grad():
            expected = model(pixel_values=pixel_values).logits.numpy()
        assert np.abs(logits - expected).max() < 1e-4
    assert Path(tmp_path / "out" / f"onnx_{image_size}.png").read_bytes()[:4] == b"\x89PNG"


def test_recipe_qat_field_trains_fake_quantized_and_saves_plain_weights(tmp_path):
    import io

    import numpy as np
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    from modeling_illama.training.assembly import save_final_model
    from modeling_illama.training.recipes import recipe_from_dict
    from modeling_illama.training.tasks import build_training

    rng = np.random.default_rng(0)
    rows = {"image": [], "label": []}
    for i in range(8):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        rows["image"].append({"bytes": buffer.getvalue(), "path": None})
        rows["label"].append(i % 2)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "train.parquet"))
    recipe = recipe_from_dict(
        {"model": "illama-tiny-224", "dataset": str(tmp_path), "output_dir": str(tmp_path / "out"),
         "model_overrides": {"hidden_size": 32, "num_attention_heads": 1, "num_hidden_layers": 1, "image_size": 16,
                             "patch_size": 8},
         "eval_split": None, "dataloader_num_workers": 0, "rand_augment": None, "random_erasing": 0.0, "mixup": 0.0,
         "cutmix": 0.0, "max_steps": 2, "per_device_train_batch_size": 4, "warmup_steps": 0,
         "soft_mask": "none", "save_strategy": "no", "qat": "int8-dynamic"}
    )  # fmt: skip
    run = build_training(recipe)
    fake = [m for m in run.trainer.model.modules() if type(m).__name__ == "FakeQuantizedLinear"]
    assert len(fake) == 6  # qkv, o, gate, up, down, head
    run.trainer.train()
    trained = {k: v.clone() for k, v in run.trainer.model.state_dict().items()}
    save_final_model(run, tmp_path / "out")
    saved = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert all(type(m) is torch.nn.Linear for m in saved.modules() if isinstance(m, torch.nn.Linear))
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(value, trained[key], atol=0, rtol=0)
    with pytest.raises(ValueError, match="recipe field 'qat'"):
        recipe_from_dict({"qat": "int4"})


def test_cli_quantize_reports_accuracy_size_and_latency(tmp_path, capsys):
    import json

    from datasets import load_dataset
    from transformers import AutoImageProcessor

    from modeling_illama import build_image_processor

    data_dir = Path(__file__).resolve().parents[1] / "data" / "cifar10-mini"
    model = _tiny()
    model.save_pretrained(tmp_path / "float")
    processor = build_image_processor(32)
    processor.crop_pct = 1.0  # as the cifar10-mini recipe saves it
    processor.save_pretrained(tmp_path / "float")
    status = analyze(["quantize", "--model", str(tmp_path / "float"), "--scheme", "int8-dynamic", "--dataset",
                      str(data_dir), "--split", "test", "--limit", "24", "--latency-batch-size", "2",
                      "--latency-repeats", "2", "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "quantization.json").read_text())
    assert AutoImageProcessor.from_pretrained(tmp_path / "out" / "model").crop_pct == 1.0
    rows = load_dataset("parquet", data_files={"test": str(data_dir / "test.parquet")})["test"].select(range(24))
    labels = torch.tensor(rows["label"])
    for name, folder in (("float32", tmp_path / "float"), ("int8", tmp_path / "out" / "model")):
        net = AutoModelForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = torch.cat([net(**processor(r["img"].convert("RGB"), return_tensors="pt")).logits for r in rows])
        assert report["top1"][name] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert report["quantized_linear_layers"] == 6
    assert report["weights_bytes"]["int8"] < 0.5 * report["weights_bytes"]["float32"]
    assert set(report["latency_seconds"]) == {"float32", "int8"} and report["machine"]["before"]["cpu"]
    assert (tmp_path / "out" / "quantization.png").read_bytes()[:4] == b"\x89PNG"
