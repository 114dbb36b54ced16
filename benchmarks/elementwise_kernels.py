#!/usr/bin/env python
"""The elementwise parts of an iLLaMA-T block, each way of writing them timed against the others on THIS CPU.

    python benchmarks/elementwise_kernels.py            # ~2 min on one core -> outputs/benchmarks/
    python benchmarks/elementwise_kernels.py --update-results   # merges this CPU's rows into benchmarks/results/

One thread, iLLaMA-T's shapes at 224 px and batch 32 (tokens (32, 197, 192), SwiGLU width 512, 3 heads of 64),
fp32 and bf16, without gradients (RMSNorm, SwiGLU, rotary) and forward + backward (RMSNorm, SwiGLU). Every variant
is timed once per round, rounds interleave the variants (order rotated), the report gives the median time and
the median per-round ratio to the package's module, and the minor page faults of a call (fresh pages that
glibc's allocator maps for large temporaries: on a loaded VM they can cost more than the arithmetic).
Results are keyed by CPU model (with its AMX / AVX-512 bf16 flags): rows of other CPUs are kept.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from modeling_illama import load_preset  # noqa: E402
from modeling_illama.modeling_illama import (  # noqa: E402
    ILlamaMLP,
    ILlamaRMSNorm,
    apply_interleaved_rotary,
    rotary_angles,
)
from modeling_illama.utils.machine import cpu_model, merge_result  # noqa: E402

RESULTS = HERE / "results" / "elementwise_kernels.json"
SCRATCH = HERE.parent / "outputs" / "benchmarks" / "elementwise_kernels.json"
EPS = 1e-6


def cpu_flags() -> dict:
    try:
        flags = next(
            line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines() if "flags" in line
        )
    except (OSError, StopIteration):
        flags = []
    return {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags, "avx512f": "avx512f" in flags}


# ---------------------------------------------------------------------------------------------- variants
def rms_written(x, w):
    """Transformers' LlamaRMSNorm as written: five elementwise kernels, three full-size temporaries."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)
    return w * h.to(x.dtype)


def rms_functional(x, w):
    """torch.nn.functional.rms_norm with the weight (bf16: it rounds differently from the written form)."""
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def swiglu_packed(x, w_gate_up, w_down):
    """One (2 * 512, 192) projection, silu and product on its two halves (strided views)."""
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w_down)


def swiglu_written(x, w_gate, w_up, w_down):
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def rotary_real(states, cos, sin):
    """Real-valued interleaved rotation in the states' dtype (cos/sin cast once): even/odd views, 4 products, stack."""
    even, odd = states.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos.to(states.dtype), sin.to(states.dtype)
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def build_cases(dtype):
    """name -> {variant: callable}; the first variant of each case is the package's module."""
    generator = torch.Generator().manual_seed(0)
    config = load_preset("illama-tiny-224")
    tokens = torch.randn(32, 197, 192, generator=generator).to(dtype)
    norm = ILlamaRMSNorm(192).to(dtype)
    with torch.no_grad():
        norm.weight.mul_(1 + 0.1 * torch.randn(192, generator=generator).to(dtype))
    mlp = ILlamaMLP(config).to(dtype)
    w_gate, w_up, w_down = (p.detach() for p in (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight))
    w_gate_up = torch.cat((w_gate, w_up))
    qkv = torch.randn(32, 197, 3, 3, 64, generator=generator).to(dtype)
    key = qkv.permute(2, 0, 3, 1, 4)[1]  # the strided key view ILlamaAttention rotates
    cos, sin = rotary_angles(197, 64, 10000.0)
    weight = norm.weight.detach()

    def train(function):
        def step():
            x = tokens.detach().requires_grad_()
            function(x).float().sum().backward()

        return step

    return {
        "rmsnorm_infer": {
            "ILlamaRMSNorm": lambda: norm(tokens),
            "as written": lambda: rms_written(tokens, weight),
            "F.rms_norm": lambda: rms_functional(tokens, weight),
        },
        "swiglu_infer": {
            "ILlamaMLP (separate gate/up)": lambda: mlp(tokens),
            "as written": lambda: swiglu_written(tokens, w_gate, w_up, w_down),
            "packed gate_up": lambda: swiglu_packed(tokens, w_gate_up, w_down),
        },
        "rotary_infer": {
            "complex, fp32 (package)": lambda: apply_interleaved_rotary(key, cos, sin),
            "real, compute dtype": lambda: rotary_real(key, cos, sin),
        },
        "rmsnorm_train": {
            "ILlamaRMSNorm": train(norm),
            "as written": train(lambda x: rms_written(x, norm.weight)),
        },
        "swiglu_train": {
            "ILlamaMLP (separate gate/up)": train(mlp),
            "as written": train(lambda x: F.linear(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x), mlp.down_proj.weight)),
            "packed gate_up": train(
                lambda x: (lambda g, u: F.linear(F.silu(g) * u, mlp.down_proj.weight))(
                    *F.linear(x, torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))).chunk(2, dim=-1)
                )
            ),
        },
    }


