"""Robustness metrics (modeling_illama.analysis.robustness) on small local stand-ins built from the bundled
ImageNet images: ImageNet-C mCE with AlexNet normalisation, ImageNet-R top-1 over its 200 classes, ImageNet-Sketch
top-1 (folder and parquet), and FGSM / PGD,
each checked against a computation written out here."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_vit_classifier
from torch import nn

from modeling_illama.analysis import robustness
from modeling_illama.analysis.robustness import (
    ALEXNET_ERROR,
    FGSM,
    PGD,
    AttackSettings,
    adversarial_top1,
    attack,
    center_crop_transform,
    evaluate_imagenet_c,
    evaluate_subset,
    subset_class_indices,
    target_map,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = 32


def wnids():
    rows = (robustness.imagenet_wnids.__wrapped__)()
    return list(rows)


@pytest.fixture(scope="module")
def model():
    # one 32-wide block; large weights (initializer_range 0.5): predictions depend on the image
    return tiny_vit_classifier(
        num_labels=1000,
        image_size=SIZE,
        hidden_size=32,
        num_hidden_layers=1,
        intermediate_size=64,
        initializer_range=0.5,
    )


@pytest.fixture(scope="module")
def crops(imagenet_sample_files):
    """The eight sample images as 32 x 32 RGB crops (ImageNet-C images are already at the model's size)."""
    images = []
    for path in imagenet_sample_files:
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        images.append(image.crop((0, 0, side, side)).resize((SIZE, SIZE), Image.BICUBIC))
    return images


def hand_logits(model, images):
    """PIL -> [0, 1] -> normalised -> logits, without torchvision."""
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()).logits


def corrupt(image, corruption, severity, seed):
    array = np.asarray(image, dtype=np.float32) / 255.0
    if corruption == "gaussian_noise":
        array = array + np.random.default_rng(seed).normal(0.0, (0.08, 0.3)[severity - 1], array.shape)
    else:  # brightness
        array = array + (0.1, 0.4)[severity - 1]
    return Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))


def test_imagenet_c_mce_against_hand_computation(model, crops, tmp_path):
    all_wnids = wnids()
    clean = hand_logits(model, crops).argmax(-1)
    assert len(set(clean.tolist())) > 2  # the random model does look at the image
    # label = the clean prediction for even images, another class for odd ones: accuracies strictly inside (0, 1)
    labels = [int(c) if i % 2 == 0 else (int(c) + 1) % 1000 for i, c in enumerate(clean)]
    stand_in = {}
    for corruption in ("gaussian_noise", "brightness"):
        for severity in (1, 2):
            images = [corrupt(img, corruption, severity, seed=i) for i, img in enumerate(crops)]
            stand_in[corruption, severity] = images
            for i, (image, label) in enumerate(zip(images, labels)):
                folder = tmp_path / corruption / str(severity) / all_wnids[label]
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{i}.png")

    result = evaluate_imagenet_c(model, str(tmp_path), center_crop_transform(SIZE, MEAN, STD), batch_size=3)

    expected_ce = {}
    for corruption in ("gaussian_noise", "brightness"):
        errors = []
        for severity in (1, 2):
            predictions = hand_logits(model, stand_in[corruption, severity]).argmax(-1).tolist()
            accuracy = np.mean([p == label for p, label in zip(predictions, labels)])
            assert result["top1"][corruption][severity] == pytest.approx(accuracy)
            errors.append(1.0 - accuracy)
        expected_ce[corruption] = np.mean(errors) / ALEXNET_ERROR[corruption]
    assert result["corruption_error"] == pytest.approx(expected_ce)
    assert result["mce"] == pytest.approx(np.mean(list(expected_ce.values())))
    assert not result["complete"]
    accuracies = [a for by_severity in result["top1"].values() for a in by_severity.values()]
    assert any(0.0 < a < 1.0 for a in accuracies)


