"""ILlamaBackbone (AutoBackbone), UperNet segmentation on it, the mean_iou metric module, the joint
image/mask transforms on real CamVid frames, and the segmentation CLI end to end."""

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoBackbone, UperNetConfig, UperNetForSemanticSegmentation, pipeline
from without_package import run_without_package

from modeling_illama import (
    ILlamaBackbone,
    ILlamaConfig,
    ILlamaForImageClassification,
    ILlamaModel,
    build_image_processor,
)
from modeling_illama.modeling_illama import interpolate_position_table
from modeling_illama.training.metrics import load_metric
from modeling_illama.training.segmentation import (
    SegmentationSettings,
    SegmentationTrainTransform,
    build_segmentation_image_processor,
    check_label_map,
    decode_label_map,
)

CAMVID_TINY = Path(__file__).resolve().parent / "data" / "camvid-tiny"
CAMVID_NAMES = "sky building pole road pavement tree sign_symbol fence car pedestrian bicyclist".split()  # recipe's
TINY = dict(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64
)


def camvid_rows(split="train"):
    data = datasets.load_dataset("parquet", data_files={split: str(CAMVID_TINY / f"{split}.parquet")}, split=split)
    return [(row["image"].convert("RGB"), np.asarray(row["annotation"], dtype=np.int64)) for row in data]


def tiny_backbone(seed=0, **overrides):
    torch.manual_seed(seed)
    return ILlamaBackbone(ILlamaConfig(**{**TINY, **overrides})).eval()


# ---------------------------------------------------------------------------------------------------------
# ILlamaBackbone
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_feature_maps_are_the_model_hidden_states_without_the_last_token(rate):
    backbone = tiny_backbone(out_features=["stem", "stage2", "stage4"], soft_mask_rate=rate)
    model = ILlamaModel(backbone.config).eval()
    model.load_state_dict(backbone.illama.state_dict())
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))  # non-square, not the config size
    with torch.no_grad():
        maps = backbone(x).feature_maps
        hidden = model(x, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
    assert [tuple(m.shape) for m in maps] == [(2, 32, 6, 10)] * 3
    for feature_map, layer in zip(maps, (0, 2, 4)):
        tokens = hidden[layer]
        assert tokens.shape[1] == 6 * 10 + 1
        for row in range(6):
            for col in range(10):  # patch (row, col) is token row * 10 + col; the class token (index 60) is dropped
                assert torch.equal(feature_map[:, :, row, col], tokens[:, row * 10 + col])


def test_backbone_takes_the_models_attention_path_no_mask_on_post_softmax_sdpa(mask_builds):
    """The backbone runs ILlamaModel's own forward: on "sdpa" the post-softmax mask is rebuilt from r by the fused
    paths from the rate, so the model builds no N x N mask, and the features equal the eager path's, which reads M."""
    import copy

    backbone = tiny_backbone(out_indices=[1, 4], mask_style="post_softmax", soft_mask_rate=0.0)
    backbone.set_soft_mask_rate(0.37)
    assert backbone.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(backbone)
    eager.set_attn_implementation("eager")
    x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))  # 6 x 8 patches + class token
    with torch.no_grad():
        fused = backbone(x).feature_maps
        assert mask_builds == []  # never built on the fused path
        reference = eager(x).feature_maps
        assert [build[0] for build in mask_builds] == [49]  # the eager path materialises M
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_auto_backbone_and_pyramid_neck_shapes_on_non_square_input():
    config = ILlamaConfig(**TINY, out_indices=[1, 2, 3, 4], add_fpn=True)
    backbone = AutoBackbone.from_config(config).eval()
    assert type(backbone) is ILlamaBackbone and backbone.channels == [32] * 4
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 40, 64)).feature_maps  # grid 5 x 8
    assert [tuple(m.shape[-2:]) for m in maps] == [(20, 32), (10, 16), (5, 8), (2, 4)]


def test_bad_backbone_configs_are_refused():
    with pytest.raises(ValueError, match="stage_names"):
        ILlamaConfig(**TINY, out_features=["stage5"])  # 4 blocks: stem, stage1..stage4
    with pytest.raises(ValueError, match="add_fpn"):
        ILlamaConfig(**TINY, out_indices=[2, 4], add_fpn=True)
    with pytest.raises(ValueError, match="multiple of the patch"):
        tiny_backbone()(torch.randn(1, 3, 36, 32))


