#!/usr/bin/env python
"""Speed and memory of iLLaMA against timm DeiT and Transformers' ViT, in ONE command.

    python benchmarks/run_benchmark.py                    # full run (~10 min on 2 CPU cores) -> outputs/benchmarks/
    python benchmarks/run_benchmark.py --quick            # smoke run: one round, small batches
    python benchmarks/run_benchmark.py --update-results   # full run that replaces benchmarks/results/

What it measures (CPU: fp32, 224 px; CUDA: bf16, larger batches):
- inference images/s at batch 32 and batch 1 (CUDA: 256 and 1), training step images/s at batch 32
  (CUDA: 128; forward + cross-entropy + backward + AdamW step), for iLLaMA-T/-S with the default
  backend ("sdpa") and "eager", timm deit_{tiny,small}_patch16_224 and Transformers'
  ViTForImageClassification of the same width/depth/heads (attn_implementation="sdpa");
- every model is timed once per round, rounds interleave all models (order rotated per round), and
  the report gives medians over rounds and the MEDIAN OF PER-ROUND RATIOS to the peers, so that a
  noisy shared machine slows both sides of a ratio alike;
- achieved FLOP/s: model FLOPs counted with torch.utils.flop_counter.FlopCounterMode (attention forced
  to the math kernels so that it is counted; iLLaMA counted on its eager backend: the same nominal
  work for both backends) divided by the median time, as a fraction of a large matmul timed in the
  same rounds;
- peak memory: one fresh subprocess per model; the peak resident set size (Linux VmHWM, reset through
  /proc/self/clear_refs before each workload) minus the RSS after the imports, i.e. weights +
  optimizer state + activations + workspace + allocator slack, as the OS sees it (CUDA:
  torch.cuda.max_memory_allocated);
- import time of `import modeling_illama` vs `import transformers; from transformers import
  ViTForImageClassification` (and `import torch` alone), each in a fresh interpreter.
Results: benchmark_<device>.json, .png and .md in outputs/benchmarks/ (a scratch folder) or --out DIR;
--update-results writes them to benchmarks/results/ instead (the committed table the README quotes).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modeling_illama.utils.machine import cpu_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # committed: written only with --update-results
SCRATCH_RESULTS = HERE.parent / "outputs" / "benchmarks"

SIZES = {
    "T": {
        "width": 192,
        "depth": 12,
        "heads": 3,
        "mlp": 768,
        "image": 224,
        "deit": "deit_tiny_patch16_224",
        "preset": "illama-tiny-224",
    },
    "S": {
        "width": 384,
        "depth": 12,
        "heads": 6,
        "mlp": 1536,
        "image": 224,
        "deit": "deit_small_patch16_224",
        "preset": "illama-small-224",
    },
}
# --smoke: a 2-block, 64-wide, 32 px stand-in of every model, for the test suite
SMOKE_SIZES = {
    "T": {
        "width": 64,
        "depth": 2,
        "heads": 1,
        "mlp": 256,
        "image": 32,
        "deit": "deit_tiny_patch16_224",
        "preset": "illama-tiny-224",
    }
}
KINDS = ("illama-sdpa", "illama-eager", "deit-timm", "vit-hf")
PEERS = {"deit": "deit-timm", "hf_vit": "vit-hf"}
IMPORT_SNIPPETS = {
    "modeling_illama": "import modeling_illama",
    "transformers_vit": "import transformers; from transformers import ViTForImageClassification",
    "torch": "import torch",
}


# ----------------------------------------------------------------------------------------------- models
class _Logits(nn.Module):
    """Wraps a Transformers classifier so that every model maps pixels -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def _shape(size: dict, names: tuple[str, ...], smoke: bool) -> dict:
    """The smoke size's width, depth, heads and image size under the model library's own argument `names`."""
    return dict(zip(names, (size["width"], size["depth"], size["heads"], size["image"]))) if smoke else {}


def build_model(kind: str, size: dict, smoke: bool = False) -> nn.Module:
    """A randomly initialised model of `kind` at `size` (pretrained=False everywhere)."""
    if kind.startswith("illama"):
        from modeling_illama import ILlamaForImageClassification, load_preset

        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size")
        config = load_preset(size["preset"], **_shape(size, names, smoke))
        config._attn_implementation = kind.split("-")[1]
        return _Logits(ILlamaForImageClassification(config))
    if kind == "deit-timm":
        import timm

        names = ("embed_dim", "depth", "num_heads", "img_size")
        return timm.create_model(size["deit"], pretrained=False, **_shape(size, names, smoke))
    if kind == "vit-hf":
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            hidden_size=size["width"],
            num_hidden_layers=size["depth"],
            num_attention_heads=size["heads"],
            intermediate_size=size["mlp"],
            image_size=size["image"],
            patch_size=16,
            num_labels=1000,
        )
        config._attn_implementation = "sdpa"
        return _Logits(ViTForImageClassification(config))
    raise ValueError(f"unknown model kind {kind!r}")


