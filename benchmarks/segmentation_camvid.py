"""Segmentation demo benchmark: `illama-train --recipe camvid-mini` next to the same recipe with a BEiT backbone.

Both runs use the same data, crops, decoder (UperNet), schedule and epochs; only the backbone differs
(iLLaMA: RMSNorm, SwiGLU, rotary + learned positions, class token last, causal mask r = 0; BEiT: ViT-T-sized,
LayerNorm, GELU MLP, learned absolute positions, layer scale, bidirectional). They run CONCURRENTLY so that both
see the same machine load; each one's wall time and CPU time (os.wait4) are recorded with the load average
(sampled every 10 s) and the CPU model. One pair per seed (`--seeds 0,1`): mean and spread of the validation mIoU
per backbone. CPU seconds per optimizer step give an estimate of the full recipe's time on idle cores (a loaded
machine inflates wall time, not the CPU time of the work much). Results: <output>/segmentation_camvid.{json,md} and
a PNG of predicted masks (iLLaMA, through pipeline("image-segmentation") on the saved folder) over validation images.

    python benchmarks/segmentation_camvid.py --dataset data/camvid-mini --work runs/seg-bench --seeds 0,1 \
        max_steps=60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from modeling_illama.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]


def beit_segmentation_model(recipe):
    """UperNet on a BEiT backbone sized like the recipe's iLLaMA (width, depth, heads, patch, out_indices)."""
    from transformers import BeitConfig, UperNetForSemanticSegmentation

    from modeling_illama import load_preset
    from modeling_illama.training.segmentation import SegmentationSettings, upernet_config

    settings = SegmentationSettings.from_recipe(recipe)
    illama = load_preset(recipe.model, **recipe.model_overrides)
    backbone = BeitConfig(
        image_size=settings.crop_size,
        patch_size=illama.patch_size,
        hidden_size=illama.hidden_size,
        num_hidden_layers=illama.num_hidden_layers,
        num_attention_heads=illama.num_attention_heads,
        intermediate_size=4 * illama.hidden_size,
        use_absolute_position_embeddings=True,
        drop_path_rate=recipe.drop_path_rate,
        out_indices=settings.out_indices,
        add_fpn=settings.add_fpn,
    )
    return UperNetForSemanticSegmentation(upernet_config(backbone, settings))


def run_beit(recipe_name: str, dataset: str, output_dir: str, overrides: list[str]) -> None:
    """The recipe's data, schedule and decoder with a BEiT backbone (this process, Trainer as illama-train)."""
    from modeling_illama.cli.train import setup_logging
    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.segmentation import build_segmentation_training

    setup_logging(output_dir, True)
    recipe = load_recipe(recipe_name, [*overrides, f"dataset={dataset}"], output_dir=output_dir)
    run = build_segmentation_training(recipe, beit_segmentation_model(recipe))
    start = time.time()
    result = run.trainer.train()
    metrics = dict(result.metrics, train_wall_seconds=time.time() - start)
    run.trainer.save_model(output_dir)
    metrics.update(run.trainer.evaluate())
    run.trainer.save_metrics("all", metrics)
    run.trainer.save_state()  # trainer_state.json: the optimizer steps taken, as illama-train writes it


class LoadSampler(threading.Thread):
    def __init__(self, every: float = 10.0):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop = every, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self.stop.wait(self.every)


