#!/usr/bin/env python
"""iLLaMA-T with the package's RMSNorm / SwiGLU modules against the same model with their plain autograd forward
(Transformers' written RMSNorm, down(silu(gate x) * up x)), in one process, interleaved rounds.

    python benchmarks/elementwise_ab_model.py 7     # rounds; prints one JSON line at the end

Batch 32, 224 px, 1 thread: bf16 inference (model.to(bfloat16)), fp32 training step, bf16 autocast training
step (AdamW). The ratio is old time / new time, median over rounds (> 1: the package's modules are faster).
"""

import copy
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from modeling_illama import ILlamaForImageClassification, load_preset  # noqa: E402
from modeling_illama.modeling_illama import ILlamaMLP, ILlamaRMSNorm  # noqa: E402

torch.set_num_threads(1)


def old_rms(self, x):
    dt = x.dtype
    h = x.to(torch.float32)
    v = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(v + self.variance_epsilon)
    return self.weight * h.to(dt)


def old_mlp(self, x):
    return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


torch.manual_seed(0)
config = load_preset("illama-tiny-224")
config._attn_implementation = "sdpa"
new = ILlamaForImageClassification(config)
old = copy.deepcopy(new)
for m in old.modules():
    if isinstance(m, ILlamaRMSNorm):
        m.forward = types.MethodType(old_rms, m)
    if isinstance(m, ILlamaMLP):
        m.forward = types.MethodType(old_mlp, m)
x = torch.randn(32, 3, 224, 224)
y = torch.randint(0, 1000, (32,))
opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in (("new", new), ("old", old))}
bf = {"new": copy.deepcopy(new).to(torch.bfloat16).eval(), "old": copy.deepcopy(old).to(torch.bfloat16).eval()}


def run(kind, case):
    if case == "infer_bf16":
        with torch.inference_mode():
            bf[kind](x.to(torch.bfloat16))
        return
    m = new if kind == "new" else old
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "train_bf16"):
        loss = F.cross_entropy(m(x).logits, y)
    loss.backward()
    opts[kind].step()
    opts[kind].zero_grad(set_to_none=True)


cases = ("infer_bf16", "train_fp32", "train_bf16")
for c in cases:
    for k in ("new", "old"):
        run(k, c)
secs = {c: {"new": [], "old": []} for c in cases}
loads = []
for r in range(int(sys.argv[1])):
    for c in cases:
        for k in ("new", "old") if r % 2 == 0 else ("old", "new"):
            t = time.perf_counter()
            run(k, c)
            secs[c][k].append(time.perf_counter() - t)
    loads.append(os.getloadavg()[0])
    print(
        "round",
        r + 1,
        f"load {loads[-1]:.1f}",
        {c: "old/new %.2f" % (secs[c]["old"][-1] / secs[c]["new"][-1]) for c in cases},
        flush=True,
    )
out = {
    c: {
        "speedup_median_of_ratios(old_time/new_time)": statistics.median(o / n for o, n in zip(v["old"], v["new"])),
        "new_s": v["new"],
        "old_s": v["old"],
    }
    for c, v in secs.items()
}
out["load_per_round"] = loads
print(json.dumps(out))