def test_backbone_loads_a_classifier_folder(tmp_path):
    torch.manual_seed(0)
    classifier = ILlamaForImageClassification(ILlamaConfig(**TINY, num_labels=3))
    classifier.save_pretrained(tmp_path)
    # (AutoBackbone.from_pretrained takes Hub ids only in Transformers 5: it asks the Hub whether a local path exists)
    backbone = ILlamaBackbone.from_pretrained(tmp_path, out_indices=[2, 4])
    assert type(backbone) is ILlamaBackbone and backbone.out_features == ["stage2", "stage4"]
    expected = classifier.illama.state_dict()
    for name, tensor in backbone.illama.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# ---------------------------------------------------------------------------------------------------------
# UperNet on the backbone
# ---------------------------------------------------------------------------------------------------------


def test_upernet_loss_decreases_on_a_fixed_batch_of_real_frames():
    backbone_config = ILlamaConfig(**{**TINY, "image_size": 64}, out_indices=[1, 2, 3, 4], add_fpn=True)
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=backbone_config, hidden_size=16, auxiliary_in_channels=32, num_labels=11)
    )
    rows = camvid_rows()[:2]
    processor = build_segmentation_image_processor((64, 96))
    batch = processor(
        images=[image for image, _ in rows],
        segmentation_maps=[Image.fromarray(mask.astype(np.uint8)) for _, mask in rows],
        return_tensors="pt",
    )
    assert batch["pixel_values"].shape == (2, 3, 64, 96) and (batch["labels"] == 255).any()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        assert model.backbone.illama.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


# ---------------------------------------------------------------------------------------------------------
# mean_iou metric module vs a hand computation
# ---------------------------------------------------------------------------------------------------------


def hand_metrics(predictions, references, num_labels, ignore_index=255):
    """Pixel-by-pixel counting with Python loops: the definition, written independently of the module."""
    inter, pred_area, ref_area, correct, counted = [0] * num_labels, [0] * num_labels, [0] * num_labels, 0, 0
    for prediction, reference in zip(predictions, references):
        for p, r in zip(np.ravel(prediction).tolist(), np.ravel(reference).tolist()):
            if r == ignore_index:
                continue
            counted += 1
            pred_area[p] += 1
            ref_area[r] += 1
            if p == r:
                inter[p] += 1
                correct += 1
    ious = [
        inter[c] / (pred_area[c] + ref_area[c] - inter[c]) if pred_area[c] + ref_area[c] else None
        for c in range(num_labels)
    ]
    defined = [v for v in ious if v is not None]
    return ious, sum(defined) / len(defined), correct / counted


def test_mean_iou_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    references = [rng.integers(0, 4, size=(5, 7)), rng.integers(0, 4, size=(3, 9))]
    references[0][0, :3] = 255  # void pixels, whatever is predicted there
    references[1][references[1] == 2] = 1  # class 2 only in the first image
    predictions = [rng.integers(0, 4, size=(5, 7)), rng.integers(0, 4, size=(3, 9))]
    predictions[0][0, :3] = 4  # a class absent everywhere else, predicted only on void pixels: IoU undefined
    result = load_metric("mean_iou").compute(predictions=predictions, references=references, num_labels=6)
    ious, mean_iou, pixel_accuracy = hand_metrics(predictions, references, 6)
    assert ious[4] is None and ious[5] is None
    assert np.isnan(result["per_category_iou"][4]) and np.isnan(result["per_category_iou"][5])
    assert result["per_category_iou"][:4] == pytest.approx(ious[:4], abs=1e-12)
    assert result["mean_iou"] == pytest.approx(mean_iou, abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-12)


def test_mean_iou_refuses_mismatched_shapes_and_unknown_ids():
    metric = load_metric("mean_iou")
    with pytest.raises(ValueError, match="shape"):
        metric.compute(predictions=[np.zeros((2, 3), int)], references=[np.zeros((3, 2), int)], num_labels=2)
    with pytest.raises(ValueError, match=r"reference holds class ids \[7\]"):
        metric.compute(predictions=[np.zeros((2, 2), int)], references=[np.full((2, 2), 7)], num_labels=2)


# ---------------------------------------------------------------------------------------------------------
# Joint transforms and input checks on real frames
# ---------------------------------------------------------------------------------------------------------


def settings(**overrides):
    return SegmentationSettings(**{"label_names": CAMVID_NAMES, "scale_base": [240, 320], **overrides})


