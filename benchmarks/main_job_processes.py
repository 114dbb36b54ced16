"""Why `make demo` trains with two processes: one training epoch of the cifar10-mini recipe as one process with two
threads against two DDP processes (gloo) of one thread each, interleaved over rounds on the same machine; writes the
wall times, their per-round ratio and the median ratio to benchmarks/results/main_job_processes.json.

    python benchmarks/main_job_processes.py --rounds 3

Both arms run the same recipe with the same global batch (64: 2 x 32 per step, or 32 twice accumulated), no
evaluation and no checkpoints; the time is the Trainer's train_runtime (the training loop, without process start).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from modeling_illama.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
CPU_DDP = REPO / "configuration" / "accelerate" / "cpu-2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_runtime(processes: int, out: Path, overrides: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(2 // processes))
    words = ["--recipe", "cifar10-mini", "--output-dir", str(out), "--no-plot", "--overwrite"]
    words += ["num_train_epochs=1", "eval_strategy=no", "save_strategy=no", *overrides]
    if processes == 1:
        command = [sys.executable, "-m", "modeling_illama.cli.train", *words]
    else:
        launch = ["-m", "accelerate.commands.launch", "--config_file", str(CPU_DDP), "--num_processes", "2"]
        command = [sys.executable, *launch, "--main_process_port", str(free_port()), "scripts/train.py", *words]
    subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return float(next(e["train_runtime"] for e in history if "train_runtime" in e))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "main_job_processes.json"))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides for both arms")
    args = parser.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            load = os.getloadavg()[0]
            one = train_runtime(1, Path(work) / "one", args.overrides)
            two = train_runtime(2, Path(work) / "two", args.overrides)
            rounds.append({"one_process_two_threads_s": one, "two_processes_one_thread_s": two,
                           "speedup": round(one / two, 3), "load_average_before": round(load, 2)})  # fmt: skip
            print(json.dumps(rounds[-1]), flush=True)
    report = {
        "what": "one epoch of the cifar10-mini recipe: 1 process x 2 threads vs 2 DDP processes x 1 thread",
        "overrides": args.overrides,
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "median_speedup": round(statistics.median(r["speedup"] for r in rounds), 3),
        "rounds": rounds,
    }
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rounds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
