"""CPU-sized demonstration of Pang et al. (arXiv 2310.12973) on the bundled CIFAR-10 subset: the same small ViT
(recipe lm4ve-cifar10-mini) trained with and without a frozen LLaMA layer, under the same budget and seeds.

The frozen layer comes from a SMALL RANDOM LLaMA (D 256, MLP 688, 4 heads, 2 layers; transformers' LLaMA init,
seed 0) written in Meta's original format (params.json + consolidated.00.pth), the format the paper loads LLaMA-1
7B from; its last layer is used. A random layer cannot show what a pretrained one brings: this checks the whole
path end to end and measures the cost, not the paper's gain.

    python benchmarks/lm4ve_cifar10_mini.py [--seeds 0 1 2] [--epochs 6] [--out outputs/lm4ve-cifar10-mini]

Runs are interleaved (vit, vit-llama, next seed, ...) so that load changes hit both variants alike; the CPU and
the load average before each run are recorded. The results files are rewritten after every run, so an
interrupted benchmark still reports the seeds it finished.

Writes benchmarks/results/lm4ve_cifar10_mini.{json,md} and docs/images/lm4ve-cifar10-mini-maps-{vit,vit-llama}.png
(information-filtering maps of the seed-0 models on one test image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from modeling_illama.utils.machine import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4}


def write_random_meta_llama(path: str) -> str:
    """A random LLaMA saved the way Meta ships one: params.json + consolidated.00.pth (Meta key names)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from modeling_illama.llm.meta_checkpoint import HF_TO_META

    os.makedirs(path, exist_ok=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA, vocab_size=64))
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            index, inner = name.removeprefix("model.layers.").split(".", 1)
            state[f"layers.{index}.{HF_TO_META[inner]}"] = tensor.clone()
    torch.save(state, os.path.join(path, "consolidated.00.pth"))
    params = {
        "dim": LLAMA["hidden_size"],
        "n_heads": LLAMA["num_attention_heads"],
        "n_layers": LLAMA["num_hidden_layers"],
        "norm_eps": 1e-6,
        "multiple_of": 16,
        "vocab_size": -1,
    }
    with open(os.path.join(path, "params.json"), "w") as handle:
        json.dump(params, handle)
    return path


def machine() -> dict:
    def run(command):
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "uptime": run(["uptime"])}


def train(name: str, seed: int, out: str, dataset: str, overrides: list[str]) -> dict:
    folder = os.path.join(out, f"{name}-seed{seed}")
    command = [sys.executable, "-m", "modeling_illama.cli.train", "--recipe", "lm4ve-cifar10-mini"]
    command += ["--dataset", dataset, "--output-dir", folder, "--overwrite", "--no-plot", f"seed={seed}", *overrides]
    load = machine()["uptime"]
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.time() - start
    with open(os.path.join(folder, "all_results.json")) as handle:
        metrics = json.load(handle)
    return {
        "variant": name,
        "seed": seed,
        "top1": metrics["eval_top1"],
        "seconds": seconds,
        "load_before": load.split("load average:")[-1].strip(),
        "folder": folder,
    }


def summary(rows: list[dict], variant: str) -> dict:
    values = [row["top1"] for row in rows if row["variant"] == variant]
    seconds = [row["seconds"] for row in rows if row["variant"] == variant]
    return {
        "mean": statistics.mean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "mean_seconds": statistics.mean(seconds),
        "runs": len(values),
    }


def draw_maps(folder: str, image_path: str, png: str) -> None:
    layers = ["3"] + (["frozen_llm.layers.0", "frozen_llm"] if "llama" in os.path.basename(folder) else [])
    command = [sys.executable, "-m", "modeling_illama.cli.activation_maps", "--model", folder]
    command += ["--image", image_path, "--layers", *layers, "--output", png]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


VARIANTS = ("vit", "vit-llama")


def write_results(rows: list[dict], common: list[str], before: dict, after: dict) -> str:
    done = [variant for variant in VARIANTS if any(row["variant"] == variant for row in rows)]
    result = {
        "recipe": "lm4ve-cifar10-mini",
        "overrides": common,
        "frozen_llm": "random LLaMA (Meta format): " + json.dumps(LLAMA) + ", last layer, rms_norm_eps 1e-6",
        "runs": [{k: v for k, v in row.items() if k != "folder"} for row in rows],
        "summary": {variant: summary(rows, variant) for variant in done},
        "machine_before": before,
        "machine_after": after,
    }
    results = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "lm4ve_cifar10_mini.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    lines = [
        "| variant | test top-1 per seed | mean +- stdev (seeds) | seconds per run |",
        "|---|---|---|---|",
    ]
    for variant in done:
        per_seed = ", ".join(f"{100 * row['top1']:.2f}" for row in rows if row["variant"] == variant)
        stats = result["summary"][variant]
        lines.append(
            f"| {variant} | {per_seed} | {100 * stats['mean']:.2f} +- {100 * stats['stdev']:.2f} ({stats['runs']}) "
            f"| {stats['mean_seconds']:.0f} |"
        )
    lines += [
        "",
        f"CPU: {before['cpu']} ({before['cores']} cores); load average (1, 5, 15 min) before each run: "
        + "; ".join(f"{row['variant']} seed {row['seed']}: {row['load_before']}" for row in rows),
        f"Machine before: {before['uptime']}; after: {after.get('uptime', 'unfinished')}",
    ]
    with open(os.path.join(results, "lm4ve_cifar10_mini.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's num_train_epochs")
    parser.add_argument("--dataset", default=os.path.join(ROOT, "data", "cifar10-mini"))
    parser.add_argument("--out", default=os.path.join(ROOT, "outputs", "lm4ve-cifar10-mini"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, ROOT)

    llama = write_random_meta_llama(os.path.join(args.out, "random-llama-meta"))
    common = [f"num_train_epochs={args.epochs}"] if args.epochs else []
    before = machine()
    rows = []
    for seed in args.seeds:  # interleaved, so load changes hit both variants alike
        rows.append(train("vit", seed, args.out, args.dataset, common))
        write_results(rows, common, before, {})
        rows.append(train("vit-llama", seed, args.out, args.dataset, [*common, f"frozen_llm={llama}"]))
        write_results(rows, common, before, {})
        print(json.dumps([{k: v for k, v in row.items() if k != "folder"} for row in rows[-2:]]), flush=True)

    from datasets import load_dataset

    test = load_dataset("parquet", data_files={"test": os.path.join(args.dataset, "test.parquet")}, split="test")
    image_path = os.path.join(args.out, "test-image.png")
    test[3]["img"].resize((128, 128)).save(image_path)  # upscaled only for display; the processor resizes to 32
    images = os.path.join(ROOT, "docs", "images")
    os.makedirs(images, exist_ok=True)
    for variant in VARIANTS:
        draw_maps(
            os.path.join(args.out, f"{variant}-seed{args.seeds[0]}"),
            image_path,
            os.path.join(images, f"lm4ve-cifar10-mini-maps-{variant}.png"),
        )
    print(write_results(rows, common, before, machine()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