def exactness(dtype) -> dict:
    """Max |difference| of each inference variant from the package's output (0.0 = bit-identical)."""
    out = {}
    with torch.inference_mode():
        for name, variants in build_cases(dtype).items():
            if name.endswith("_train"):
                continue
            results = {v: f() for v, f in variants.items()}
            reference = next(iter(results.values()))
            out[name] = {v: (r.float() - reference.float()).abs().max().item() for v, r in results.items()}
    return out


def measure(rounds: int) -> dict:
    rows = {}
    loads = []
    for dtype in (torch.float32, torch.bfloat16):
        precision = "fp32" if dtype == torch.float32 else "bf16"
        cases = build_cases(dtype)
        for name, variants in cases.items():
            seconds = {v: [] for v in variants}
            faults = {v: [] for v in variants}
            grad = name.endswith("_train")
            with torch.inference_mode(not grad):
                for function in variants.values():
                    function()  # warm-up
                order = list(variants)
                for index in range(rounds):
                    for variant in order[index % len(order) :] + order[: index % len(order)]:
                        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        start = time.perf_counter()
                        variants[variant]()
                        seconds[variant].append(time.perf_counter() - start)
                        faults[variant].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            loads.append(os.getloadavg()[0])
            package = next(iter(variants))
            rows[f"{name}_{precision}"] = {
                variant: {
                    "ms_median": 1e3 * statistics.median(s),
                    "ratio_to_package_median": statistics.median(t / p for t, p in zip(s, seconds[package])),
                    "minor_page_faults_median": statistics.median(faults[variant]),
                }
                for variant, s in seconds.items()
            }
            print(
                f"  {name} {precision}: "
                + ", ".join(f"{v} {r['ms_median']:.2f} ms" for v, r in rows[f"{name}_{precision}"].items()),
                flush=True,
            )
    return {"rows": rows, "load_average_per_case": loads}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE.parent).stdout
    return done.stdout.strip() + ("+dirty" if dirty.strip() else "")


def markdown(results: dict) -> str:
    lines = []
    for cpu, entry in results.items():
        flags = entry["cpu_flags"]
        loads = entry["load_average_per_case"]
        lines += [
            f"### {cpu} (AMX bf16: {flags['amx_bf16']}, AVX-512 bf16: {flags['avx512_bf16']})",
            "",
            f"{entry['date']}, commit {entry['commit']}, torch {entry['torch']}, 1 thread, {entry['rounds']} rounds; "
            f"load average {min(loads):.1f}-{max(loads):.1f}.",
            "",
            "| case | variant | ms (median) | x package (median of ratios) | minor faults | max abs diff |",
            "|---|---|---|---|---|---|",
        ]
        for case, variants in entry["rows"].items():
            base, precision = case.rsplit("_", 1)
            diffs = entry["max_abs_diff"].get(precision, {}).get(base, {})
            for variant, row in variants.items():
                diff = diffs.get(variant)
                lines.append(
                    f"| {case} | {variant} | {row['ms_median']:.2f} | {row['ratio_to_package_median']:.2f} | "
                    f"{row['minor_page_faults_median']:.0f} | {'-' if diff is None else f'{diff:.3g}'} |"
                )
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per variant")
    parser.add_argument("--update-results", action="store_true", help="merge into benchmarks/results/")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    path = RESULTS if args.update_results else SCRATCH
    entry = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "torch": torch.__version__,
        "cpu_flags": cpu_flags(),
        "rounds": args.rounds,
        "max_abs_diff": {"fp32": exactness(torch.float32), "bf16": exactness(torch.bfloat16)},
    }
    entry.update(measure(args.rounds))
    results = merge_result(path, cpu_model(), entry)
    path.with_suffix(".md").write_text(markdown(results))
    print(markdown({cpu_model(): entry}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
