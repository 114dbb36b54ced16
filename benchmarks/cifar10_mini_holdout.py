"""Recipe tuning for the main job without touching the test split: hold out 100 images per class of cifar10-mini's
train split as a validation set, train candidate recipes on the other 4,085 and record validation top-1.

    python benchmarks/cifar10_mini_holdout.py --name base
    python benchmarks/cifar10_mini_holdout.py --name lr2e-3 learning_rate=2e-3

Each run appends one JSON line to benchmarks/results/cifar10_mini_holdout.jsonl with the per-epoch validation
top-1, wall time, process CPU time, the load average before / after and the CPU model (the machine is shared:
accuracy does not depend on the load, wall time does; CPU time is the load-independent cost).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from modeling_illama.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CPU_DDP = REPO / "configuration" / "accelerate" / "cpu-2proc.yaml"


def write_holdout(source: Path, target: Path, per_class: int = 100, seed: int = 0) -> Path:
    """train.parquet (the rest) and validation.parquet (per_class images of each class, fixed seed)."""
    import datasets

    if (target / "validation.parquet").is_file():
        return target
    train = datasets.load_dataset("parquet", data_files={"train": str(source / "train.parquet")}, split="train")
    labels = np.asarray(train["label"])
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    keep = np.setdiff1d(np.arange(len(train)), held)
    target.mkdir(parents=True, exist_ok=True)
    train.select(keep).to_parquet(str(target / "train.parquet"))
    train.select(np.sort(held)).to_parquet(str(target / "validation.parquet"))
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--data", default=str(REPO / "data" / "cifar10-mini"))
    parser.add_argument("--work", default=str(REPO / "outputs" / "holdout"))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "cifar10_mini_holdout.jsonl"))
    parser.add_argument(
        "--processes", type=int, default=1, help="DDP processes on the CPU (one thread each), as `make demo` runs"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    data = write_holdout(Path(args.data), Path(args.work) / "data")
    out = Path(args.work) / args.name
    command = [sys.executable, "-m", "modeling_illama.cli.train"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if args.processes > 1:
        accelerate = ["-m", "accelerate.commands.launch", "--config_file", str(CPU_DDP), "--num_processes"]
        command = [sys.executable, *accelerate, str(args.processes), str(REPO / "scripts" / "train.py")]
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    command += ["--recipe", "cifar10-mini", "--dataset", str(data), "--output-dir", str(out), "--no-plot"]
    command += ["eval_split=validation", "save_strategy=no", *args.overrides]
    load_before = os.getloadavg()
    start = time.time()
    subprocess.run(command, check=True, env=env)
    wall = time.time() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    record = {
        "name": args.name,
        "overrides": args.overrides,
        "processes": args.processes,
        "validation_top1_per_epoch": [round(100 * e["eval_top1"], 2) for e in history if "eval_top1" in e],
        "wall_seconds": round(wall),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
