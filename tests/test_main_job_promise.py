"""What the README says of the main job (`make demo`) is what the measured runs support: it quotes every seed of
benchmarks/results/main_job_seeds.json, the mean and the spread, and the time measured on each CPU type (no single
time bound); the top-1 threshold that scripts/run_demo.sh checks is met by every measured run with room for the
difference one seed showed between two CPU types (55.32% and 53.19%)."""

import json
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "main_job_seeds.json"
CROSS_MACHINE_MARGIN = 2.0  # points: one seed's gap between two 2-core machines (55.32 vs 53.19), rounded down


def main_job_paragraph() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("**The main job**")
    return " ".join(text[start : text.index("\n\n", start)].split())


def script_threshold() -> float:
    script = (REPO / "scripts" / "run_demo.sh").read_text(encoding="utf-8")
    return float(re.search(r'PROMISED_TOP1="\$\{PROMISED_TOP1:-([\d.]+)\}"', script)[1])


def minutes(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60:02d} s"


def all_runs(results: dict) -> list[dict]:
    return results["runs"] + results.get("other_cpus", [])


def test_the_measured_spread_covers_three_seeds_of_the_whole_job():
    results = json.loads(RESULTS.read_text())
    runs = results["runs"]
    assert len({r["seed"] for r in runs}) >= 3
    top1 = [r["test_top1"] for r in runs]
    assert all(r["test_images"] == 517 for r in all_runs(results))  # the bundled test split, evaluated by illama-eval
    assert results["test_top1_mean"] == round(sum(top1) / len(top1), 2)
    assert (results["test_top1_min"], results["test_top1_max"]) == (min(top1), max(top1))
    mean = sum(top1) / len(top1)
    std = (sum((t - mean) ** 2 for t in top1) / (len(top1) - 1)) ** 0.5  # sample standard deviation
    assert results["test_top1_std"] == round(std, 2)


def test_the_readme_quotes_every_run_and_the_time_per_cpu_type():
    results = json.loads(RESULTS.read_text())
    paragraph = main_job_paragraph()
    for run in all_runs(results):
        assert f"{run['test_top1']:.2f}%" in paragraph, f"seed {run['seed']} on {run['cpu']} is not quoted"
    assert f"mean {results['test_top1_mean']:.2f}%" in paragraph
    assert f"standard deviation {results['test_top1_std']:.2f} points" in paragraph
    by_cpu = defaultdict(list)
    for run in all_runs(results):
        by_cpu[run["cpu"]].append(run["wall_seconds"])
    for cpu, seconds in by_cpu.items():
        quoted = minutes(min(seconds)) + (f" to {minutes(max(seconds))}" if max(seconds) > min(seconds) else "")
        assert quoted in paragraph, f"the README does not give {cpu}'s measured time {quoted!r}"
        vendor_and_family = " ".join(cpu.replace("(R)", "").split()[:2])  # "Intel Xeon", "AMD EPYC"
        assert vendor_and_family in paragraph, f"the README does not name the CPU {cpu}"
    assert f"at least {script_threshold():g}% test top-1" in paragraph  # what run_demo.sh checks
    assert not re.search(r"within \d+ minutes|at most \d+ min", paragraph), "no single time bound: times are per CPU"


def test_every_measured_run_meets_the_threshold_with_room_for_another_machine():
    results = json.loads(RESULTS.read_text())
    lowest = min(run["test_top1"] for run in all_runs(results))
    assert script_threshold() <= lowest - CROSS_MACHINE_MARGIN


def test_the_script_prints_the_measured_times_and_checks_no_time_bound():
    script = (REPO / "scripts" / "run_demo.sh").read_text(encoding="utf-8")
    assert "PROMISED_SECONDS" not in script and "benchmarks/results/main_job_seeds.json" in script
