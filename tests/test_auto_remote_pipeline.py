"""Auto classes, loading a saved folder WITHOUT the package (trust_remote_code), and the image-classification
pipeline on real JPEGs."""

import json
import textwrap

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    pipeline,
)
from without_package import run_without_package

import modeling_illama
from modeling_illama import ILlamaConfig, ILlamaForImageClassification, ILlamaModel, build_image_processor

TINY_224 = dict(
    image_size=224, patch_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96
)


def read_classes(sample_dir):
    """classes.tsv -> {index: name} for the sample synsets, re-indexed 0..7 in file order."""
    rows = [line.split("\t") for line in (sample_dir / "classes.tsv").read_text().splitlines()[1:]]
    return {i: name for i, (_, _, name) in enumerate(rows)}


def tiny_classifier(id2label, seed=0, **overrides):
    torch.manual_seed(seed)
    model = ILlamaForImageClassification(ILlamaConfig(**{**TINY_224, **overrides}, id2label=id2label)).eval()
    with torch.no_grad():  # a head that actually separates classes, so top-k order is meaningful
        model.classifier.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, imagenet_sample_dir):
    folder = tmp_path_factory.mktemp("illama-saved")
    model = tiny_classifier(read_classes(imagenet_sample_dir), soft_mask_rate=0.37)
    model.save_pretrained(folder)
    build_image_processor(224).save_pretrained(folder)
    return folder, model


# ---------------------------------------------------------------------------------------------------------
# Auto classes in-process
# ---------------------------------------------------------------------------------------------------------


def test_auto_classes_resolve_after_import():
    config = AutoConfig.for_model("illama", **TINY_224)
    assert type(config) is ILlamaConfig
    assert type(AutoModel.from_config(config)) is ILlamaModel
    assert type(AutoModelForImageClassification.from_config(config)) is ILlamaForImageClassification


def test_saved_folder_has_remote_code_and_auto_map(saved_folder):
    folder, _ = saved_folder
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "illama"
    assert config["auto_map"]["AutoConfig"] == "configuration_illama.ILlamaConfig"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_illama.ILlamaForImageClassification"
    for name in (
        "configuration_illama.py",
        "modeling_illama.py",
        "image_processing_illama.py",
        "model.safetensors",
        "preprocessor_config.json",
    ):
        assert (folder / name).is_file(), name
    code = "".join(
        (folder / name).read_text()
        for name in ("modeling_illama.py", "configuration_illama.py", "image_processing_illama.py")
    )
    assert "import modeling_illama" not in code and "from modeling_illama" not in code


def test_auto_from_pretrained_in_process_uses_the_package_class(saved_folder):
    folder, model = saved_folder
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(loaded) is ILlamaForImageClassification
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


# ---------------------------------------------------------------------------------------------------------
# A machine without the package: a subprocess whose import system refuses `modeling_illama`
# ---------------------------------------------------------------------------------------------------------

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys

    try:
        import modeling_illama  # noqa: F401
        raise SystemExit("the package could still be imported")
    except ImportError:
        pass

    import torch
    from transformers import AutoModelForImageClassification, pipeline

    folder, inputs, image, out = sys.argv[1:5]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(torch.load(inputs)).logits
    torch.save(logits, out + ".pt")
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    predictions = classifier(image, top_k=3)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "modeling_illama")
    json.dump({"class": type(model).__module__ + "." + type(model).__name__,
               "pipeline_model": type(classifier.model).__module__, "predictions": predictions,
               "processor": type(classifier.image_processor).__module__ + "." + type(classifier.image_processor).__name__,
               "leaked": leaked}, open(out + ".json", "w"))
    """
)


def test_saved_folder_loads_without_the_package_via_remote_code(saved_folder, tmp_path, imagenet_sample_dir):
    folder, model = saved_folder
    image = imagenet_sample_dir / "n04254680_soccer_ball.JPEG"  # grayscale
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "inputs.pt")
    result = run_without_package(REMOTE_SCRIPT, [folder, tmp_path / "inputs.pt", image, tmp_path / "out"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["leaked"] == []
    assert report["class"].startswith("transformers_modules.") and report["class"].endswith(
        ".ILlamaForImageClassification"
    )
    assert report["pipeline_model"].startswith("transformers_modules.")
    assert report["processor"].startswith("transformers_modules.") and report["processor"].endswith(
        ".ILlamaImageProcessor"
    )

    with torch.no_grad():
        expected = model(x).logits
    assert torch.allclose(torch.load(tmp_path / "out.pt"), expected, atol=1e-6, rtol=0)

    processor = AutoImageProcessor.from_pretrained(folder)  # the package's class, same code as the remote copy
    assert type(processor).__module__ == "modeling_illama.image_processing_illama"
    with torch.no_grad():
        probs = model(processor(Image.open(image), return_tensors="pt")["pixel_values"]).logits.softmax(-1)[0]
    top = probs.topk(3)
    assert [p["label"] for p in report["predictions"]] == [model.config.id2label[i] for i in top.indices.tolist()]
    assert torch.allclose(torch.tensor([p["score"] for p in report["predictions"]]), top.values, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# pipeline("image-classification") on the real JPEGs
# ---------------------------------------------------------------------------------------------------------


def test_pipeline_on_real_jpegs_with_top_k_and_id2label(saved_folder, imagenet_sample_files):
    folder, model = saved_folder
    classifier = pipeline("image-classification", model=str(folder))
    assert type(classifier.model) is ILlamaForImageClassification
    processor = classifier.image_processor
    labels = set(model.config.id2label.values())
    assert "tench" in labels and "soccer_ball" in labels
    for path in imagenet_sample_files:  # RGB and grayscale, several shapes
        predictions = classifier(str(path), top_k=3)
        assert len(predictions) == 3
        with torch.no_grad():
            probs = model(processor(Image.open(path), return_tensors="pt")["pixel_values"]).logits.softmax(-1)[0]
        top = probs.topk(3)
        assert [p["label"] for p in predictions] == [model.config.id2label[i] for i in top.indices.tolist()], path.name
        assert torch.allclose(torch.tensor([p["score"] for p in predictions]), top.values, atol=1e-6), path.name


def test_pipeline_top_k_all_classes_and_batches(saved_folder, imagenet_sample_files):
    folder, model = saved_folder
    classifier = pipeline("image-classification", model=model, image_processor=build_image_processor(224))
    everything = classifier(Image.open(imagenet_sample_files[0]), top_k=8)
    assert len(everything) == 8 and {p["label"] for p in everything} == set(model.config.id2label.values())
    scores = [p["score"] for p in everything]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    batch = classifier([str(p) for p in imagenet_sample_files[:3]], top_k=1)
    assert len(batch) == 3 and all(len(item) == 1 for item in batch)


def test_package_import_registers_without_heavy_work():
    assert modeling_illama.__version__
    assert "illama" in AutoConfig.for_model("illama").model_type
