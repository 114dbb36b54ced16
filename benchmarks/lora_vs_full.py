"""LoRA vs full fine-tuning of a cifar10-mini model on a new label set (animal / vehicle), side by side.

    python benchmarks/lora_vs_full.py --model runs/demo                  # the `make demo` folder as the base
    python benchmarks/lora_vs_full.py --model runs/base --epochs 2 --rounds 1

Both runs start from the same base model (`--model`) and run the shipped recipe `cifar10-mini-lora` through the
library's `train()` (the function behind illama-train); the full run is the same recipe with `peft: {}` and the
full-fine-tuning learning rate `--full-lr`. For each: trainable parameters, peak memory of the training process
(ru_maxrss of a fresh subprocess per run), training wall time and final test top-1. Runs alternate LoRA / full
`--rounds` times, each in its own process; medians are reported. Writes benchmarks/results/lora_vs_full.json
and .md.

`--build-data` (re)writes data/cifar10-mini-vehicles from the bundled data/cifar10-mini: the first
VEHICLES_TRAIN images of train and all of test, labels animal (bird, cat, deer, dog, frog, horse) / vehicle
(airplane, automobile, ship, truck).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "data" / "cifar10-mini"
TARGET = REPO / "data" / "cifar10-mini-vehicles"
VEHICLES = ("airplane", "automobile", "ship", "truck")
VEHICLES_TRAIN = 600
RESULTS = REPO / "benchmarks" / "results" / "lora_vs_full"


def build_vehicles_data(source: Path = SOURCE, target: Path = TARGET, n_train: int = VEHICLES_TRAIN) -> Path:
    """train.parquet / test.parquet with a ClassLabel [animal, vehicle] from the 10 CIFAR-10 classes."""
    from datasets import ClassLabel, load_dataset

    target.mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", n_train), ("test", None)):
        data = load_dataset("parquet", data_files=str(source / f"{split}.parquet"), split="train")
        vehicle_ids = {i for i, name in enumerate(data.features["label"].names) if name in VEHICLES}
        if limit is not None:
            data = data.select(range(limit))
        data = data.map(lambda row, ids=vehicle_ids: {"coarse": int(row["label"] in ids)}, remove_columns=["label"])
        data = data.rename_column("coarse", "label").cast_column("label", ClassLabel(names=["animal", "vehicle"]))
        data.to_parquet(str(target / f"{split}.parquet"))
    return target


def one_run(method: str, model: str, epochs: float, full_lr: float, seed: int, output_dir: str) -> dict:
    """Train one method in this process and return its measurements (run as a subprocess by main)."""
    import resource

    import torch

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.run import train

    # one evaluation, after training (the same forward passes for both methods): no per-epoch evaluations
    overrides = {
        "model": model,
        "num_train_epochs": epochs,
        "seed": seed,
        "save_strategy": "no",
        "eval_strategy": "no",
    }
    if method == "full":
        overrides["learning_rate"] = full_lr
    recipe = load_recipe("cifar10-mini-lora", overrides, output_dir=output_dir)
    if method == "full":
        recipe.peft = {}  # the same recipe without LoRA: every parameter trains
    cpu = time.process_time()
    run = train(recipe, plot=False)
    cpu = time.process_time() - cpu
    metrics = run.extras["metrics"]
    model_ = run.trainer.model
    return {
        "method": method,
        "trainable_parameters": sum(p.numel() for p in model_.parameters() if p.requires_grad),
        "base_parameters": sum(p.numel() for n, p in model_.named_parameters() if "lora_" not in n),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_seconds": metrics["train_wall_seconds"],
        "cpu_seconds": cpu,
        "test_top1": metrics["eval_top1"],
        "saved_bytes": sum(f.stat().st_size for f in Path(output_dir).glob("*.safetensors")),
        "learning_rate": recipe.learning_rate,
        "epochs": epochs,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
    }


def machine() -> dict:
    sys.path.insert(0, str(REPO))
    from modeling_illama.utils.machine import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base model folder (a cifar10-mini run, e.g. the `make demo` output)")
    parser.add_argument("--base-description", default="", help="how the base was trained, stored in the results")
    parser.add_argument("--epochs", type=float, default=None, help="default: the recipe's num_train_epochs")
    parser.add_argument("--full-lr", type=float, default=5e-4, help="learning rate of full fine-tuning")
    parser.add_argument("--rounds", type=int, default=1, help="LoRA / full pairs, each run in a fresh process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-data", action="store_true", help="write data/cifar10-mini-vehicles and exit")
    parser.add_argument("--_run", nargs=2, metavar=("METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_data:
        print(build_vehicles_data())
        return
    if args.model is None:
        parser.error("--model DIR is required (the base model)")
    epochs = args.epochs
    if args._run:
        result = one_run(args._run[0], args.model, epochs, args.full_lr, args.seed, args._run[1])
        print("RESULT " + json.dumps(result))
        return
    if epochs is None:
        import yaml

        recipe = yaml.safe_load((REPO / "configuration" / "recipes" / "cifar10-mini-lora.yaml").read_text())
        epochs = recipe["num_train_epochs"]
    runs = []
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for method in ("lora", "full"):
                out = os.path.join(tmp, f"{method}-{round_}")
                command = [sys.executable, __file__, "--model", args.model, "--epochs", str(epochs),
                           "--full-lr", str(args.full_lr), "--seed", str(args.seed), "--_run", method, out]  # fmt: skip
                done = subprocess.run(
                    command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
                )
                if done.returncode:
                    raise SystemExit(f"{method} run failed:\n{done.stderr[-3000:]}")
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
                runs.append(json.loads(line[len("RESULT ") :]))
                print(method, runs[-1], flush=True)
    summary = {}
    for method in ("lora", "full"):
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {
            key: statistics.median(r[key] for r in mine)
            for key in (
                "trainable_parameters",
                "peak_rss_mib",
                "train_seconds",
                "cpu_seconds",
                "test_top1",
                "saved_bytes",
            )
        }
    ratios = {
        key: summary["lora"][key] / summary["full"][key]
        for key in ("trainable_parameters", "peak_rss_mib", "train_seconds", "cpu_seconds", "saved_bytes")
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(),
        "command": " ".join(["python", "benchmarks/lora_vs_full.py", *sys.argv[1:]]),
        "base_model": args.base_description or args.model,
        "recipe": "cifar10-mini-lora",
        "data": "data/cifar10-mini-vehicles (animal / vehicle)",
        "epochs": epochs,
        "seed": args.seed,
        "full_learning_rate": args.full_lr,
        "rounds": args.rounds,
        "machine": {"before": before, "after": machine()},
        "median": summary,
        "lora_over_full": ratios,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lora, full = report["median"]["lora"], report["median"]["full"]
    rows = [
        ("trainable parameters", f"{int(lora['trainable_parameters']):,}", f"{int(full['trainable_parameters']):,}"),
        ("peak memory of the process (MiB)", f"{lora['peak_rss_mib']:.0f}", f"{full['peak_rss_mib']:.0f}"),
        ("training wall time (s)", f"{lora['train_seconds']:.1f}", f"{full['train_seconds']:.1f}"),
        (
            "CPU time of train(): build, train, evaluate, save (s)",
            f"{lora['cpu_seconds']:.1f}",
            f"{full['cpu_seconds']:.1f}",
        ),
        ("saved weights (bytes)", f"{int(lora['saved_bytes']):,}", f"{int(full['saved_bytes']):,}"),
        ("test top-1 (animal / vehicle)", f"{100 * lora['test_top1']:.2f}%", f"{100 * full['test_top1']:.2f}%"),
    ]
    machine_ = report["machine"]["before"]
    lines = [
        "# LoRA vs full fine-tuning (cifar10-mini-lora)",
        "",
        f"{report['date']}, commit {report['commit']}, {machine_['cpu']} ({machine_['cores']} cores, load average "
        f"{machine_['load_average'][0]:.1f} at the start), `{report['command']}`.",
        "",
        f"Base model: {report['base_model']}. Data: {report['data']}; {report['epochs']} epochs, seed "
        f"{report['seed']}; LoRA at the recipe's learning rate, full fine-tuning at {report['full_learning_rate']}; "
        f"median of {report['rounds']} run(s) per method, alternating, each in a fresh process; one evaluation "
        "after training. Peak memory is the whole process's (Python, torch, data), which a 1.3M-parameter model "
        "hardly moves; wall time follows the machine's load, CPU time less so.",
        "",
        "| | LoRA | full |",
        "|---|---|---|",
        *[f"| {name} | {a} | {b} |" for name, a, b in rows],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