def test_alexnet_table_and_subsets():
    assert len(ALEXNET_ERROR) == 15 and ALEXNET_ERROR["brightness"] == 0.564592
    # a model at AlexNet's error everywhere has mCE 1 (100 in the paper's units)
    at_alexnet = {c: {s: 1.0 - e for s in range(1, 6)} for c, e in ALEXNET_ERROR.items()}
    result = robustness.corruption_errors(at_alexnet)
    assert result["mce"] == pytest.approx(1.0) and result["complete"]
    for name, start in (("imagenet-a", [6, 11, 13, 15, 17]), ("imagenet-r", [1, 2, 4, 6, 8])):
        indices = subset_class_indices(name)
        assert len(indices) == len(set(indices)) == 200 and indices[:5] == start and indices == sorted(indices)
    data = json.loads((robustness.resources.files(robustness.__package__) / robustness.SUBSETS_FILE).read_text())
    assert "Hendrycks" in data["source"]
    # dataset label ids -> subset positions: by wnid, or by position for 200 unnamed classes
    r = list(robustness.subset_wnids("imagenet-r"))
    assert target_map([r[5], r[0]], tuple(r), "x") == [5, 0]
    assert target_map([str(i) for i in range(200)], tuple(r), "x") is None
    with pytest.raises(ValueError, match="not among"):
        target_map(["n01440764"], tuple(r), "ImageNet-R")  # tench is not an ImageNet-R class
    with pytest.raises(ValueError, match="sorted-wnid order"):
        target_map(["cat", "dog"], tuple(r), "ImageNet-R")


def test_imagenet_r_top1_over_200_classes(model, crops, tmp_path):
    r_wnids = list(robustness.subset_wnids("imagenet-r"))
    indices = subset_class_indices("imagenet-r")
    restricted = hand_logits(model, crops)[:, indices].argmax(-1)
    labels = [int(p) if i < 5 else (int(p) + 7) % 200 for i, p in enumerate(restricted)]  # 5 of 8 right
    for i, (image, label) in enumerate(zip(crops, labels)):
        folder = tmp_path / r_wnids[label]
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i}.png")
    result = evaluate_subset(model, str(tmp_path), "train", "imagenet-r", center_crop_transform(SIZE, MEAN, STD))
    assert result == {"top1": pytest.approx(5 / 8), "images": 8}
    # the full 1000-way argmax would score differently: the restriction matters
    full = hand_logits(model, crops).argmax(-1).tolist()
    assert np.mean([f == indices[label] for f, label in zip(full, labels)]) != pytest.approx(5 / 8)


def test_imagenet_sketch_top1_folder_and_parquet(model, crops, tmp_path):
    """1000-class top-1, from a folder of wnid-named classes and from a parquet file whose ClassLabel holds 1000
    non-wnid names in ImageNet order (the layout of the Hub copy); both against the hand argmax."""
    import io

    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    predicted = hand_logits(model, crops).argmax(-1).tolist()
    labels = [p if i in (0, 3, 4) else (p + 1) % 1000 for i, p in enumerate(predicted)]  # 3 of 8 right
    names = wnids()
    for i, (image, label) in enumerate(zip(crops, labels)):
        (tmp_path / "folder" / names[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "folder" / names[label] / f"{i}.png")
    transform = center_crop_transform(SIZE, MEAN, STD)
    result = evaluate_subset(model, str(tmp_path / "folder"), "train", None, transform)
    assert result == {"top1": pytest.approx(3 / 8), "images": 8}

    rows = {"image": [], "label": labels}
    for image in crops:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows["image"].append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[f"class {i}" for i in range(1000)])})
    (tmp_path / "hub").mkdir()
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "hub" / "test.parquet"))
    result = evaluate_subset(model, str(tmp_path / "hub"), "test", None, transform)
    assert result == {"top1": pytest.approx(3 / 8), "images": 8}


class LinearClassifier(nn.Module):
    """logits = W x + b: the gradient of the cross-entropy is known in closed form."""

    def __init__(self, num_classes=4, dim=3 * 4 * 4):
        super().__init__()
        weight = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(num_classes, dtype=torch.float64))

    def forward(self, pixel_values):
        return SimpleNamespace(logits=pixel_values.flatten(1) @ self.weight.T + self.bias)


def hand_step(model, x, labels, step, lower, upper, original, epsilon):
    """One signed step with the closed-form gradient (softmax - onehot) W of the mean cross-entropy."""
    with torch.no_grad():
        probabilities = torch.softmax(model(x).logits, dim=-1)
        gradient = ((probabilities - nn.functional.one_hot(labels, 4)) @ model.weight).view_as(x)
        x = x + step * gradient.sign()
        x = torch.maximum(torch.minimum(x, original + epsilon), original - epsilon)
        return torch.maximum(torch.minimum(x, upper), lower)


