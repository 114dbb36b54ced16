"""The `illama-analyze` tools on trained small models: the cifar10-mini main job (iLLaMA) against its ViT peer of the
same shape (benchmarks/vit_peer_cifar10_mini.py, same data, augmentation, optimizer and schedule), over several seeds.

Per seed: train both (a shortened main job: `--train` overrides), then calibration (ECE, 15 bins) on the test split, attention
rank (iLLaMA at r = 0 and r = 1, and the ViT; `--rank-images` test images), int8 post-training quantization of the
first seed's iLLaMA model (on `--quantize-images` test images: top-1 change, weight size, CPU latency vs fp32) and its ONNX export. Shape bias needs ImageNet-1K
classes, which no CPU-trained model has: it is run on random-weight iLLaMA-T and ViT-T (DeiT-T shape) models at
224 px, labelled as such (chance level is the expected answer; the run shows the tool end to end).
Every measurement goes through the `illama-analyze` command line. Results: mean and standard deviation over seeds,
the CPU model and the load average before and after, in benchmarks/results/analysis_small_models.json; the seed-0
pictures go to docs/images/analysis-*.png.

    python benchmarks/analysis_small_models.py --work-dir runs/analysis-bench --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from modeling_illama.utils.machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "analysis_small_models.json"
IMAGES = REPO / "docs" / "images"


def machine() -> dict:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def run(command: list[str], output: Path | None = None) -> float:
    """Run a command from the checkout; skipped when `output` already exists (a rerun after an interruption)."""
    if output is not None and output.is_file():
        return 0.0
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - start


def analyze(*arguments: str) -> list[str]:
    """An illama-analyze command; --overwrite: a rerun measures the retrained models into the same folders."""
    return [sys.executable, "-m", "modeling_illama.cli.analyze", *arguments, "--overwrite"]


def trained(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file()


def train_all(work: Path, seeds: list[int], overrides: list[str], dataset: str) -> dict:
    """Train every model not trained yet, all at once (one process per model, one thread each: on a shared
    machine each process gets its own share of the CPU). Returns {seed: {"illama": dir, "vit": dir}}."""
    runs, processes = {}, {}
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for seed in seeds:
        illama, vit = work / f"illama-seed{seed}", work / f"vit-seed{seed}"
        runs[seed] = {"illama": str(illama), "vit": str(vit)}
        settings = [*overrides, f"seed={seed}"]
        commands = {
            illama: [sys.executable, "-m", "modeling_illama.cli.train", "--recipe", "cifar10-mini", "--dataset",
                     dataset, "--output-dir", str(illama), "--overwrite", "eval_strategy=no", "save_strategy=no",
                     *settings],
            vit: [sys.executable, "benchmarks/vit_peer_cifar10_mini.py", "--dataset", dataset, "--output-dir",
                  str(vit), *settings],
        }  # fmt: skip
        for folder, command in commands.items():
            if not trained(folder):
                print("+", " ".join(command), flush=True)
                log = open(work / f"{folder.name}.log", "w")
                processes[folder.name] = (subprocess.Popen(command, cwd=REPO, env=environment, stdout=log,
                                                           stderr=subprocess.STDOUT), time.perf_counter())  # fmt: skip
    seconds = {}
    for name, (process, start) in processes.items():
        if process.wait():
            raise SystemExit(f"training {name} failed (see {work / name}.log)")
        seconds[name] = time.perf_counter() - start
    return runs, seconds


def random_imagenet_models(work: Path) -> tuple[Path, Path]:
    """Random-weight iLLaMA-T and ViT-T (DeiT-T shape), 1,000 classes, 224 px, saved with the eval transform."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from modeling_illama import ILlamaForImageClassification, build_image_processor, load_preset
    from modeling_illama.labels import label_fields

    illama, vit = work / "random-illama-tiny-in1k", work / "random-vit-tiny-in1k"
    labels = {i: f"class_{i}" for i in range(1000)}
    torch.manual_seed(0)
    if not (illama / "config.json").is_file():
        ILlamaForImageClassification(load_preset("illama-tiny-224", id2label=labels)).save_pretrained(illama)
        build_image_processor(224).save_pretrained(illama)
    if not (vit / "config.json").is_file():
        config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                           **label_fields(list(labels.values())))  # fmt: skip
        ViTForImageClassification(config).save_pretrained(vit)
        build_image_processor(224).save_pretrained(vit)
    return illama, vit


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/analysis-bench")
    parser.add_argument("--dataset", default="data/cifar10-mini")
    parser.add_argument("--stimuli", default="tests/data/cue-conflict", help="cue-conflict folder")
    parser.add_argument("--train-only", action="store_true", help="only train the models (no measurement)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--train",
        nargs="*",
        default=["max_steps=40", "warmup_epochs=0.25", "soft_mask_cutoff_epochs=0.25"],
        help="recipe overrides of the shortened main job (both models)",
    )
    parser.add_argument("--rank-images", type=int, default=32)
    parser.add_argument("--quantize-images", type=int, default=200, help="test images evaluated fp32 vs int8")
    parser.add_argument("--results", default=str(RESULTS), help="the JSON file written")
    args = parser.parse_args()
    work = (REPO / args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report = {"machine_before": machine(), "training": ["recipe cifar10-mini", *args.train], "seeds": args.seeds,
              "dataset": args.dataset}  # fmt: skip
    runs, report["train_wall_seconds_concurrent"] = train_all(work, args.seeds, args.train, args.dataset)
    report["machine_after_training"] = machine()
    if args.train_only:
        return

    per_seed = {}
    for seed, pair in runs.items():
        out = work / f"analysis-seed{seed}"
        measured = {}
        for family in ("illama", "vit"):
            folder = out / f"calibration-{family}"
            run(analyze("calibration", "--model", pair[family], "--dataset", args.dataset, "--split", "test",
                        "--output-dir", str(folder)), folder / "calibration.json")  # fmt: skip
            calibration = json.loads((folder / "calibration.json").read_text())
            measured[family] = {"ece": calibration["ece"], "top1": calibration["top1"]}
        run(analyze("attention-rank", "--model", pair["illama"], "--compare", pair["vit"], "--dataset", args.dataset,
                    "--split", "test", "--num-images", str(args.rank_images), "--rates", "0", "1",
                    "--output-dir", str(out / "attention-rank")), out / "attention-rank" / "attention_rank.json")  # fmt: skip
        ranks = json.loads((out / "attention-rank" / "attention_rank.json").read_text())["results"]
        measured["attention_rank_layer1_head1"] = {label: r["first_layer_first_head"] for label, r in ranks.items()}
        measured["attention_rank_mean_over_layers_heads"] = {
            label: statistics.fmean(v for layer in r["rank_mean"] for v in layer) for label, r in ranks.items()
        }
        measured["num_tokens"] = next(iter(ranks.values()))["num_tokens"]
        per_seed[seed] = measured
        if seed != args.seeds[0]:  # quantization and export: the first seed's model (the CPU time is the limit)
            continue
        run(analyze("quantize", "--model", pair["illama"], "--dataset", args.dataset, "--split", "test",
                    "--limit", str(args.quantize_images), "--output-dir", str(out / "quantize")),
            out / "quantize" / "quantization.json")  # fmt: skip
        quantization = json.loads((out / "quantize" / "quantization.json").read_text())
        measured["int8_dynamic"] = {
            key: quantization[key]
            for key in ("top1", "top1_change", "weights_bytes", "size_ratio", "latency_seconds", "latency_ratio",
                        "latency_batch_size", "torch_threads", "machine")
        }  # fmt: skip
        run(
            analyze("export-onnx", "--model", pair["illama"], "--output-dir", str(out / "onnx")),
            out / "onnx" / "onnx_32.json",
        )
        onnx = json.loads((out / "onnx" / "onnx_32.json").read_text())
        measured["onnx_max_abs_difference"] = max(onnx["max_abs_difference"].values())
        for source, name in (
            (out / "calibration-illama" / "reliability_diagram.png", "analysis-reliability-diagram.png"),
            (out / "calibration-illama" / "confusion_matrix.png", "analysis-confusion-matrix.png"),
            (out / "attention-rank" / "attention_rank.png", "analysis-attention-rank.png"),
            (out / "quantize" / "quantization.png", "analysis-quantization.png"),
            (out / "onnx" / "onnx_32.png", "analysis-onnx.png"),
        ):
            shutil.copyfile(source, IMAGES / name)

    random_illama, random_vit = random_imagenet_models(work)
    run(analyze("shape-bias", "--model", str(random_illama), str(random_vit), "--label", "random iLLaMA-T",
                "random ViT-T", "--stimuli", args.stimuli, "--output-dir", str(work / "shape-bias")),
        work / "shape-bias" / "shape_bias.json")  # fmt: skip
    shape = json.loads((work / "shape-bias" / "shape_bias.json").read_text())
    shutil.copyfile(work / "shape-bias" / "shape_bias.png", IMAGES / "analysis-shape-bias-random-weights.png")

    seeds = list(per_seed.values())
    summary = {
        f"{family}_{metric}": spread([m[family][metric] for m in seeds])
        for family in ("illama", "vit")
        for metric in ("ece", "top1")
    }
    for label_key in ("attention_rank_layer1_head1", "attention_rank_mean_over_layers_heads"):
        labels = [label.split(" r=")[-1] for label in seeds[0][label_key]]
        for label, short in zip(seeds[0][label_key], labels):
            family = "vit" if label.startswith("vit") else f"illama_r{short}"
            summary[f"{label_key}_{family}"] = spread(
                [list(m[label_key].values())[labels.index(short)] for m in seeds]
            )
    first = seeds[0]
    summary[f"seed{args.seeds[0]}_int8_top1_change"] = first["int8_dynamic"]["top1_change"]
    summary[f"seed{args.seeds[0]}_int8_size_ratio"] = first["int8_dynamic"]["size_ratio"]
    summary[f"seed{args.seeds[0]}_int8_latency_ratio"] = first["int8_dynamic"]["latency_ratio"]
    summary[f"seed{args.seeds[0]}_onnx_max_abs_difference"] = first["onnx_max_abs_difference"]
    report.update(
        per_seed=per_seed,
        summary=summary,
        num_tokens=seeds[0]["num_tokens"],
        shape_bias_random_weights={
            label: {
                "shape_bias": r["shape_bias"],
                "shape_decisions": r.get("shape_decisions"),
                "texture_decisions": r.get("texture_decisions"),
                "num_images": r.get("num_images"),
            }
            for label, r in shape["models"].items()
        },  # fmt: skip
        stimuli=f"{Path(args.stimuli).name} ({next(iter(shape['models'].values())).get('images')} conflicting images)",
        machine_after=machine(),
    )
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
