"""Train a Transformers ViT of the main job's shape (width 192, depth 6, 3 heads, patch 4, 32 px) on cifar10-mini with
the cifar10-mini recipe's data, augmentation, optimizer and schedule, as the trained peer of the attention-rank
comparison (`illama-analyze attention-rank --compare`). The iLLaMA trainer builds iLLaMA models only; this is the
same recipe in a plain loop.

    python benchmarks/vit_peer_cifar10_mini.py --output-dir runs/vit-cifar10-mini epochs=4
"""

import argparse
import json
import logging

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTForImageClassification

from modeling_illama import build_image_processor
from modeling_illama.training.data import collate_images, load_image_dataset, with_transform
from modeling_illama.training.optim import create_adamw, create_warmup_cosine_scheduler
from modeling_illama.training.recipes import load_recipe
from modeling_illama.training.transforms import train_transform

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dataset", default="data/cifar10-mini")
parser.add_argument("--output-dir", required=True)
parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe field overrides, e.g. epochs=4")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO)
recipe = load_recipe("cifar10-mini", args.overrides)
torch.manual_seed(recipe.seed)
data = load_image_dataset(args.dataset, recipe.train_split, shuffle=False)
names = data.label_names
model = ViTForImageClassification(
    ViTConfig(
        hidden_size=192,
        num_hidden_layers=6,
        num_attention_heads=3,
        intermediate_size=768,
        image_size=32,
        patch_size=4,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
)
loader = DataLoader(
    with_transform(data, train_transform(recipe, 32)), batch_size=recipe.batch_size, shuffle=True,
    collate_fn=collate_images, generator=torch.Generator().manual_seed(recipe.seed), drop_last=True,
)  # fmt: skip
total = int(recipe.epochs * len(loader))
optimizer = create_adamw(model, recipe.learning_rate, recipe.weight_decay, recipe.adam_betas, recipe.adam_eps)
scheduler = create_warmup_cosine_scheduler(
    optimizer, recipe.learning_rate, recipe.min_lr, int(recipe.warmup_epochs * len(loader)), total
)
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
model.train()
with tqdm(total=total, desc="ViT peer") as bar:
    while bar.n < total:
        for batch in loader:
            loss = loss_fn(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if bar.n >= total:
                break
model.save_pretrained(args.output_dir)
processor = build_image_processor(32)
processor.crop_pct = recipe.eval_crop_pct
processor.save_pretrained(args.output_dir)
with open(f"{args.output_dir}/recipe.json", "w") as handle:
    json.dump(recipe.to_dict(), handle, indent=2)
