"""Data loading (parquet, image folder, streaming split across processes), transforms and collate."""

import io

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from modeling_illama.training.data import collate_images, load_image_dataset, with_transform
from modeling_illama.training.models import build_image_processor
from modeling_illama.training.recipes import load_recipe
from modeling_illama.training.transforms import processor_transform, train_transform

NAMES = ["cat", "dog", "fish"]


def png_bytes(value: int, size=(8, 8)) -> bytes:
    """An RGB image whose top-left red value encodes `value` (to identify examples after loading)."""
    array = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    array[0, 0, 0] = value
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_split(path, values, image_key="img", label_key="label", broken=()):
    rows = {image_key: [], label_key: []}
    for v in values:
        data = b"this is not an image" if v in broken else png_bytes(v)
        rows[image_key].append({"bytes": data, "path": None})
        rows[label_key].append(v % len(NAMES))
    features = Features({image_key: ImageFeature(), label_key: ClassLabel(names=NAMES)})
    Dataset.from_dict(rows, features=features).to_parquet(str(path))


def first_red(image: Image.Image) -> torch.Tensor:
    return torch.tensor(image.getpixel((0, 0))[0])


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet")
    write_split(root / "train.parquet", range(24), broken={5})
    write_split(root / "test.parquet", range(100, 106))
    return root


def test_parquet_folder_detects_columns_labels_and_splits(parquet_dir):
    train = load_image_dataset(str(parquet_dir), "train")
    assert (train.image_column, train.label_column, train.label_names) == ("img", "label", NAMES)
    assert len(train.dataset) == 24 and train.num_labels == 3
    test = load_image_dataset(str(parquet_dir / "test.parquet"), "test")
    assert len(test.dataset) == 6
    with pytest.raises(ValueError, match="no parquet file for split 'validation'"):
        load_image_dataset(str(parquet_dir), "validation")


def test_undecodable_images_are_skipped_and_counted(parquet_dir):
    train = load_image_dataset(str(parquet_dir), "train")
    dataset = with_transform(train, first_red)
    batch = collate_images([dataset[i] for i in range(8)])
    assert batch["num_undecodable"] == 1
    assert batch["pixel_values"].tolist() == [0, 1, 2, 3, 4, 6, 7]  # example 5 is the broken one
    assert batch["labels"].tolist() == [0, 1, 2, 0, 1, 0, 1]


def test_column_auto_detection_and_overrides(tmp_path):
    rows = {
        "picture": [{"bytes": png_bytes(i), "path": None} for i in range(4)],
        "y": [0, 1, 0, 1],
        "note": ["a", "b", "c", "d"],
    }
    Dataset.from_dict(
        rows, features=Features({"picture": ImageFeature(), "y": Value("int64"), "note": Value("string")})
    ).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match=r"no label column found among \['picture', 'y', 'note'\]"):
        load_image_dataset(str(tmp_path), "train")
    data = load_image_dataset(str(tmp_path), "train", label_column="y")
    assert (data.image_column, data.label_column, data.label_names) == ("picture", "y", ["0", "1"])
    assert data.dataset.column_names == ["picture", "y"]
    with pytest.raises(ValueError, match="image column 'photo' is not in the dataset"):
        load_image_dataset(str(tmp_path), "train", image_column="photo", label_column="y")


def test_image_folder_uses_folder_names_as_classes(tmp_path):
    for split in ("train", "test"):
        for k, name in enumerate(NAMES):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                (tmp_path / split / name / f"{i}.png").write_bytes(png_bytes(10 * k + i))
    data = load_image_dataset(str(tmp_path), "train")
    assert data.label_names == NAMES and len(data.dataset) == 6
    dataset = with_transform(data, first_red)
    batch = collate_images([dataset[i] for i in range(6)])
    assert sorted(zip(batch["labels"].tolist(), batch["pixel_values"].tolist())) == [
        (0, 0),
        (0, 1),
        (1, 10),
        (1, 11),
        (2, 20),
        (2, 21),
    ]


@pytest.mark.parametrize("num_files", [1, 2])
def test_streaming_is_shuffled_and_split_across_processes_without_overlap(tmp_path, num_files):
    values = list(range(40))
    for f in range(num_files):
        write_split(tmp_path / f"train-{f:05d}-of-{num_files:05d}.parquet", values[f::num_files])
    seen = []
    for rank in (0, 1):
        data = load_image_dataset(
            str(tmp_path), "train", streaming=True, shuffle_buffer=16, seed=3, rank=rank, world_size=2
        )
        assert data.label_names == NAMES and data.streaming
        stream = with_transform(data, first_red)
        seen.append([int(example["pixel_values"]) for example in stream])
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == values
    assert abs(len(seen[0]) - len(seen[1])) <= 2
    assert seen[0] + seen[1] != sorted(seen[0] + seen[1])  # shuffled


def test_train_and_eval_transforms():
    recipe = load_recipe("illama-tiny-in1k")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    torch.manual_seed(0)
    out = train_transform(recipe, 64)(image)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    evaluation = processor_transform(build_image_processor(recipe, 64))
    first = evaluation(image)
    assert first.shape == (3, 64, 64) and torch.equal(first, evaluation(image))  # deterministic
    mini = load_recipe("cifar10-mini")
    small = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    processed = build_image_processor(mini, 32)(small, return_tensors="pt")["pixel_values"][0]
    expected = (
        torch.tensor(np.asarray(small), dtype=torch.float32).permute(2, 0, 1) / 255
        - torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    ) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(processed, expected, atol=1e-5)  # crop_pct 1 at 32 px: identity


def test_padded_crop_is_a_shifted_window_of_the_reflect_padded_image():
    recipe = load_recipe(
        "cifar10-mini", ["hflip=0", "rand_augment=null"]
    )  # the crop alone (the recipe adds RandAugment)
    assert recipe.crop_padding == 4
    array = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(array, ((4, 4), (4, 4), (0, 0)), mode="reflect").astype(np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    transform = train_transform(recipe, 32)
    for seed in range(3):
        torch.manual_seed(seed)
        out = transform(Image.fromarray(array)).permute(1, 2, 0).numpy()
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.allclose(out, (padded[dy : dy + 32, dx : dx + 32] - mean) / std, atol=1e-5)
        ]
        assert len(matches) >= 1