# ---------------------------------------------------------------------------------------------- helpers
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine_description(device) -> dict:
    import timm
    import transformers

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _workloads(device, quick: bool, smoke: bool) -> dict:
    """name -> (mode, batch, calls per measurement)."""
    if device.type == "cuda":
        big, train = (256, 128) if not quick else (32, 16)
    else:
        big, train = (32, 32) if not quick else (8, 8)
    if smoke:
        big, train = 4, 4
    return {
        f"infer_b{big}": ("infer", big, 1),
        "infer_b1": ("infer", 1, 2 if quick else 4),
        f"train_b{train}": ("train", train, 1),
    }


def takes_part(args, size: str, kind: str, mode: str) -> bool:
    """Training is timed for --train-sizes only, and not for illama-eager (the reference arithmetic; the
    exact training paths of the "sdpa" backend are compared by --attention-paths)."""
    return mode != "train" or (size in args.train_sizes.split(",") and kind != "illama-eager")


class Runner:
    """One model, its inputs and optimizer, and a timed call per workload."""

    def __init__(self, kind, size, device, dtype, smoke):
        self.kind, self.device, self.dtype = kind, device, dtype
        self.model = build_model(kind, size, smoke).to(device)
        self.image = size["image"]
        self.optimizer = None
        self.inputs = {}

    def _batch(self, batch):
        if batch not in self.inputs:
            generator = torch.Generator().manual_seed(batch)
            pixels = torch.randn(batch, 3, self.image, self.image, generator=generator).to(self.device)
            labels = torch.randint(0, 1000, (batch,), generator=generator).to(self.device)
            self.inputs[batch] = (pixels, labels)
        return self.inputs[batch]

    def infer(self, batch):
        pixels, _ = self._batch(batch)
        self.model.eval()
        if self.device.type == "cuda":
            self.model.to(self.dtype)
        with torch.inference_mode():
            return self.model(pixels.to(self.dtype))

    def train_step(self, batch):
        pixels, labels = self._batch(batch)
        self.model.train()
        if self.device.type == "cuda":
            self.model.float()
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.device.type == "cuda"):
            loss = F.cross_entropy(self.model(pixels), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def run(self, mode, batch, calls=1):
        for _ in range(calls):
            self.infer(batch) if mode == "infer" else self.train_step(batch)

    def timed(self, mode, batch, calls) -> float:
        """Seconds per image of `calls` consecutive calls."""
        _sync(self.device)
        start = time.perf_counter()
        self.run(mode, batch, calls)
        _sync(self.device)
        return (time.perf_counter() - start) / (calls * batch)


def count_flops(kind, size, device, smoke, mode, batch) -> int:
    """Model FLOPs of one call (math attention kernels so that attention is counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    runner = Runner(kind.replace("illama-sdpa", "illama-eager"), size, torch.device("cpu"), torch.float32, smoke)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        runner.run(mode, batch)
    del runner
    return int(counter.get_total_flops())


def matmul_seconds(device, dtype, n) -> float:
    """Best of three n x n x n matmuls (the machine's attainable FLOP/s in this run)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------------- subprocess measures
def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(kind, size_name, device_name, smoke, quick, threads, train=True) -> dict:
    """Runs in a fresh process: peak memory of inference at the big batch, then of training steps."""
    import resource

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if kind.startswith("illama") or kind == "vit-hf":
        import modeling_illama  # noqa: F401  (imports transformers too)
    else:
        import timm  # noqa: F401
    sizes = SMOKE_SIZES if smoke else SIZES
    gc.collect()
    base_rss = _rss_mb("VmRSS")
    result = {"kind": kind, "size": size_name, "rss_after_imports_mb": base_rss}
    runner = Runner(kind, sizes[size_name], device, dtype, smoke)
    result["parameters"] = sum(p.numel() for p in runner.model.parameters())
    for name, (mode, batch, _) in _workloads(device, quick, smoke).items():
        if name == "infer_b1" or (mode == "train" and not train):
            continue
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            runner.run(mode, batch, 2)
            torch.cuda.synchronize()
            result[name] = {
                "peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20,
                "method": "torch.cuda.max_memory_allocated minus allocated before the workload",
            }
            continue
        reset = _reset_peak_rss()
        runner.run(mode, batch, 2)  # two calls: AdamW allocates its state on the first step
        if reset:
            peak, method = _rss_mb("VmHWM"), "VmHWM (reset via clear_refs) minus RSS after imports"
        else:
            peak, method = (
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "ru_maxrss minus RSS after imports",
            )
        result[name] = {"peak_mb": peak - base_rss, "process_peak_mb": peak, "method": method}
    return result


def measure_memory(args, sizes) -> list:
    rows = []
    for size_name in sizes:
        for kind in KINDS:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--_memory-worker",
                kind,
                size_name,
                "--device",
                args.device,
                "--threads",
                str(args.threads),
            ]
            command += ["--smoke"] * args.smoke + ["--quick"] * args.quick
            command += ["--train-sizes", args.train_sizes if takes_part(args, size_name, kind, "train") else ""]
            done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
            if done.returncode != 0:
                rows.append({"kind": kind, "size": size_name, "error": done.stderr.strip()[-2000:]})
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(
                f"  memory {size_name} {kind}: "
                + ", ".join(f"{k} {v['peak_mb']:.0f} MB" for k, v in rows[-1].items() if isinstance(v, dict)),
                flush=True,
            )
    return rows


def measure_import_times(repeats: int) -> dict:
    times = {name: [] for name in IMPORT_SNIPPETS}
    for _ in range(repeats):
        for name, snippet in IMPORT_SNIPPETS.items():
            code = f"import time; t = time.perf_counter(); {snippet}; print(time.perf_counter() - t)"
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE.parent)
            if done.returncode == 0:
                times[name].append(float(done.stdout.strip().splitlines()[-1]))
    return {name: {"median_s": statistics.median(v) if v else None, "runs_s": v} for name, v in times.items()}


