"""Train a Transformers ViT of the main job's shape (the recipe's width, depth, heads, patch and image size; MLP 4x the
width, as in ViT) on cifar10-mini with the cifar10-mini recipe's data, augmentation, optimizer groups, schedule and label smoothing, as the trained peer of
the analysis comparisons (`illama-analyze attention-rank --compare`, calibration). The iLLaMA trainer builds iLLaMA
models only; this is the same recipe in a plain loop (the recipe has no mixup; there is no soft mask in a ViT).

    python benchmarks/vit_peer_cifar10_mini.py --output-dir runs/vit-cifar10-mini num_train_epochs=4 seed=1
"""

import argparse
import json
import logging
import math

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTForImageClassification, get_cosine_with_min_lr_schedule_with_warmup

from modeling_illama import load_preset
from modeling_illama.labels import label_fields
from modeling_illama.training.data import collate_images, load_image_dataset, with_transform
from modeling_illama.training.models import build_image_processor
from modeling_illama.training.optim import optimizer_param_groups
from modeling_illama.training.recipes import load_recipe
from modeling_illama.training.transforms import train_transform


def build_vit(label_names: list[str], recipe) -> ViTForImageClassification:
    """A ViT of the recipe's iLLaMA shape (width, depth, heads, patch, image size) with ViT's usual 4x-wide MLP."""
    illama = load_preset(recipe.model, **recipe.model_overrides)
    config = ViTConfig(
        hidden_size=illama.hidden_size,
        num_hidden_layers=illama.num_hidden_layers,
        num_attention_heads=illama.num_attention_heads,
        intermediate_size=4 * illama.hidden_size,
        patch_size=illama.patch_size,
        image_size=illama.image_size,
        **label_fields(label_names),
    )
    model = ViTForImageClassification(config)
    # the same weight-decay exemptions as iLLaMA's no_weight_decay() (timm convention)
    model.no_weight_decay = lambda: {"vit.embeddings.position_embeddings", "vit.embeddings.cls_token"}
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/cifar10-mini")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe field overrides, e.g. seed=1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    recipe = load_recipe("cifar10-mini", args.overrides, output_dir=args.output_dir)
    torch.manual_seed(recipe.seed)
    data = load_image_dataset(args.dataset, recipe.train_split, shuffle=False)
    model = build_vit(data.label_names, recipe)
    loader = DataLoader(
        with_transform(data, train_transform(recipe, model.config.image_size)),
        batch_size=recipe.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collate_images,
        generator=torch.Generator().manual_seed(recipe.seed),
        drop_last=True,
    )
    accumulation = recipe.gradient_accumulation_for(1)
    steps_per_epoch = len(loader) // accumulation
    total = recipe.max_steps if recipe.max_steps > 0 else math.ceil(recipe.num_train_epochs * steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch) if recipe.warmup_epochs is not None else recipe.warmup_steps
    groups = optimizer_param_groups(model, recipe.weight_decay)
    optimizer = torch.optim.AdamW(
        groups, lr=recipe.learning_rate, betas=(recipe.adam_beta1, recipe.adam_beta2), eps=recipe.adam_epsilon
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup, total, min_lr=recipe.lr_scheduler_kwargs.get("min_lr", 0.0)
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.train()
    step = 0
    with tqdm(total=total, desc="ViT peer") as bar:
        while step < total:
            for index, batch in enumerate(loader):
                loss = loss_fn(model(pixel_values=batch["pixel_values"]).logits, batch["labels"]) / accumulation
                loss.backward()
                if (index + 1) % accumulation:
                    continue
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{accumulation * loss.item():.3f}")
                if step >= total:
                    break
    model.save_pretrained(args.output_dir)
    processor = build_image_processor(
        recipe, model.config.image_size
    )  # the processor illama-train saves with the iLLaMA run
    processor.save_pretrained(args.output_dir)
    with open(f"{args.output_dir}/recipe.json", "w") as handle:
        json.dump(recipe.recipe_dict(), handle, indent=2, default=str)


if __name__ == "__main__":
    main()