def test_fgsm_and_pgd_against_closed_form_gradients():
    model = LinearClassifier().eval()
    generator = torch.Generator().manual_seed(1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = (torch.rand(16, 3, 4, 4, generator=generator, dtype=torch.float64) - mean) / std  # float64: exact signs
    labels = model(pixels).logits.argmax(-1)  # every image correct before the attack
    lower, upper = -mean / std, (1 - mean) / std

    for settings in (FGSM, PGD, AttackSettings(epsilon=8 / 255, step_size=2 / 255, steps=4, random_start=True)):
        epsilon, step = settings.epsilon / std, settings.step_size / std
        got = attack(model, pixels, labels, settings, MEAN, STD, torch.Generator().manual_seed(3))
        start = pixels.clone()
        if settings.random_start:
            noise = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            start = start + (2 * noise - 1) * epsilon
        expected = torch.maximum(torch.minimum(start, upper), lower)
        for _ in range(settings.steps):
            expected = hand_step(model, expected, labels, step, lower, upper, pixels, epsilon)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        assert ((got - pixels).abs() <= epsilon + 1e-6).all() and (got >= lower - 1e-6).all()
        assert (got <= upper + 1e-6).all()

        loader = [{"pixel_values": pixels, "labels": labels}]
        accuracy, images = adversarial_top1(model, loader, settings, MEAN, STD, seed=3)
        hand = (model(expected).logits.argmax(-1) == labels).float().mean().item()
        assert images == 16 and accuracy == pytest.approx(hand)
    assert FGSM == AttackSettings(1 / 255, 1 / 255, 1, False) and PGD == AttackSettings(1 / 255, 0.5 / 255, 5, True)
    assert accuracy < 1.0  # the strong attack does flip predictions


def test_cli_writes_the_metrics(model, crops, tmp_path, capsys):
    from modeling_illama import build_image_processor
    from modeling_illama.cli.robustness import main

    model.save_pretrained(tmp_path / "model")
    processor = build_image_processor(SIZE)
    pixels = processor(crops, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    a_wnids = list(robustness.subset_wnids("imagenet-a"))
    a_pred = logits[:, subset_class_indices("imagenet-a")].argmax(-1).tolist()
    labels = [p if i % 2 else (p + 1) % 200 for i, p in enumerate(a_pred)]  # 4 of 8 right
    for i, (image, label) in enumerate(zip(crops, labels)):
        (tmp_path / "a" / a_wnids[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "a" / a_wnids[label] / f"{i}.png")
    code = main(
        ["--model", str(tmp_path / "model"), "--imagenet-a", str(tmp_path / "a"), "--output", str(tmp_path / "r.json")]
    )
    assert code == 0 and "imagenet_a top-1 50.00%" in capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["imagenet_a"] == {"top1": 0.5, "images": 8}
    assert main(["--model", str(tmp_path / "model"), "--imagenet-r", str(tmp_path / "a")]) == 2  # A classes, not R

    # FGSM / PGD on 1000-class data: clean top-1 by hand, the authors' settings reported in 1/255 units
    full = logits.argmax(-1).tolist()
    for i, (image, prediction) in enumerate(zip(crops, full)):
        label = prediction if i < 6 else (prediction + 1) % 1000  # 6 of 8 right before the attack
        (tmp_path / "val" / wnids()[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "val" / wnids()[label] / f"{i}.png")
    args = [
        "--model",
        str(tmp_path / "model"),
        "--adversarial",
        str(tmp_path / "val"),
        "--output",
        str(tmp_path / "v"),
    ]
    assert main(args) == 0
    adversarial = json.loads((tmp_path / "v").read_text())["adversarial"]
    assert adversarial["clean_top1"] == 0.75 and adversarial["images"] == 8
    assert adversarial["fgsm_settings"] == {
        "epsilon_255": 1.0,
        "step_size_255": 1.0,
        "steps": 1,
        "random_start": False,
    }
    assert adversarial["pgd_settings"] == {"epsilon_255": 1.0, "step_size_255": 0.5, "steps": 5, "random_start": True}
    assert 0.0 <= adversarial["pgd_top1"] <= 0.75 and 0.0 <= adversarial["fgsm_top1"] <= 0.75