# ------------------------------------------------------------------------------------------------ main
def timing_rounds(args, device, dtype, sizes, workloads):
    runners = {(s, k): Runner(k, sizes[s], device, dtype, args.smoke) for s in sizes for k in KINDS}
    for (size, kind), runner in runners.items():  # warm-up: one call of each workload
        for mode, batch, _ in workloads.values():
            if takes_part(args, size, kind, mode):
                runner.run(mode, batch)
    per_round = {
        w: {f"{s}/{k}": [] for s, k in runners if takes_part(args, s, k, mode)}
        for w, (mode, _, _) in workloads.items()
    }
    matmul = []
    matmul_n = 256 if args.smoke else (8192 if device.type == "cuda" else 2048)
    started = time.perf_counter()
    rounds = 0
    while rounds < args.max_rounds and (rounds < args.min_rounds or time.perf_counter() - started < args.budget_s):
        order = list(runners)
        order = order[rounds % len(order) :] + order[: rounds % len(order)]
        for workload, (mode, batch, calls) in workloads.items():
            for key in order:
                if takes_part(args, key[0], key[1], mode):
                    per_round[workload][f"{key[0]}/{key[1]}"].append(runners[key].timed(mode, batch, calls))
        matmul.append(matmul_seconds(device, dtype, matmul_n))
        rounds += 1
        took = {
            w: f"{sum(v[-1] for v in m.values()) * workloads[w][1] * workloads[w][2]:.0f}s"
            for w, m in per_round.items()
        }
        print(f"  round {rounds} done at {time.perf_counter() - started:.0f} s ({took})", flush=True)
    del runners
    gc.collect()
    return per_round, matmul, matmul_n, rounds


def summarise(per_round, sizes, flops, matmul, matmul_n):
    matmul_flops = statistics.median([2 * matmul_n**3 / t for t in matmul])
    timing = {}
    for workload, models in per_round.items():
        batch = int(workload.split("_b")[1])
        timing[workload] = {}
        for key, seconds in models.items():
            size, kind = key.split("/")
            entry = {"images_per_s_median": 1.0 / statistics.median(seconds), "seconds_per_image_per_round": seconds}
            for peer_name, peer_kind in PEERS.items():
                peer = models.get(f"{size}/{peer_kind}")
                if peer:
                    entry[f"ratio_to_{peer_name}_median"] = statistics.median(p / s for s, p in zip(seconds, peer))
            flop = flops.get((size, kind, workload))
            if flop:
                achieved = flop / batch / statistics.median(seconds)
                entry["gflops_per_image"] = flop / batch / 1e9
                entry["achieved_gflop_s"] = achieved / 1e9
                entry["fraction_of_matmul"] = achieved / matmul_flops
            timing[workload][key] = entry
    return timing, matmul_flops


def targets_for(timing, memory, workloads):
    names = list(workloads)
    infer, train = names[0], names[2]
    mem = {(row["size"], row["kind"]): row for row in memory if "error" not in row}

    def mem_ratio(workload):
        ours, peer = mem.get(("T", "illama-sdpa")), mem.get(("T", "deit-timm"))
        if not ours or not peer or workload not in ours:
            return None
        return ours[workload]["peak_mb"] / peer[workload]["peak_mb"]

    out = {
        f"T {infer} images/s vs deit_tiny": {
            "target": ">= 1.10",
            "measured": timing[infer]["T/illama-sdpa"]["ratio_to_deit_median"],
        },
        f"T {train} images/s vs deit_tiny": {
            "target": ">= 1.0",
            "measured": timing[train]["T/illama-sdpa"]["ratio_to_deit_median"],
        },
        f"T {infer} peak memory vs deit_tiny": {"target": "<= 1.0", "measured": mem_ratio(infer)},
        f"T {train} peak memory vs deit_tiny": {"target": "(reported)", "measured": mem_ratio(train)},
    }
    for entry in out.values():
        value, target = entry["measured"], entry["target"]
        if value is None or target[0] not in "<>":
            entry["met"] = None
        else:
            bound = float(target.split()[1])
            entry["met"] = value >= bound if target.startswith(">=") else value <= bound
    return out