def launch(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def overlay_png(model_dir: Path, dataset: str, path: Path, count: int = 4) -> None:
    """Validation images | reference | prediction (pipeline on the saved folder), colour-coded classes."""
    import datasets
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from transformers import pipeline

    import modeling_illama  # noqa: F401  (the UperNet folder's backbone config is an ILlamaConfig)

    segmenter = pipeline("image-segmentation", model=str(model_dir), subtask="semantic")
    files = {"validation": str(Path(dataset) / "validation.parquet")}
    rows = datasets.load_dataset("parquet", data_files=files, split="validation").select(range(0, 101, 101 // count))
    palette = (plt.get_cmap("tab20")(np.arange(20))[:, :3] * 255).astype(np.uint8)
    fig, axes = plt.subplots(min(count, len(rows)), 3, figsize=(9, 2.4 * min(count, len(rows))))
    for row_axes, row in zip(axes, rows):
        image = row["image"].convert("RGB")
        reference = np.asarray(row["annotation"])
        predicted = np.full(reference.shape, 255, dtype=np.int64)
        label2id = segmenter.model.config.label2id
        for segment in segmenter(image):
            predicted[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
        base = np.asarray(image, dtype=np.float32)
        for ax, labels, title in zip(
            row_axes, (None, reference, predicted), ("validation image", "reference", "iLLaMA + UperNet")
        ):
            shown = (
                base
                if labels is None
                else 0.4 * base + 0.6 * np.where((labels == 255)[..., None], 0, palette[np.clip(labels, 0, 19)])
            )
            ax.imshow(shown.astype(np.uint8))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run_pair(args, seed: int, work: Path, env: dict) -> dict:
    """The iLLaMA (illama-train) and BEiT runs of one seed, concurrent; each timed when it ends."""
    overrides = [*args.overrides, f"seed={seed}"]
    commands = {
        "illama": [sys.executable, "-m", "modeling_illama.cli.train", "--recipe", args.recipe, "--dataset",
                   args.dataset, "--output-dir", str(work / "illama"), "--overwrite", "--no-plot", *overrides],
        "beit": [sys.executable, __file__, "--recipe", args.recipe, "--dataset", args.dataset, "--run-beit",
                 str(work / "beit"), *overrides],
    }  # fmt: skip
    started = time.time()
    processes = {name: launch(cmd, work / f"{name}.log", env) for name, cmd in commands.items()}
    names = {process.pid: name for name, process in processes.items()}
    runs = {}
    while len(runs) < len(processes):
        pid, status, usage = os.wait4(-1, 0)  # whichever run ends first, timed when it ends
        name = names[pid]
        metrics = json.loads((work / name / "all_results.json").read_text()) if status == 0 else None
        steps = json.loads((work / name / "trainer_state.json").read_text())["global_step"] if status == 0 else None
        cpu = usage.ru_utime + usage.ru_stime
        runs[name] = {
            "seed": seed,
            "exit_status": status,
            "wall_seconds": time.time() - started,
            "cpu_seconds": cpu,
            "optimizer_steps": steps,
            "cpu_seconds_per_step": cpu / steps if steps else None,  # includes start-up and the final evaluation
            "metrics": metrics,
        }
    return {name: runs[name] for name in processes}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO / "data" / "camvid-mini"))
    parser.add_argument("--recipe", default="camvid-mini")
    parser.add_argument("--seeds", type=lambda text: [int(v) for v in text.split(",")], default=[0], help="e.g. 0,1")
    parser.add_argument("--work", default=str(REPO / "runs" / "seg-bench"), help="training output folders")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--run-beit", metavar="OUTPUT_DIR", help=argparse.SUPPRESS)  # the BEiT child process
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both runs, e.g. max_steps=60")
    args = parser.parse_args()
    if args.run_beit:
        run_beit(args.recipe, args.dataset, args.run_beit, args.overrides)
        return 0

    from modeling_illama.training.recipes import load_recipe

    recipe = load_recipe(args.recipe)
    rows = 367 if Path(args.dataset).name == "camvid-mini" else None  # the recipe's full run, for the estimate
    full_steps = math.ceil(rows / recipe.global_batch_size) * recipe.num_train_epochs if rows else None
    work, output = Path(args.work), Path(args.output)
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: CPU time counts work, not spinning
    sampler = LoadSampler()
    sampler.start()
    runs = [run_pair(args, seed, work / f"seed{seed}", env) for seed in args.seeds]
    sampler.stop.set()
    loads = sampler.samples or [os.getloadavg()[0]]
    cores = os.cpu_count() or 1
    summary = {}
    for name in ("illama", "beit"):
        done = [pair[name] for pair in runs if pair[name]["metrics"]]
        if not done:
            continue
        per_step = statistics.median(run["cpu_seconds_per_step"] for run in done)
        summary[name] = {
            "mean_iou": spread([run["metrics"]["eval_mean_iou"] for run in done]),
            "pixel_accuracy": spread([run["metrics"]["eval_pixel_accuracy"] for run in done]),
            "cpu_seconds_per_step_median": per_step,
            "full_recipe_steps": full_steps,
            "full_recipe_idle_minutes_estimate": per_step * full_steps / cores / 60 if full_steps else None,
        }
    result = {
        "recipe": args.recipe,
        "dataset": Path(args.dataset).name,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "cpu_model": cpu_model(),
        "cpu_count": cores,
        "load_average_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "note": "the two runs of a seed are concurrent on a machine shared with other jobs; wall time is inflated "
        "by the load; the idle estimate is CPU seconds per step x the full recipe's steps / cores",
        "summary": summary,
        "runs": runs,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "segmentation_camvid.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# {args.recipe}: iLLaMA vs BEiT backbone (UperNet), same recipe, overrides {args.overrides}\n",
        f"CPU: {result['cpu_model']} ({cores} cores), load average (1 min) median "
        f"{statistics.median(loads):.1f} (min {min(loads):.1f}, max {max(loads):.1f}); the runs of a seed concurrent.\n",
        "| backbone | seed | steps | val mIoU | pixel acc | wall min | CPU min | CPU s / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair in runs:
        for name, run in pair.items():
            metrics = run["metrics"] or {}
            lines.append(
                f"| {name} | {run['seed']} | {run['optimizer_steps']} | {metrics.get('eval_mean_iou', float('nan')):.3f} "
                f"| {metrics.get('eval_pixel_accuracy', float('nan')):.3f} | {run['wall_seconds'] / 60:.1f} | "
                f"{run['cpu_seconds'] / 60:.1f} | {run['cpu_seconds_per_step'] or float('nan'):.1f} |"
            )
    lines.append("")
    for name, entry in summary.items():
        miou = entry["mean_iou"]
        estimate = entry["full_recipe_idle_minutes_estimate"]
        lines.append(
            f"- {name}: mIoU mean {miou['mean']:.3f} (min {miou['min']:.3f}, max {miou['max']:.3f}) over "
            f"{len(miou['values'])} seed(s); full recipe ({full_steps} steps) on {cores} idle cores: about "
            f"{estimate:.0f} min (estimate)"
            if estimate
            else f"- {name}: mIoU mean {miou['mean']:.3f}"
        )
    (output / "segmentation_camvid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if runs[0]["illama"]["exit_status"] == 0:
        overlay_png(work / f"seed{args.seeds[0]}" / "illama", args.dataset, output / "segmentation_camvid.png")
    return 0 if all(run["exit_status"] == 0 for pair in runs for run in pair.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
