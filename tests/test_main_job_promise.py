"""The main job's promise (README, `make demo` verdict) is what the measured seeds support: the README quotes the
spread of benchmarks/results/main_job_seeds.json, and the promised top-1 that scripts/run_demo.sh checks is met by
every measured seed with room for another machine (the same seed gave 55.32% and 53.19% on two CPUs)."""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "main_job_seeds.json"
CROSS_MACHINE_MARGIN = 2.0  # points: one seed's gap between two 2-core machines (55.32 vs 53.19), rounded down


def main_job_paragraph() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("**The main job**")
    return " ".join(text[start : text.index("\n\n", start)].split())


def script_promise() -> tuple[float, int]:
    script = (REPO / "scripts" / "run_demo.sh").read_text(encoding="utf-8")
    top1 = re.search(r'PROMISED_TOP1="\$\{PROMISED_TOP1:-([\d.]+)\}"', script)
    seconds = re.search(r'PROMISED_SECONDS="\$\{PROMISED_SECONDS:-(\d+)\}"', script)
    return float(top1[1]), int(seconds[1])


def test_the_measured_spread_covers_three_seeds_of_the_whole_job():
    results = json.loads(RESULTS.read_text())
    runs = results["runs"]
    assert len({r["seed"] for r in runs}) >= 3
    top1 = [r["test_top1"] for r in runs]
    assert all(r["test_images"] == 517 for r in runs)  # the bundled test split, evaluated by illama-eval
    assert results["test_top1_mean"] == round(sum(top1) / len(top1), 2)
    assert (results["test_top1_min"], results["test_top1_max"]) == (min(top1), max(top1))


def test_the_readme_quotes_the_measured_spread_and_the_script_checks_the_readme_promise():
    results = json.loads(RESULTS.read_text())
    paragraph = main_job_paragraph()
    for run in results["runs"]:
        assert f"{run['test_top1']:.2f}%" in paragraph, f"seed {run['seed']} is not quoted in the README"
    assert f"mean {results['test_top1_mean']:.2f}%" in paragraph
    promised_top1, promised_seconds = script_promise()
    assert f"at least {promised_top1:g}% test top-1" in paragraph  # what run_demo.sh prints its verdict against
    assert f"{promised_seconds // 60} minutes" in paragraph


def test_every_measured_seed_meets_the_promise_with_room_for_another_machine():
    results = json.loads(RESULTS.read_text())
    promised_top1, _ = script_promise()
    assert promised_top1 <= results["test_top1_min"] - CROSS_MACHINE_MARGIN