def test_flip_and_crop_move_image_and_mask_together():
    image, mask = camvid_rows()[0]
    transform = SegmentationTrainTransform(settings(crop_size=[240, 320], scale_range=[1.0, 1.0], hflip=1.0))
    pixels, labels = transform(image, mask)
    assert torch.equal(labels, torch.from_numpy(mask[:, ::-1].copy()))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (
        torch.from_numpy(np.asarray(image)[:, ::-1].copy()).permute(2, 0, 1) / 255 - mean[:, None, None]
    ) / std[:, None, None]
    assert torch.allclose(pixels, expected, atol=1e-5)


def test_an_image_smaller_than_the_crop_is_padded_with_void():
    image, mask = camvid_rows()[1]
    transform = SegmentationTrainTransform(settings(crop_size=256, scale_range=[0.5, 0.5], hflip=0.0))
    pixels, labels = transform(image, mask)  # 120 x 160 after rescaling, crop 256 x 256
    assert pixels.shape == (3, 256, 256) and labels.shape == (256, 256)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    padded = torch.isclose(pixels, (-mean / std)[:, None, None]).all(0)  # image padding is 0 before normalising
    assert padded.sum() >= 256 * 256 - 120 * 160  # the 120 x 160 frame cannot cover the crop
    assert (labels[padded] == 255).all()  # padding is void: no loss, no metric
    assert (labels[~padded] != 255).float().mean() > 0.5  # the real frame is still labelled


def test_bad_masks_are_refused():
    image, mask = camvid_rows()[0]
    with pytest.raises(ValueError, match="masks must have their image's size"):
        check_label_map(image, mask[:, :-1], settings())
    bad = mask.copy()
    bad[0, 0] = 11
    with pytest.raises(ValueError, match=r"ids \[11\].*0\.\.10 or the void id 255"):
        check_label_map(image, bad, settings())
    rgb = io.BytesIO()
    Image.new("RGB", (4, 4)).save(rgb, format="PNG")
    with pytest.raises(ValueError, match="single-channel"):
        decode_label_map({"bytes": rgb.getvalue()})


# ---------------------------------------------------------------------------------------------------------
# illama-train --recipe camvid-mini end to end (tiny sizes), backbone from a classifier folder, pipeline
# ---------------------------------------------------------------------------------------------------------


def test_cli_trains_saves_and_the_pipeline_segments(tmp_path):
    torch.manual_seed(0)
    classifier = ILlamaForImageClassification(ILlamaConfig(**TINY, num_labels=3))
    classifier.save_pretrained(tmp_path / "classifier")
    out = tmp_path / "seg"
    command = [
        sys.executable, "-m", "modeling_illama.cli.train", "--recipe", "camvid-mini", "--dataset", str(CAMVID_TINY),
        "--backbone", str(tmp_path / "classifier"), "--output-dir", str(out), "--no-plot",
        "max_steps=2", "learning_rate=1e-12", "warmup_epochs=0", "global_batch_size=2", "per_device_train_batch_size=2",
        "segmentation.crop_size=64", "segmentation.eval_size=[48,64]", "segmentation.decoder_hidden_size=16",
        "segmentation.out_indices=[1,2,3,4]",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "all_results.json").read_text())
    assert 0 <= metrics["eval_mean_iou"] <= 1 and "eval_iou_sky" in metrics

    model = UperNetForSemanticSegmentation.from_pretrained(out)
    assert type(model.backbone) is ILlamaBackbone and model.config.id2label[0] == "sky"
    # lr 1e-12: the backbone is the classifier's, position table resized from the 4x4 grid to the 8x8 crop
    saved = model.backbone.illama.state_dict()
    table = classifier.illama.embeddings.position_embeddings.detach()
    resized = interpolate_position_table(table, (4, 4), (8, 8))
    assert saved["embeddings.position_embeddings"].shape == (1, 65, 32)
    assert torch.allclose(saved["embeddings.position_embeddings"], resized, atol=1e-8)
    assert torch.allclose(
        saved["layers.1.mlp.up_proj.weight"], classifier.illama.layers[1].mlp.up_proj.weight, atol=1e-8
    )

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # the CLI's output-folder guard
    assert again.returncode == 2 and "illama-train: error:" in again.stderr and "--overwrite" in again.stderr

    segmenter = pipeline("image-segmentation", model=str(out), subtask="semantic")
    image, _ = camvid_rows("validation")[0]
    segments = segmenter(image)
    assert segments and all(s["label"] in CAMVID_NAMES for s in segments)
    covered = sum(np.asarray(s["mask"]) > 0 for s in segments)
    assert covered.shape == (240, 320) and (covered == 1).all()  # every pixel in exactly one segment


