"""The main job's spread over seeds: run `scripts/run_demo.sh` (the whole `make demo`: train cifar10-mini, illama-eval
on the 517 test images, pipeline demo) once per seed and write benchmarks/results/main_job_seeds.json with, per
seed, the test top-1 / top-5, the job's wall and CPU time, the load average and the CPU; then the mean, the sample
standard deviation, the minimum and the maximum of the test top-1. The README's promise for the main job is read
from this file (tests/test_main_job_promise.py checks that they agree).

    python benchmarks/main_job_seeds.py --seeds 0 1 2                 # one after the other
    python benchmarks/main_job_seeds.py --seeds 0 1 2 --parallel      # at once, one thread each (shared machine)
    python benchmarks/main_job_seeds.py --seeds 0 1 2 --collect       # only read runs already in --work

Accuracy does not depend on the machine's load; wall time does (the CPU time is the load-independent cost).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = re.compile(r"== iLLaMA main job: .*\((\d+) cores: (.*); load ([\d.]+) ([\d.]+) ([\d.]+)\)")
PROCESSES = re.compile(r"== training with (\d+) CPU processes")
DONE = re.compile(
    r"== done in (\d+) min (\d+) s \(training (\d+) min (\d+) s, CPU time ([\d.]+) min, "
    r"load average ([\d.]+) ([\d.]+) ([\d.]+)\)"
)


def run_seeds(seeds: list[int], work: Path, parallel: bool, overrides: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed in seeds:
        env = {**os.environ, "OUT": str(work / f"seed{seed}"), "SEED": str(seed)}
        if parallel:
            env.update(OMP_NUM_THREADS="1", PROCESSES="1")
        log = open(work / f"seed{seed}.log", "w")
        job = subprocess.Popen(["bash", str(REPO / "scripts" / "run_demo.sh"), *overrides], stdout=log, env=env)
        jobs.append((seed, job, log))
        if not parallel:
            job.wait()
    for seed, job, log in jobs:
        if job.wait():
            sys.exit(f"main job for seed {seed} failed: see {log.name}")
        log.close()


def read_run(work: Path, seed: int) -> dict:
    """One seed's numbers from its folder (eval_test.json) and its console log (the job's first and last lines)."""
    text = (work / f"seed{seed}.log").read_text(errors="replace")
    header, done = HEADER.search(text), DONE.search(text)
    if not (header and done):
        raise ValueError(f"seed {seed}: {work / f'seed{seed}.log'} has no finished main job (run it first)")
    result = json.loads((work / f"seed{seed}" / "eval_test.json").read_text())
    total = 60 * int(done[1]) + int(done[2])
    return {
        "seed": seed,
        "test_top1": round(100 * result["top1"], 2),
        "test_top5": round(100 * result["top5"], 2),
        "test_images": result["num_images"],
        "wall_seconds": total,
        "training_seconds": 60 * int(done[3]) + int(done[4]),
        "cpu_minutes": float(done[5]),
        "load_average_start": [float(x) for x in header.groups()[2:5]],
        "load_average_end": [float(x) for x in done.groups()[5:8]],
        "cores": int(header[1]),
        "training_processes": int(processes[1]) if (processes := PROCESSES.search(text)) else 1,
        "cpu": header[2].strip(),
    }


def summarise(runs: list[dict], note: str) -> dict:
    top1 = [r["test_top1"] for r in runs]
    return {
        "job": "make demo (scripts/run_demo.sh): recipe cifar10-mini, test split of data/cifar10-mini",
        "note": note,
        "seeds": [r["seed"] for r in runs],
        "test_top1_mean": round(statistics.mean(top1), 2),
        "test_top1_std": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
        "test_top1_min": min(top1),
        "test_top1_max": max(top1),
        "cpu_minutes_max": max(r["cpu_minutes"] for r in runs),
        "runs": runs,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", default=str(REPO / "outputs" / "main-job-seeds"), help="one folder + log per seed")
    parser.add_argument("--parallel", action="store_true", help="all seeds at once, one process of one thread each")
    parser.add_argument("--collect", action="store_true", help="only read the runs already in --work")
    parser.add_argument("--note", default="", help="conditions worth recording (other jobs on the machine, ...)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "main_job_seeds.json"))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides (not for the README)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    if not args.collect:
        run_seeds(args.seeds, work, args.parallel, args.overrides)
    summary = summarise([read_run(work, seed) for seed in args.seeds], args.note)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