def markdown_table(result) -> str:
    timing, workloads = result["timing"], list(result["timing"])
    mem = {(r["size"], r["kind"]): r for r in result["memory"] if "error" not in r}
    head = (
        ["model"]
        + [f"{w} img/s (x deit, x HF ViT)" for w in workloads]
        + [f"peak MB {workloads[0]}", f"peak MB {workloads[2]}", f"% of matmul ({workloads[0]})"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in timing[workloads[0]]:
        size, kind = key.split("/")
        cells = [f"{kind} {size}"]
        for w in workloads:
            e = timing[w].get(key)
            cells.append(
                f"{e['images_per_s_median']:.1f} ({e['ratio_to_deit_median']:.2f}x, {e['ratio_to_hf_vit_median']:.2f}x)"
                if e
                else "(as sdpa)"
                if kind == "illama-eager" and key.replace("eager", "sdpa") in timing[w]
                else "-"
            )
        row = mem.get((size, kind), {})
        for w in (workloads[0], workloads[2]):
            cells.append(f"{row[w]['peak_mb']:.0f}" if w in row else "n/a")
        frac = timing[workloads[0]][key].get("fraction_of_matmul")
        cells.append(f"{100 * frac:.0f}%" if frac else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    imports = result["import_time_s"]
    measured = [
        f"`{IMPORT_SNIPPETS[k]}` {v['median_s']:.2f} s" for k, v in imports.items() if v["median_s"] is not None
    ]
    if measured:
        lines += ["", "Import time (median, fresh interpreter): " + ", ".join(measured)]
    return "\n".join(lines)


def draw_chart(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timing = result["timing"]
    workloads = list(timing)
    keys = list(timing[workloads[0]])
    mem = {(r["size"], r["kind"]): r for r in result["memory"] if "error" not in r}
    panels = [(w, [timing[w].get(k, {}).get("images_per_s_median", 0) for k in keys], "images/s") for w in workloads]
    for w in (workloads[0], workloads[2]):
        panels.append(
            (f"peak memory {w}", [mem.get(tuple(k.split("/")), {}).get(w, {}).get("peak_mb", 0) for k in keys], "MB")
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    colors = {"illama-sdpa": "tab:blue", "illama-eager": "tab:cyan", "deit-timm": "tab:orange", "vit-hf": "tab:green"}
    for ax, (title, values, unit) in zip(axes, panels):
        ax.bar(range(len(keys)), values, color=[colors[k.split("/")[1]] for k in keys])
        ax.set_xticks(range(len(keys)), [k.replace("/", " ") for k in keys], rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
    machine = result["machine"]
    fig.suptitle(
        f"{machine['cpu']} ({machine['torch_threads']} threads), torch {machine['torch']}, "
        f"{'bf16' if machine['device'].startswith('cuda') else 'fp32'}; medians of {result['settings']['rounds']} interleaved rounds",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------- post-softmax attention paths
# --attention-paths: iLLaMA-T with each exact path of the post-softmax mask forced (fused_attention_illama.py)
# against timm deit_tiny, fp32 and bf16, inference and training, 224 and 384 px; the "auto" choice marked.
ATTENTION_PATHS = ("materialised", "fused", "recompute")
# the other selectable (mask_style, attn_implementation) pairs, timed beside the paths ("backends" in the results)
OTHER_BACKENDS = {
    "post_softmax_eager": ("post_softmax", "eager"),
    "renormalized_sdpa": ("renormalized", "sdpa"),
    "renormalized_eager": ("renormalized", "eager"),
}
# name -> (precision, mode, image, batch); bf16 inference casts the model (model.to(bfloat16)), bf16 training
# is autocast (fp32 weights and AdamW, as accelerate's mixed_precision="bf16")
PATH_CASES = {
    "infer_fp32_224": ("fp32", "infer", 224, 32),
    "infer_bf16_224": ("bf16", "infer", 224, 32),
    "train_fp32_224": ("fp32", "train", 224, 32),
    "train_bf16_224": ("bf16", "train", 224, 32),
    "infer_fp32_384": ("fp32", "infer", 384, 8),
    "infer_bf16_384": ("bf16", "infer", 384, 8),
}  # training at 384 px: peak memory only (PATH_MEMORY_CASES), to keep a run near 30 min on a shared 2-core VM
# training peak memory (fresh process each): image -> batch
PATH_MEMORY_CASES = {224: 32, 384: 8}


def cpu_flags() -> dict:
    """CPU model and the flags that decide bf16 speed (AMX tiles, AVX-512 bf16), from /proc/cpuinfo (lscpu
    where there is none)."""
    from modeling_illama.utils.machine import cpu_model

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
    except (OSError, StopIteration):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return {"model_name": cpu_model(), "lscpu": None}
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        flags = fields.get("Flags", "").split()
    return {
        "model_name": cpu_model(),
        "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512f": "avx512f" in flags,
    }


def cpu_key(flags: dict) -> str:
    """The results key of a CPU type: model name and its bf16 hardware."""
    return (
        f"{flags.get('model_name')} (AMX bf16: {'yes' if flags.get('amx_bf16') else 'no'}, "
        f"AVX-512 bf16: {'yes' if flags.get('avx512_bf16') else 'no'})"
    )


def build_path_model(kind: str, image: int, smoke: bool = False) -> nn.Module:
    """deit_tiny at `image` px, or iLLaMA-T (r = 0, the deployed rate) at `image` px with post_softmax_path = kind."""
    size = dict((SMOKE_SIZES if smoke else SIZES)["T"])
    if kind == "deit":
        import timm

        overrides = {"img_size": image}
        if smoke:
            overrides = {
                "embed_dim": size["width"],
                "depth": size["depth"],
                "num_heads": size["heads"],
                "img_size": 32,
            }
        return timm.create_model(size["deit"], pretrained=False, **overrides)
    from modeling_illama import ILlamaForImageClassification, load_preset

    mask_style, implementation = OTHER_BACKENDS.get(kind, ("post_softmax", "sdpa"))
    overrides = {"image_size": image, "mask_style": mask_style}
    overrides["post_softmax_path"] = "auto" if kind in OTHER_BACKENDS else kind
    if smoke:
        overrides.update(
            hidden_size=size["width"],
            num_hidden_layers=size["depth"],
            num_attention_heads=size["heads"],
            image_size=32,
        )
    config = load_preset(size["preset"], **overrides)
    config._attn_implementation = implementation
    return _Logits(ILlamaForImageClassification(config))


def auto_path_for(precision: str, mode: str, image: int, smoke: bool = False) -> str:
    """What post_softmax_path="auto" runs for this case (the attention inputs' device, dtype, N, grad mode)."""
    from modeling_illama.fused_attention_illama import choose_post_softmax_path

    tokens = (32 // 16) ** 2 + 1 if smoke else (image // 16) ** 2 + 1
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return choose_post_softmax_path(torch.empty(1, 1, tokens, 64, dtype=dtype), mode == "train")


class PathRunner:
    """One model in fp32 (training, with AdamW; autocast for bf16) and, for bf16 inference, a bf16 copy."""

    def __init__(self, kind, image, smoke):
        self.model = build_path_model(kind, image, smoke)
        self.image = 32 if smoke else image
        self.bf16 = None
        self.optimizer = None
        self.inputs = {}

    def _batch(self, batch):
        if batch not in self.inputs:
            generator = torch.Generator().manual_seed(batch)
            pixels = torch.randn(batch, 3, self.image, self.image, generator=generator)
            self.inputs[batch] = (pixels, torch.randint(0, 1000, (batch,), generator=generator))
        return self.inputs[batch]

    def run(self, precision, mode, batch):
        pixels, labels = self._batch(batch)
        if mode == "infer":
            model = self.model
            if precision == "bf16":
                if self.bf16 is None:
                    import copy

                    self.bf16 = copy.deepcopy(self.model).to(torch.bfloat16)
                model, pixels = self.bf16, pixels.to(torch.bfloat16)
            model.eval()
            with torch.inference_mode():
                return model(pixels)
        self.model.train()
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(self.model(pixels), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def timed(self, precision, mode, batch) -> float:
        start = time.perf_counter()
        self.run(precision, mode, batch)
        return time.perf_counter() - start


def path_memory_worker(kind, image, batch, smoke, threads) -> dict:
    """Fresh process: peak RSS of two fp32 training steps (AdamW state included) minus RSS after imports."""
    torch.set_num_threads(threads)
    import timm  # noqa: F401

    import modeling_illama  # noqa: F401

    gc.collect()
    base = _rss_mb("VmRSS")
    runner = PathRunner(kind, image, smoke)
    reset = _reset_peak_rss()
    for _ in range(2):
        runner.run("fp32", "train", batch)
    peak = _rss_mb("VmHWM") if reset else None
    return {"kind": kind, "image": image, "batch": batch, "peak_mb": None if peak is None else peak - base}


def profile_default_path(precision, mode, image, batch, smoke, rows=12) -> str:
    """torch.profiler table (self CPU time) of one call of iLLaMA-T on the "auto" path."""
    runner = PathRunner("auto", image, smoke)
    runner.run(precision, mode, batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        runner.run(precision, mode, batch)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def attention_paths_benchmark(args) -> dict:
    images = [int(i) for i in args.path_images.split(",")]
    cases = {n: c for n, c in PATH_CASES.items() if c[2] in images and not (args.quick and c[2] == 384)}
    if args.compiled_only:
        cases, args.skip_memory, args.skip_profile, args.compile = {}, True, True, True
    if args.smoke:
        cases = {n: (p, m, i, 2) for n, (p, m, i, b) in cases.items() if i == 224}
    kinds = ("deit",) + ATTENTION_PATHS + tuple(OTHER_BACKENDS)
    images = sorted({c[2] for c in cases.values()})
    runners = {(kind, image): PathRunner(kind, image, args.smoke) for kind in kinds for image in images}
    for precision, mode, image, batch in cases.values():  # warm-up
        for kind in kinds:
            runners[(kind, image)].run(precision, mode, batch)
    seconds = {name: {kind: [] for kind in kinds} for name in cases}
    loads, rounds, started = [], 0, time.perf_counter()
    while rounds < args.max_rounds and (rounds < args.min_rounds or time.perf_counter() - started < args.budget_s):
        order = list(kinds[rounds % len(kinds) :] + kinds[: rounds % len(kinds)])
        for name, (precision, mode, image, batch) in cases.items():
            for kind in order:
                seconds[name][kind].append(runners[(kind, image)].timed(precision, mode, batch))
        loads.append(os.getloadavg()[0])
        rounds += 1
        print(f"  round {rounds} done at {time.perf_counter() - started:.0f} s, load {loads[-1]:.1f}", flush=True)
    del runners
    gc.collect()
    timing = {}
    for name, (precision, mode, image, batch) in cases.items():
        auto = auto_path_for(precision, mode, image, args.smoke)
        deit = seconds[name]["deit"]
        entry = {"precision": precision, "mode": mode, "image": image, "batch": batch, "auto": auto, "paths": {}}
        entry["backends"] = {}
        for kind in kinds:
            own = seconds[name][kind]
            entry["backends" if kind in OTHER_BACKENDS else "paths"][kind] = {
                "images_per_s_median": batch / statistics.median(own),
                "ratio_to_deit_median": statistics.median(d / s for d, s in zip(deit, own)),
                "seconds_per_round": own,
            }
        timing[name] = mark_auto_and_best(entry, auto)
    memory = []
    if not args.skip_memory:
        for image, batch in PATH_MEMORY_CASES.items():
            if args.quick and image == 384:
                continue
            for kind in ("deit",) + ATTENTION_PATHS:
                command = [sys.executable, str(Path(__file__).resolve()), "--_path-memory-worker", kind, str(image)]
                command += ["--_path-memory-batch", str(2 if args.smoke else batch), "--threads", str(args.threads)]
                command += ["--smoke"] * args.smoke
                done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
                if done.returncode != 0:
                    memory.append({"kind": kind, "image": image, "error": done.stderr.strip()[-2000:]})
                    continue
                memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  memory {image} px {kind}: {memory[-1]['peak_mb']:.0f} MB", flush=True)
        for row in memory:
            deit = next((m for m in memory if m["kind"] == "deit" and m["image"] == row["image"]), None)
            if deit and "error" not in row and "error" not in deit and row["peak_mb"] and deit["peak_mb"]:
                row["ratio_to_deit"] = row["peak_mb"] / deit["peak_mb"]
    compiled = compiled_rows(args) if args.compile else None
    profiles = {}
    if not args.skip_profile:
        for name in ("infer_bf16_224", "train_fp32_224"):
            if name in cases:
                profiles[name] = profile_default_path(*cases[name], smoke=args.smoke)
    return {
        "timing": timing,
        "memory": memory,
        "compiled": compiled,
        "profiles": profiles,
        "rounds": rounds,
        "load_per_round": loads,
    }


def path_candidates(mode: str) -> tuple:
    """The paths that run different code in this mode: without gradients "recompute" runs the inference
    forward that "auto" picks (materialised or fused), so it is timed but not a candidate of its own; in
    training only the paths that keep nothing N x N (the memory target) are candidates."""
    return ("materialised", "fused") if mode == "infer" else ("fused", "recompute")


def mark_auto_and_best(entry: dict, auto: str) -> dict:
    """Mark the rule table's choice and the fastest candidate; auto_vs_best = their ratio-to-deit quotient."""
    ratio = {kind: entry["paths"][kind]["ratio_to_deit_median"] for kind in ATTENTION_PATHS}
    best = max(path_candidates(entry["mode"]), key=ratio.get)
    entry.update(auto=auto, best_path=best, best_path_any=max(ATTENTION_PATHS, key=ratio.get))
    entry["auto_vs_best"] = ratio[auto] / ratio[best]
    return entry


COMPILED_CASES = ("infer_fp32_224", "infer_bf16_224", "train_fp32_224", "train_bf16_224")


def compiled_rows(args) -> dict:
    """deit_tiny and iLLaMA-T (auto path) both under torch.compile (default inductor), fp32 and bf16, inference
    and training step at 224 px, interleaved rounds; the first call of each case compiles (not timed)."""
    rows = {}
    for name in COMPILED_CASES:
        precision, mode, image, batch = PATH_CASES[name]
        batch = 2 if args.smoke else batch
        runners = {kind: PathRunner(kind, image, args.smoke) for kind in ("deit", "auto")}
        for runner in runners.values():
            if mode == "infer" and precision == "bf16":
                runner.run(precision, mode, batch)  # makes the bf16 copy
                runner.bf16 = torch.compile(runner.bf16)
            else:
                runner.model = torch.compile(runner.model)
            started = time.perf_counter()
            runner.run(precision, mode, batch)  # compiles
            runner.compile_s = time.perf_counter() - started
        seconds, loads = {kind: [] for kind in runners}, []
        for index in range(args.min_rounds):
            for kind in list(runners)[index % 2 :] + list(runners)[: index % 2]:
                seconds[kind].append(runners[kind].timed(precision, mode, batch))
            loads.append(os.getloadavg()[0])
        ratio = statistics.median(d / s for d, s in zip(seconds["deit"], seconds["auto"]))
        rows[name] = {
            "precision": precision,
            "mode": mode,
            "image": image,
            "batch": batch,
            "images_per_s_median": {kind: batch / statistics.median(v) for kind, v in seconds.items()},
            "compile_s": {kind: runner.compile_s for kind, runner in runners.items()},
            "seconds_per_round": seconds,
            "load_per_round": loads,
            "ratio_to_deit_median": ratio,
        }
        print(f"  compiled {name}: iLLaMA-T auto / deit_tiny = {ratio:.2f}x, load {loads[-1]:.1f}", flush=True)
        del runners
        gc.collect()
    return rows


def attention_paths_markdown(result) -> str:
    machine, cpu = result["machine"], result["machine"]["cpu_flags"]
    lines = [
        f"CPU: {cpu.get('model_name')} (AMX bf16: {cpu.get('amx_bf16')}, AVX-512 bf16: {cpu.get('avx512_bf16')}), "
        f"{machine['torch_threads']} threads, torch {machine['torch']}; load average per round "
        f"{', '.join(f'{v:.1f}' for v in result['load_per_round'])} (the machine is shared: ratios are medians of "
        f"per-round ratios of interleaved calls). {result['rounds']} rounds.",
        "",
        "| case | " + " | ".join(f"{k} img/s (x deit)" for k in ("deit",) + ATTENTION_PATHS) + " | auto / best |",
        "|---|" + "---|" * (len(ATTENTION_PATHS) + 2),
    ]
    for name, entry in result["timing"].items():
        cells = [f"{name} (b{entry['batch']})"]
        for kind in ("deit",) + ATTENTION_PATHS:
            path = entry["paths"][kind]
            mark = " **auto**" if kind == entry["auto"] else ""
            cells.append(f"{path['images_per_s_median']:.1f} ({path['ratio_to_deit_median']:.2f}x){mark}")
        cells.append(f"{entry['auto_vs_best']:.2f} (best {entry['best_path']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The other backends (mask_style_backend), same rounds:", ""]
    lines += ["| case | " + " | ".join(f"{k} img/s (x deit)" for k in OTHER_BACKENDS) + " |"]
    lines += ["|---|" + "---|" * len(OTHER_BACKENDS)]
    for name, entry in result["timing"].items():
        cells = [f"{name} (b{entry['batch']})"]
        for row in (entry.get("backends", {}).get(kind) for kind in OTHER_BACKENDS):
            cells.append(f"{row['images_per_s_median']:.1f} ({row['ratio_to_deit_median']:.2f}x)" if row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if result["memory"]:
        lines += [
            "",
            "Training peak memory (fp32, 2 AdamW steps, fresh process, peak RSS minus RSS after imports):",
            "",
        ]
        lines += ["| image (batch) | " + " | ".join(("deit",) + ATTENTION_PATHS) + " |"]
        lines += ["|---|" + "---|" * (len(ATTENTION_PATHS) + 1)]
        for image, batch in PATH_MEMORY_CASES.items():
            rows = {m["kind"]: m for m in result["memory"] if m["image"] == image}
            if not rows:
                continue
            cells = [f"{image} px (b{next(iter(rows.values())).get('batch', batch)})"]
            for kind in ("deit",) + ATTENTION_PATHS:
                row = rows.get(kind, {})
                ratio = f" ({row['ratio_to_deit']:.2f}x)" if "ratio_to_deit" in row else ""
                cells.append(f"{row['peak_mb']:.0f} MB{ratio}" if row.get("peak_mb") else "error")
            lines.append("| " + " | ".join(cells) + " |")
    compiled = result.get("compiled")
    if compiled:
        lines += [
            "",
            "Both models under torch.compile (default inductor; compile time not timed):",
            "",
            "| case | deit img/s | iLLaMA-T (auto) img/s (x deit) | compile s (deit / iLLaMA) |",
            "|---|---|---|---|",
        ]
        for name, row in compiled.items():
            speed, took = row["images_per_s_median"], row["compile_s"]
            lines.append(
                f"| {name} (b{row['batch']}) | {speed['deit']:.1f} | {speed['auto']:.1f} "
                f"({row['ratio_to_deit_median']:.2f}x) | {took['deit']:.0f} / {took['auto']:.0f} |"
            )
    for name, table in result["profiles"].items():
        lines += ["", f"Profile of the default (auto) path, {name}:", "", "```", table.rstrip(), "```"]
    return "\n".join(lines)


def git_commit() -> str:
    """The measured tree: short commit, "+dirty" with uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE.parent)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_attention_paths(args) -> int:
    started, commit = time.time(), git_commit()  # the tree measured: taken before the run
    machine = machine_description(torch.device("cpu"))
    machine["cpu_flags"] = cpu_flags()
    print(f"machine: {machine['cpu_flags']}, load {machine['load_average_at_start']}", flush=True)
    result = {"machine": machine, **attention_paths_benchmark(args)}
    machine["load_average_at_end"] = list(os.getloadavg())
    result["wall_time_s"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / "attention_paths_cpu"
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    result["commit"] = commit
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    table = attention_paths_markdown(result)
    stem.with_suffix(".md").write_text(table + "\n")
    by_cpu_path = args.out / "attention_paths_by_cpu.json"
    by_cpu = json.loads(by_cpu_path.read_text()) if by_cpu_path.exists() else {}
    by_cpu[cpu_key(machine["cpu_flags"])] = result  # rows of other CPU types kept
    by_cpu_path.write_text(json.dumps(by_cpu, indent=1) + "\n")
    by_cpu_path.with_suffix(".md").write_text(
        "\n\n".join(
            f"## {key}\n\n{entry.get('date', 'date not recorded')}, commit {entry.get('commit', 'not recorded')}.\n\n"
            + attention_paths_markdown(entry)
            for key, entry in by_cpu.items()
        )
        + "\n"
    )
    print(table)
    print(f"wrote {stem}.json/.md in {result['wall_time_s']:.0f} s")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one round, small batches, T only")
    parser.add_argument("--smoke", action="store_true", help="2-block 64-wide 32 px stand-ins (for tests)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--sizes", default="T,S", help="comma-separated subset of T,S")
    parser.add_argument("--train-sizes", default="T", help="sizes whose training step is timed (S adds ~1 min/round)")
    parser.add_argument("--min-rounds", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop starting rounds after this many s")
    parser.add_argument("--import-repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--out", type=Path, help=f"results folder (default: {SCRATCH_RESULTS.relative_to(HERE.parent)})"
    )
    parser.add_argument(
        "--update-results", action="store_true", help="write to benchmarks/results/ (the results the README quotes)"
    )
    parser.add_argument("--_memory-worker", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--attention-paths",
        action="store_true",
        help="instead: iLLaMA-T on each post-softmax attention path vs deit_tiny, fp32/bf16, 224/384 px "
        "(writes attention_paths_cpu.json/.md to --out)",
    )
    parser.add_argument("--skip-profile", action="store_true", help="--attention-paths: no profiler tables")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="--attention-paths: add both models under torch.compile (fp32/bf16, inference/training)",
    )
    parser.add_argument(
        "--compiled-only",
        action="store_true",
        help="--attention-paths: only the torch.compile rows (implies --compile)",
    )
    parser.add_argument("--path-images", default="224,384", help="--attention-paths: resolutions timed")
    parser.add_argument("--_path-memory-worker", nargs=2, metavar=("KIND", "IMAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--_path-memory-batch", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.update_results and args.out is not None:
        parser.error("--update-results writes to benchmarks/results/; do not combine it with --out")
    args.out = RESULTS if args.update_results else (args.out or SCRATCH_RESULTS)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.min_rounds = args.max_rounds = 1
        args.import_repeats = 1 if args.import_repeats is None else args.import_repeats
        args.sizes = "T"
    if args.import_repeats is None:
        args.import_repeats = 3
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._path_memory_worker:
        kind, image = args._path_memory_worker
        print(json.dumps(path_memory_worker(kind, int(image), args._path_memory_batch, args.smoke, args.threads)))
        return 0
    if args.attention_paths:
        return run_attention_paths(args)
    if args._memory_worker:
        kind, size_name = args._memory_worker
        train = size_name in args.train_sizes.split(",")
        print(json.dumps(memory_worker(kind, size_name, args.device, args.smoke, args.quick, args.threads, train)))
        return 0
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = {
        s: (SMOKE_SIZES if args.smoke else SIZES)[s]
        for s in args.sizes.split(",")
        if s in (SMOKE_SIZES if args.smoke else SIZES)
    }
    workloads = _workloads(device, args.quick, args.smoke)
    started = time.time()
    machine = machine_description(device)
    machine["cpu_flags"] = cpu_flags()
    machine["commit"] = git_commit()
    print(
        f"machine: {machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}, device {device}",
        flush=True,
    )

    print("import times ...", flush=True)
    import_times = measure_import_times(args.import_repeats)
    print("model FLOPs ...", flush=True)
    flops = {}
    for s in sizes:
        for kind in KINDS:
            for workload, (mode, batch, _) in workloads.items():
                if not takes_part(args, s, kind, mode):
                    continue
                # FLOPs are linear in the batch: counted once per mode at batch 2, scaled to the workload's batch
                if (s, kind, mode) not in flops:
                    flops[(s, kind, mode)] = count_flops(kind, sizes[s], device, args.smoke, mode, 2) // 2
                flops[(s, kind, workload)] = flops[(s, kind, mode)] * batch
    print("timing rounds ...", flush=True)
    per_round, matmul, matmul_n, rounds = timing_rounds(args, device, dtype, sizes, workloads)
    timing, matmul_flops = summarise(per_round, sizes, flops, matmul, matmul_n)
    memory = (
        []
        if args.skip_memory
        else (print("memory (fresh subprocess per model) ...", flush=True) or measure_memory(args, sizes))
    )
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "machine": machine,
        "settings": {
            "dtype": str(dtype).replace("torch.", ""),
            "workloads": {k: list(v) for k, v in workloads.items()},
            "rounds": rounds,
            "quick": args.quick,
            "smoke": args.smoke,
            "soft_mask_rate": 0.0,
            "wall_time_s": None,
        },
        "import_time_s": import_times,
        "matmul_reference": {"n": matmul_n, "median_gflop_s": matmul_flops / 1e9},
        "timing": timing,
        "memory": memory,
    }
    result["targets"] = targets_for(timing, memory, workloads) if "T" in sizes else {}
    result["settings"]["wall_time_s"] = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"benchmark_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    if device.type == "cpu":  # one entry per CPU type, rows of other types kept
        by_cpu_path = args.out / "benchmark_by_cpu.json"
        by_cpu = json.loads(by_cpu_path.read_text()) if by_cpu_path.exists() else {}
        by_cpu[cpu_key(machine["cpu_flags"])] = result
        by_cpu_path.write_text(json.dumps(by_cpu, indent=1) + "\n")
    table = markdown_table(result)
    stem.with_suffix(".md").write_text(table + "\n")
    draw_chart(result, stem.with_suffix(".png"))
    print(table)
    for name, entry in result["targets"].items():
        measured = "n/a" if entry["measured"] is None else f"{entry['measured']:.3f}"
        print(f"target {name}: {entry['target']}, measured {measured}, met {entry['met']}")
    print(f"wrote {stem}.json/.md/.png in {result['settings']['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
