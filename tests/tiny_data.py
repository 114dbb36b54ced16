"""Tiny image data sets and recipe fields shared by the training tests (three classes of random 16 x 16 images)."""

import io
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

CLASSES = ["a", "b", "c"]
# model_overrides of illama-tiny-224 for a one-block, 32-wide iLLaMA on 16 px images (patch 8)
TINY_MODEL_OVERRIDES = {
    "hidden_size": 32,
    "num_attention_heads": 1,
    "num_hidden_layers": 1,
    "image_size": 16,
    "patch_size": 8,
}
# the recipe fields that fit any model's training run to write_tiny_image_splits data: evaluate on its test split
# every epoch (no crop), batches of 4 accumulated to 8, one warm-up epoch, no augmentation beyond the crop, a log
# line every step, no data-loading processes
TINY_RUN_FIELDS = dict(
    eval_split="test",
    eval_strategy="epoch",
    eval_crop_pct=1.0,
    global_batch_size=8,
    per_device_train_batch_size=4,
    warmup_epochs=1,
    rand_augment=None,
    random_erasing=0.0,
    logging_steps=1,
    dataloader_num_workers=0,
)


def write_tiny_image_splits(root, n_train: int = 24, n_test: int = 8, broken=()) -> Path:
    """`root/train.parquet` and `root/test.parquet`: random PNGs labelled i % 3 (a ClassLabel of CLASSES);
    the train rows listed in `broken` hold bytes that are no image."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = {"image": [], "label": []}
        for i in range(n):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
            data = b"broken" if (split == "train" and i in broken) else buffer.getvalue()
            rows["image"].append({"bytes": data, "path": None})
            rows["label"].append(i % 3)
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=CLASSES)})
        Dataset.from_dict(rows, features=features).to_parquet(str(root / f"{split}.parquet"))
    return root


def tiny_recipe_fields(model_overrides: dict, **changes) -> dict:
    """The fields of a two-epoch recipe for a tiny iLLaMA on write_tiny_image_splits data (no augmentation
    beyond the crop, linear soft mask over the first epoch), with `changes` applied."""
    fields = dict(
        TINY_RUN_FIELDS,
        model="illama-tiny-224",
        model_overrides=model_overrides,
        train_split="train",
        crop_scale=[0.5, 1.0],
        mixup=0.0,
        cutmix=0.0,
        label_smoothing=0.1,
        num_train_epochs=2,
        learning_rate=1e-3,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": 1e-5},
        weight_decay=0.05,
        soft_mask="linear",
        soft_mask_cutoff_epochs=1,
        save_strategy="epoch",
        save_total_limit=1,
    )
    fields.update(changes)
    return fields
