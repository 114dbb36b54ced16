"""The paper's central ablation at CPU scale, on the bundled CIFAR-10 subset, with the package's training stack.

    python experiments/ablation/run.py                      # the full grid: 8 arms x seeds 0 1 (~8 CPU-min)
    python experiments/ablation/run.py --quick              # smoke run: a few steps per arm, 1 seed
    python experiments/ablation/run.py --summarize-only     # rebuild tables and plots from finished runs

Arms (arXiv 2404.06773, Table 17 roadmap and Table 3):
  a  causal, class token FIRST (attention collapse)      d  PS [cls] + constant soft mask
  b  causal, class token LAST (PS [cls]), r = 0           e  bidirectional, r = 1 throughout (ViT-like reference)
  c  PS [cls] + linear soft mask                          f  side arm: mask_style="renormalized" + linear soft mask
  c', d'  as c and d with a soft mask lasting well past the warm-up (--long-soft-mask-cutoff-epochs)
Every arm runs the same recipe (cifar10-mini with a 4-layer width-48 model, 1.5 epochs), the same seeds and the
same number of optimizer steps, each run in its own single-threaded process, `--jobs` at a time. Finished runs are
kept in --runs-dir and skipped when the command is repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from modeling_illama.utils.machine import cpu_model

REPO = Path(__file__).resolve().parents[2]
DISCUSSION_MARKER = "<!-- discussion: kept when the tables are regenerated -->"

# (name, label, class_first, eval_rate, recipe overrides); "{cutoff}" and "{epochs}" are filled in per budget
ARMS = [
    ("a_cls_first_causal", "(a) causal, [cls] first", True, 0.0, ["soft_mask=none"]),
    ("b_ps_cls_causal", "(b) PS [cls], no soft mask", False, 0.0, ["soft_mask=none"]),
    (
        "c_ps_cls_linear",
        "(c) PS [cls] + linear soft mask",
        False,
        0.0,
        ["soft_mask=linear", "soft_mask_cutoff_epochs={cutoff}"],
    ),
    (
        "d_ps_cls_constant",
        "(d) PS [cls] + constant soft mask",
        False,
        0.0,
        ["soft_mask=constant", "soft_mask_cutoff_epochs={cutoff}"],
    ),
    (
        "c2_ps_cls_linear_long",
        "(c') PS [cls] + linear soft mask, long cutoff",
        False,
        0.0,
        ["soft_mask=linear", "soft_mask_cutoff_epochs={long_cutoff}"],
    ),
    (
        "d2_ps_cls_constant_long",
        "(d') PS [cls] + constant soft mask, long cutoff",
        False,
        0.0,
        ["soft_mask=constant", "soft_mask_cutoff_epochs={long_cutoff}"],
    ),
    (
        "e_bidirectional",
        "(e) bidirectional (r = 1)",
        False,
        1.0,
        ["soft_mask=constant", "soft_mask_cutoff_epochs={epochs}"],
    ),
    (
        "f_renormalized_linear",
        "(f) renormalized mask + linear soft mask",
        False,
        0.0,
        ["soft_mask=linear", "soft_mask_cutoff_epochs={cutoff}", "model_overrides.mask_style=renormalized"],
    ),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 steps per arm, seed 0 only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", help="subset of arm names (default: all)")
    parser.add_argument("--dataset", default=str(REPO / "data" / "cifar10-mini"))
    parser.add_argument("--recipe", default="cifar10-mini")
    parser.add_argument("--layers", type=int, default=4, help="num_hidden_layers (the main job uses 6)")
    parser.add_argument("--hidden-size", type=int, default=48, help="hidden_size (the main job uses 192)")
    parser.add_argument("--intermediate-size", type=int, default=128, help="SwiGLU width (8/3 x hidden_size)")
    parser.add_argument("--heads", type=int, default=3, help="num_attention_heads")
    parser.add_argument("--epochs", type=float, default=1.5)
    parser.add_argument("--soft-mask-cutoff-epochs", type=float, default=0.25)
    parser.add_argument(
        "--long-soft-mask-cutoff-epochs",
        type=float,
        default=0.5,
        help="cutoff of the (c') and (d') arms: the soft mask lasting well past the warm-up",
    )
    parser.add_argument("--warmup-epochs", type=float, default=0.25)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument("--runs-dir", default=str(REPO / "outputs" / "ablation"), help="run folders (not committed)")
    parser.add_argument(
        "--output-dir", default=str(REPO / "experiments" / "ablation" / "results"), help="tables and plots"
    )
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild tables/plots from finished runs")
    parser.add_argument("extra", nargs="*", metavar="key=value", help="further recipe overrides for every arm")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in (argv or sys.argv) else [0]
    return args


def arm_overrides(args, arm) -> list[str]:
    name, _, _, _, overrides = arm
    common = [
        f"model_overrides.num_hidden_layers={args.layers}",
        f"model_overrides.hidden_size={args.hidden_size}",
        f"model_overrides.intermediate_size={args.intermediate_size}",
        f"model_overrides.num_attention_heads={args.heads}",
        f"num_train_epochs={args.epochs}",
        f"warmup_epochs={args.warmup_epochs}",
        "eval_split=null",  # evaluated by train_arm at the arm's own rate
        "save_strategy=no",
        "logging_steps=5",
    ]
    if args.quick:
        common.append("max_steps=4")
    fill = {
        "cutoff": args.soft_mask_cutoff_epochs,
        "long_cutoff": args.long_soft_mask_cutoff_epochs,
        "epochs": args.epochs,
    }
    return common + [o.format(**fill) for o in overrides] + list(args.extra)


def run_command(args, arm, seed: int, run_dir: Path) -> list[str]:
    name, _, class_first, eval_rate, _ = arm
    command = [sys.executable, "-m", "experiments.ablation.train_arm", "--output-dir", str(run_dir)]
    command += ["--dataset", args.dataset, "--eval-rate", str(eval_rate)]
    if class_first:
        command.append("--class-first")
    if args.quick:
        command += ["--rank-images", "8"]
    return command + ["--", "--recipe", args.recipe, f"seed={seed}", *arm_overrides(args, arm)]


def child_env() -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    return env


def git_state() -> dict:
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "main_merge_base": git("merge-base", "HEAD", "main") or None,  # survives a later rebase of the branch
        "dirty_files": git("status", "--porcelain").splitlines(),
    }


def dataset_fingerprint(dataset: str) -> dict:
    """sha256 of each parquet file of the data set (a folder of parquet files here), to name the data exactly."""
    import hashlib

    folder = Path(dataset)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _alive_run(run_dir: Path) -> int | None:
    """The pid of a run another invocation started and that is still training, else None."""
    try:
        pid = int((run_dir / "pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"experiments.ablation.train_arm" in cmdline else None


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_grid(args) -> dict:
    """Run every (arm, seed) not yet finished, `--jobs` at a time (runs still in progress from an earlier
    invocation are waited for and count as jobs); sample the load average while waiting."""
    runs_dir = Path(args.runs_dir)
    pending, adopted = [], []
    for seed in args.seeds:  # seed-major: a partial grid still covers every arm
        for arm in selected_arms(args):
            run_dir = runs_dir / f"{arm[0]}-seed{seed}"
            if (run_dir / "arm_result.json").is_file():
                continue
            if _alive_run(run_dir):
                adopted.append((arm, seed, run_dir))
                continue
            if run_dir.exists():
                subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            pending.append((arm, seed, run_dir))
    running, failures, loads = [], [], []
    commit = git_state()["commit"]
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped grid stops its runs too
    try:
        while pending or running or adopted:
            while pending and len(running) + len(adopted) < args.jobs:
                arm, seed, run_dir = pending.pop(0)
                run_dir.mkdir(parents=True, exist_ok=True)
                log = open(run_dir / "stdout.log", "w")
                command = run_command(args, arm, seed, run_dir)
                print(f"[{time.strftime('%H:%M:%S')}] start {arm[0]} seed {seed}", flush=True)
                proc = subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
                (run_dir / "pid").write_text(str(proc.pid))
                (run_dir / "git_commit").write_text(commit)
                running.append((proc, arm, seed, run_dir, log))
            time.sleep(5)
            loads.append(os.getloadavg()[0])
            finished = []
            for item in list(running):
                proc, arm, seed, run_dir, log = item
                if proc.poll() is not None:
                    running.remove(item)
                    log.close()
                    finished.append((arm, seed, run_dir))
            for item in list(adopted):
                if not _alive_run(item[2]):
                    adopted.remove(item)
                    finished.append(item)
            for arm, seed, run_dir in finished:
                ok = (run_dir / "arm_result.json").is_file()
                done = "ok" if ok else f"FAILED (see {run_dir}/stdout.log)"
                print(f"[{time.strftime('%H:%M:%S')}] {done}: {arm[0]} seed {seed}", flush=True)
                if not ok:
                    failures.append(f"{arm[0]}-seed{seed}")
    finally:
        for proc, *_ in running:  # interrupted: no run keeps training without its runner
            proc.terminate()
    return {
        "load_average_1min_samples": {
            "mean": statistics.fmean(loads) if loads else None,
            "min": min(loads, default=None),
            "max": max(loads, default=None),
            "count": len(loads),
        },
        "failures": failures,
    }


def selected_arms(args):
    if not args.arms:
        return ARMS
    unknown = set(args.arms) - {a[0] for a in ARMS}
    if unknown:
        raise SystemExit(f"unknown arm(s) {sorted(unknown)}; arms are {[a[0] for a in ARMS]}")
    return [a for a in ARMS if a[0] in args.arms]


# ------------------------------------------------------------------------------------------------ summary


def loss_series(log_history: list[dict]) -> tuple[list[int], list[float]]:
    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    return [p[0] for p in points], [p[1] for p in points]


def final_train_loss(log_history: list[dict], fraction: float = 0.25) -> float:
    """Mean logged training loss over the last `fraction` of the optimizer steps."""
    steps, losses = loss_series(log_history)
    last = max(steps)
    tail = [loss for step, loss in zip(steps, losses) if step > last * (1 - fraction)]
    return statistics.fmean(tail)


def _run_commit(run_dir: Path) -> str:
    path = run_dir / "git_commit"
    return path.read_text().strip() if path.is_file() else "unknown"


def grid_span(runs_dir: Path, args) -> float | None:
    """Wall time from the first run's start to the last run's end (also across interrupted invocations)."""
    starts, ends = [], []
    for arm in selected_arms(args):
        for seed in args.seeds:
            path = runs_dir / f"{arm[0]}-seed{seed}" / "arm_result.json"
            if path.is_file():
                end = path.stat().st_mtime
                starts.append(end - json.loads(path.read_text())["wall_seconds"])
                ends.append(end)
    return max(ends) - min(starts) if ends else None


def uniform_attention_rank(tokens: int) -> dict:
    """The rank each mask gives attention whose scores are all equal (an untrained model's attention): the floor
    set by the mask's structure alone, against which a trained arm's rank is read."""
    import torch

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from experiments.ablation.attention_rank import effective_rank

    causal = torch.tril(torch.ones(tokens, tokens, dtype=torch.float64))
    return {
        "causal_post_softmax": int(effective_rank(causal / tokens)),  # softmax over all keys, then masked
        "causal_renormalized": int(effective_rank(causal / causal.sum(-1, keepdim=True))),
        "bidirectional": int(effective_rank(torch.full((tokens, tokens), 1.0 / tokens, dtype=torch.float64))),
    }


def mean_spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def summarize(args, grid_info: dict | None) -> dict:
    runs_dir = Path(args.runs_dir)
    arms = {}
    for name, label, class_first, eval_rate, _ in selected_arms(args):
        results = []
        for seed in args.seeds:
            path = runs_dir / f"{name}-seed{seed}" / "arm_result.json"
            if path.is_file():
                results.append((seed, json.loads(path.read_text())))
        if not results:
            continue
        arms[name] = {
            "label": label,
            "class_first": class_first,
            "eval_soft_mask_rate": eval_rate,
            "seeds": [s for s, _ in results],
            "test_top1": mean_spread([100 * r["test"]["top1"] for _, r in results]),
            "final_train_loss": mean_spread([final_train_loss(r["log_history"]) for _, r in results]),
            "attention_rank": [
                {
                    "layer": layer,
                    "mean": statistics.fmean(r["attention_rank"][layer]["mean"] for _, r in results),
                    "head0_mean": statistics.fmean(r["attention_rank"][layer]["head0_mean"] for _, r in results),
                    "tokens": results[0][1]["attention_rank"][layer]["tokens"],
                }
                for layer in range(len(results[0][1]["attention_rank"]))
            ],
            "cpu_seconds": sum(r["cpu_seconds"] for _, r in results),
            "wall_seconds_per_run": mean_spread([r["wall_seconds"] for _, r in results]),
            "train_args": results[0][1]["train_args"],
            "commits": sorted({_run_commit(runs_dir / f"{name}-seed{s}") for s, _ in results}),
            "loss_curves": {str(s): loss_series(r["log_history"]) for s, r in results},
        }
    summary = {
        "arms": arms,
        "seeds": args.seeds,
        "budget": {
            "recipe": args.recipe,
            "num_hidden_layers": args.layers,
            "hidden_size": args.hidden_size,
            "intermediate_size": args.intermediate_size,
            "num_attention_heads": args.heads,
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "soft_mask_cutoff_epochs": args.soft_mask_cutoff_epochs,
            "long_soft_mask_cutoff_epochs": args.long_soft_mask_cutoff_epochs,
            "quick": args.quick,
            "extra_overrides": args.extra,
        },
        "attention_rank_uniform_scores": (
            uniform_attention_rank(next(iter(arms.values()))["attention_rank"][0]["tokens"]) if arms else None
        ),
        "total_cpu_seconds": sum(a["cpu_seconds"] for a in arms.values()),
        "grid_wall_seconds": grid_span(runs_dir, args),
        "dataset_sha256": dataset_fingerprint(args.dataset),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_summary": os.getloadavg(),
    }
    previous = Path(args.output_dir) / "ablation.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    if grid_info is None:  # --summarize-only keeps the run-time records
        summary.update({k: old[k] for k in ("run_time", "grid", "earlier_invocations") if k in old})
    else:
        summary["grid"] = grid_info
        if old.get("grid"):  # an earlier invocation ran some of the reused runs: keep its record too
            earlier = {k: old[k] for k in ("run_time", "grid") if k in old}
            summary["earlier_invocations"] = old.get("earlier_invocations", []) + [earlier]
    return summary


def write_outputs(summary: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_losses(summary, output_dir / "ablation_training_loss.png")
    plot_ranks(summary, output_dir / "ablation_attention_rank.png")
    markdown = output_dir / "ablation.md"
    discussion = ""
    if markdown.is_file() and DISCUSSION_MARKER in markdown.read_text():
        discussion = markdown.read_text().split(DISCUSSION_MARKER, 1)[1]
    markdown.write_text(tables_markdown(summary) + "\n" + DISCUSSION_MARKER + discussion)


def tables_markdown(summary: dict) -> str:
    arms, budget = summary["arms"], summary["budget"]
    run_time = summary.get("run_time", {})
    lines = [
        "# Ablation: attention collapse, PS [cls], soft mask, attention rank (CPU scale)",
        "",
        "Produced by `python experiments/ablation/run.py` (tables and plots regenerated by the script; the",
        "discussion at the end is written by hand).",
        "",
        f"- commit: `{run_time.get('commit', '?')}` on branch `{run_time.get('branch', '?')}`, based on main at "
        f"`{run_time.get('main_merge_base', '?')}`"
        + (f" (uncommitted changes: {run_time['dirty_files']})" if run_time.get("dirty_files") else ""),
        f"- commits the runs were produced from: {sorted({c for a in arms.values() for c in a['commits']})}",
        f"- budget per run: recipe `{budget['recipe']}` with {budget['num_hidden_layers']} layers of width "
        f"{budget.get('hidden_size', '?')} ({budget.get('num_attention_heads', '?')} heads), "
        f"{budget['epochs']} epochs, warmup {budget['warmup_epochs']} epochs, soft-mask cutoff "
        f"{budget['soft_mask_cutoff_epochs']} epochs ((c') and (d'): "
        f"{budget.get('long_soft_mask_cutoff_epochs', '?')} epochs); seeds {summary['seeds']}"
        + (" (QUICK smoke run)" if budget["quick"] else ""),
        f"- compute: {summary['total_cpu_seconds'] / 60:.1f} CPU-minutes in total over "
        f"{sum(len(a['seeds']) for a in arms.values())} runs; grid wall time "
        f"{(summary['grid_wall_seconds'] or float('nan')) / 60:.1f} min; "
        f"{summary['cpu_model']}, {summary['cores']} cores, shared: 1-min load average during the grid "
        f"{_load(summary)}",
        "",
        "| arm | seeds | test top-1 % (mean ± std) | per seed | final train loss (mean ± std) | CPU min |",
        "|---|---|---|---|---|---|",
    ]
    for a in arms.values():
        top1, loss = a["test_top1"], a["final_train_loss"]
        per_seed = ", ".join(f"{v:.1f}" for v in top1["values"])
        lines.append(
            f"| {a['label']} | {len(a['seeds'])} | {top1['mean']:.2f} ± {top1['std']:.2f} | {per_seed} | "
            f"{loss['mean']:.3f} ± {loss['std']:.3f} | {a['cpu_seconds'] / 60:.1f} |"
        )
    lines += [
        "",
        "Test top-1 is measured on the 517 test images at the arm's deployed rate (r = 0; r = 1 for the",
        "bidirectional arm). Final train loss: mean logged loss (label smoothing 0.1) over the last 25% of steps.",
        "",
        "## Attention rank per layer",
        "",
        "Singular values needed for 80% of the cumulative sum, per head's attention matrix (mask applied as the",
        "model applies it, eager attention, deployed rate), mean over heads and 64 test images, then over seeds.",
        "",
    ]
    if arms:
        depth = max(len(a["attention_rank"]) for a in arms.values())
        tokens = next(iter(arms.values()))["attention_rank"][0]["tokens"]
        lines.append("| arm | " + " | ".join(f"layer {i}" for i in range(depth)) + f" | (of N = {tokens}) |")
        lines.append("|---|" + "---|" * (depth + 1))
        for a in arms.values():
            lines.append(f"| {a['label']} | " + " | ".join(f"{r['mean']:.1f}" for r in a["attention_rank"]) + " | |")
        for name, rank in (summary.get("attention_rank_uniform_scores") or {}).items():
            lines.append(f"| uniform scores, {name.replace('_', ' ')} (mask only) | " + f"{rank} | " * depth + " |")
    lines += [
        "",
        "![training loss](ablation_training_loss.png)",
        "",
        "![attention rank](ablation_attention_rank.png)",
        "",
    ]
    return "\n".join(lines)


def _load(summary: dict) -> str:
    """Load-average samples of every invocation that ran part of the grid, pooled."""
    records = [summary.get("grid")] + [e.get("grid") for e in summary.get("earlier_invocations", [])]
    samples = [(r or {}).get("load_average_1min_samples") or {} for r in records]
    samples = [s for s in samples if s.get("count")]
    if not samples:
        return "not sampled"
    count = sum(s["count"] for s in samples)
    mean = sum(s["mean"] * s["count"] for s in samples) / count
    low, high = min(s["min"] for s in samples), max(s["max"] for s in samples)
    return f"mean {mean:.1f} (min {low:.1f}, max {high:.1f}; {count} samples, every 5 s)"


def _smooth(values: list[float], window: int = 5) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_losses(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for index, a in enumerate(summary["arms"].values()):
        color = f"C{index}"
        curves = list(a["loss_curves"].values())
        for steps, losses in curves:
            ax.plot(steps, losses, color=color, alpha=0.15, linewidth=0.8)
        length = min(len(c[0]) for c in curves)
        mean = [statistics.fmean(c[1][i] for c in curves) for i in range(length)]
        ax.plot(curves[0][0][:length], _smooth(mean), color=color, label=f"{a['label']} (seed mean, smoothed)")
    ax.set(xlabel="optimizer step", ylabel="training loss (label smoothing 0.1)", title="training loss per arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ranks(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, a in enumerate(summary["arms"].values()):
        ranks = a["attention_rank"]
        style = "-" if a["label"][:3] in ("(b)", "(c)", "(e)") else ":"
        ax.plot(
            [r["layer"] for r in ranks],
            [r["mean"] for r in ranks],
            style,
            marker="o",
            color=f"C{index}",
            label=a["label"],
        )
    for name, rank in (summary.get("attention_rank_uniform_scores") or {}).items():
        ax.axhline(rank, color="gray", linestyle="--", linewidth=0.8)
        ax.annotate(f"uniform scores, {name.replace('_', ' ')}", (0, rank), fontsize=7, color="gray", va="bottom")
    depth = max((len(a["attention_rank"]) for a in summary["arms"].values()), default=0)
    ax.set_xticks(range(depth))
    ax.set(xlabel="layer", ylabel="attention rank (80% of singular-value mass)", title="attention-map rank")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    grid_info = None
    if not args.summarize_only:
        run_time = {
            **git_state(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "argv": sys.argv[1:],
            "load_average_at_start": os.getloadavg(),
        }
        grid_info = run_grid(args)
        grid_info = {"run_time": run_time, "grid": grid_info}
    summary = summarize(args, None if grid_info is None else grid_info["grid"])
    if grid_info is not None:
        summary["run_time"] = grid_info["run_time"]
    write_outputs(summary, Path(args.output_dir))
    failures = (summary.get("grid") or {}).get("failures") or []
    print(f"wrote {args.output_dir}/ablation.md, .json and plots; {summary['total_cpu_seconds'] / 60:.1f} CPU-min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