# ---------------------------------------------------------------------------------------------------------
# Feature extraction from any saved folder on a machine without the package (remote code)
# ---------------------------------------------------------------------------------------------------------

FEATURES_SCRIPT = textwrap.dedent(
    """
    import json, sys

    import torch
    from transformers import AutoModel, pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder, image, out = sys.argv[1:4]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    backbone_class = get_class_from_dynamic_module("modeling_illama.ILlamaBackbone", folder)
    backbone = backbone_class.from_pretrained(folder, out_indices=[1, 2]).eval()
    pixels = extractor.image_processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        maps = backbone(pixels).feature_maps
    torch.save({"features": torch.tensor(extractor(image)), "pooled": model(pixels).pooler_output,
                "maps": maps}, out + ".pt")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "modeling_illama")
    json.dump({"model": type(model).__module__ + "." + type(model).__name__, "leaked": leaked}, open(out + ".json", "w"))
    """
)


def test_every_saved_folder_extracts_features_through_remote_code(tmp_path, imagenet_sample_files):
    torch.manual_seed(0)
    classifier = ILlamaForImageClassification(ILlamaConfig(**TINY, num_labels=3)).eval()
    folder = tmp_path / "classifier"
    classifier.save_pretrained(folder)
    build_image_processor(32).save_pretrained(folder)
    from modeling_illama.conversion.convert import convert_checkpoint, export_official

    export_official(classifier, tmp_path / "authors.pth")  # a converted folder maps them too
    converted = convert_checkpoint(tmp_path / "authors.pth", tmp_path / "converted", num_heads=2)
    for saved in (folder, converted):
        auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
        assert auto_map["AutoModel"] == "modeling_illama.ILlamaModel"
        assert auto_map["AutoBackbone"] == "modeling_illama.ILlamaBackbone"
        assert auto_map["AutoModelForImageClassification"] == "modeling_illama.ILlamaForImageClassification"

    image = str(imagenet_sample_files[0])
    result = run_without_package(FEATURES_SCRIPT, [folder, image, tmp_path / "out"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["leaked"] == [] and report["model"].startswith("transformers_modules.")
    assert report["model"].endswith(".ILlamaModel")
    remote = torch.load(tmp_path / "out.pt")

    pixels = build_image_processor(32)(Image.open(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = classifier.illama(pixels, output_hidden_states=True)
    assert torch.allclose(remote["features"][0], outputs.last_hidden_state[0], atol=1e-5)
    assert torch.allclose(remote["pooled"], outputs.pooler_output, atol=1e-5)
    for feature_map, layer in zip(remote["maps"], (1, 2)):
        expected = outputs.hidden_states[layer][:, :-1].transpose(1, 2).reshape(1, 32, 4, 4)
        assert torch.allclose(feature_map, expected, atol=1e-5)


def test_segmentation_is_a_task_builder_and_its_fields_belong_to_it():
    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.tasks import TASK_BUILDERS

    assert ("semantic-segmentation", "illama") in TASK_BUILDERS
    assert load_recipe("camvid-mini", {"backbone": "some/folder"}).backbone == "some/folder"
    with pytest.raises(ValueError, match="'backbone' / 'segmentation'.*task semantic-segmentation"):
        load_recipe("cifar10-mini", {"backbone": "some/folder"})
    with pytest.raises(ValueError, match="soft_mask: none"):
        from modeling_illama.training.segmentation import check_segmentation_recipe

        check_segmentation_recipe(load_recipe("camvid-mini", {"soft_mask": "linear"}))
    with pytest.raises(ValueError, match="qat .* is for classification recipes"):
        check_segmentation_recipe(load_recipe("camvid-mini", {"qat": "int8-weight-only"}))


def test_segmentation_recipes_parse_and_ade20k_reduces_labels():
    from modeling_illama.training.recipes import load_recipe

    camvid = SegmentationSettings.from_recipe(load_recipe("camvid-mini"))
    assert camvid.label_names == CAMVID_NAMES and not camvid.reduce_labels
    for size in ("tiny", "base"):
        recipe = load_recipe(f"ade20k-upernet-{size}")
        ade = SegmentationSettings.from_recipe(recipe)
        assert recipe.task == "semantic-segmentation" and ade.num_labels == 150 and len(set(ade.label_names)) == 150
        assert (ade.crop_size, recipe.max_steps, recipe.global_batch_size, recipe.learning_rate) == (
            512,
            160000,
            16,
            6e-5,
        )
        assert (recipe.image_column, recipe.label_column, recipe.dataset) == ("image", "annotation", "scene_parse_150")
        assert recipe.lr_scheduler_kwargs == {"lr_end": 0.0, "power": 1.0}
    # ADE20K's 0 ("other objects") becomes void, class k becomes k - 1, void stays void
    image = Image.new("RGB", (4, 1))
    reduced = check_label_map(image, np.array([[0, 1, 150, 255]]), ade)
    assert reduced.tolist() == [[255, 0, 149, 255]]
    with pytest.raises(ValueError, match=r"ids \[150\]"):
        check_label_map(image, np.array([[151, 1, 2, 3]]), ade)  # 151 -> 150: not a class


def test_deployed_causal_mask_hides_later_patches_and_r1_shows_them():
    """r = 0 with the renormalised mask is strictly causal: the first patch cannot see the last. With the
    authors' post-softmax mask the softmax is normalised over ALL keys before masking, so a later patch still
    scales (through the denominator) what an earlier one sees; r = 1 is full attention in both styles."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[..., 24:, 24:] += 1.0  # only the last patch (row-major) changes
    first = {}
    for style in ("renormalized", "post_softmax"):
        for rate in (0.0, 1.0):
            backbone = tiny_backbone(out_indices=[4], soft_mask_rate=rate, mask_style=style)
            with torch.no_grad():
                before, after = backbone(x).feature_maps[0], backbone(changed).feature_maps[0]
            first[style, rate] = (after[..., 0, 0] - before[..., 0, 0]).abs().max().item()
            assert not torch.allclose(before[..., 3, 3], after[..., 3, 3])  # the changed patch itself
    assert first["renormalized", 0.0] == 0.0
    assert 0 < first["post_softmax", 0.0] < 0.1 * first["post_softmax", 1.0]
    assert first["renormalized", 1.0] > 1e-3 and first["post_softmax", 1.0] > 1e-3


def test_a_bad_validation_mask_stops_illama_train_before_training(tmp_path, capsys):
    """A wrong class id in the evaluation split would silently lower (or raise) mIoU: refused up front, by name."""
    from modeling_illama.cli.train import main as train_main

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.parquet").write_bytes((CAMVID_TINY / "train.parquet").read_bytes())
    rows = datasets.load_dataset(
        "parquet", data_files={"validation": str(CAMVID_TINY / "validation.parquet")}, split="validation"
    )
    masks = [np.asarray(row["annotation"]).copy() for row in rows]
    masks[1][5, 7] = 11  # camvid has classes 0..10 and void 255
    bad = rows.map(lambda row, index: {"annotation": Image.fromarray(masks[index])}, with_indices=True)
    bad.to_parquet(str(data / "validation.parquet"))
    out = tmp_path / "run"
    argv = ["--recipe", "camvid-mini", "--dataset", str(data), "--output-dir", str(out), "max_steps=1"]
    assert train_main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("illama-train: error: ")]
    assert len(errors) == 1 and "validation, example 1" in errors[0] and "ids [11]" in errors[0]
    assert not (out / "model.safetensors").exists()


def test_streamed_segmentation_data_is_transformed_and_needs_a_length(tmp_path):
    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.segmentation import build_segmentation_training

    tiny = {"num_hidden_layers": 4, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    overrides = {
        "dataset": str(CAMVID_TINY),
        "streaming": True,
        "model_overrides": tiny,
        "segmentation": {
            "crop_size": 64,
            "eval_size": [48, 64],
            "decoder_hidden_size": 16,
            "out_indices": [1, 2, 3, 4],
        },
        "global_batch_size": 2,
        "per_device_train_batch_size": 2,
    }
    with pytest.raises(ValueError, match="streaming data has no length: set max_steps=N or train_examples=N"):
        build_segmentation_training(load_recipe("camvid-mini", overrides, output_dir=str(tmp_path)))
    run = build_segmentation_training(
        load_recipe("camvid-mini", {**overrides, "train_examples": 6}, output_dir=str(tmp_path))
    )
    assert isinstance(run.trainer.train_dataset, datasets.IterableDataset)
    assert run.trainer.args.max_steps == 8 * 3  # 8 epochs of 6 examples at batch 2
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["labels"].shape == (2, 64, 64)
    labels = batch["labels"]
    assert ((labels < 11) | (labels == 255)).all() and (labels < 11).any()
